"""Readers and converters on tiny files written in each benchmark's ORIGINAL format."""

from __future__ import annotations

import dataclasses
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cocu.config import ProtocolCard
from cocu.data import converters as cv
from cocu.data.converters import shipped_class_names
from cocu.data.readers import BenchmarkNotFoundError, open_benchmark
from cocu.eval.overlay import palette
from cocu.eval.protocol import OFFICIAL_CARDS, SYNTHETIC_CARDS


def _rgb(h: int = 6, w: int = 8, path: Path | None = None, fmt: str | None = None) -> np.ndarray:
    image = np.random.default_rng(h * w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format=fmt)
    return image


def _png(path: Path, array: np.ndarray, pal: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array.astype(np.uint8))
    if pal:  # a VOC-style palette PNG: the pixel values are indices into the VOC colour map
        im = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        im.putpalette(palette(256).ravel().tolist())
    else:
        im = Image.fromarray(array)
    im.save(path)


def _only(bench):
    items = list(bench)
    assert len(items) == len(bench)
    return items


# --------------------------------------------------------------------------------------------
# PASCAL VOC


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    raw = np.array([[0, 0, 1, 1], [15, 15, 255, 20], [0, 1, 15, 20]])
    for i in ("2007_000032", "2007_000039"):
        _rgb(3, 4, voc / "JPEGImages" / f"{i}.jpg")
        _png(voc / "SegmentationClass" / f"{i}.png", raw, pal=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000039\n2007_000032\n")
    return tmp_path


def test_voc_palette_png_reads_indices(voc_root):
    assert Image.open(voc_root / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png").mode == "P"
    bench = open_benchmark(OFFICIAL_CARDS["voc"], voc_root)
    assert len(bench) == 2 and bench.num_classes == 21
    assert bench.class_names[:2] == ["background", "aeroplane"]
    (first, image, label), _ = _only(bench)
    assert first == "2007_000032" and image.shape == (3, 4, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, [[0, 0, 1, 1], [15, 15, 255, 20], [0, 1, 15, 20]])


def test_voc20_moves_background_to_ignore(voc_root):
    bench = open_benchmark(OFFICIAL_CARDS["voc20"], voc_root)
    assert bench.num_classes == 20 and bench.prompt_names == bench.class_names
    label = _only(bench)[0][2]
    np.testing.assert_array_equal(label, [[255, 255, 0, 0], [14, 14, 255, 19], [255, 0, 14, 19]])


def test_num_images_limits_in_id_order(voc_root):
    bench = open_benchmark(dataclasses.replace(OFFICIAL_CARDS["voc"], num_images=1), voc_root)
    assert [i for i, _, _ in bench] == ["2007_000032"]


def test_voc_rejects_rgb_labels(voc_root):
    path = voc_root / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png"
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="palette"):
        _only(open_benchmark(OFFICIAL_CARDS["voc"], voc_root))


# --------------------------------------------------------------------------------------------
# PASCAL Context: .mat labels of the release -> converter -> readers


def _context_release(tmp_path: Path, labels_txt: str | None) -> tuple[Path, Path]:
    from scipy.io import savemat

    voc = tmp_path / "VOCdevkit" / "VOC2010"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2008_000002\n2008_000003\n")
    mats = tmp_path / "context_release" / "trainval"
    mats.mkdir(parents=True)
    # 459-class ids: 2 aeroplane -> 1, 458 wood -> 59, 1 accordion (not among the 59) and 0 -> background
    label = np.array([[2, 2, 1], [458, 0, 284]], dtype=np.uint16)
    for i in ("2008_000002", "2008_000003", "2008_000004"):  # the last is not in the val split
        _rgb(2, 3, voc / "JPEGImages" / f"{i}.jpg")
        savemat(mats / f"{i}.mat", {"LabelMap": label})
    if labels_txt is not None:
        (mats.parent / "labels.txt").write_text(labels_txt)
    return mats.parent, voc


def _labels_txt(names: dict[int, str]) -> str:
    return "".join(f"{i}: {n}\n" for i, n in sorted(names.items()))


def test_context_converter_and_readers(tmp_path):
    table = {i: f"thing{i}" for i in range(1, 460)}
    table.update(dict(zip(cv.CONTEXT_59_IDS, shipped_class_names("context59"))))
    release, voc = _context_release(tmp_path, _labels_txt(table))
    tar = tmp_path / "trainval.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(release, arcname=".")
    assert cv.convert_context(tar, voc) == 2
    listed = (voc / "ImageSets/SegmentationContext/val.txt").read_text().split()
    assert listed == ["2008_000002", "2008_000003"]
    assert not (voc / "SegmentationClassContext" / "2008_000004.png").exists()
    bench = open_benchmark(OFFICIAL_CARDS["context"], tmp_path)
    assert bench.num_classes == 60 and bench.class_names[-1] == "wood"
    person = 1 + shipped_class_names("context59").index("person")
    np.testing.assert_array_equal(_only(bench)[0][2], [[1, 1, 0], [59, 0, person]])
    bench59 = open_benchmark(OFFICIAL_CARDS["context59"], tmp_path)
    np.testing.assert_array_equal(_only(bench59)[0][2], [[0, 0, 255], [58, 255, person - 1]])
    assert cv.convert_context(release, voc) == 2  # the extracted folder works too


def test_context_converter_checks_the_id_table(tmp_path):
    release, voc = _context_release(tmp_path, _labels_txt({2: "accordion", 9: "bag"}))
    with pytest.raises(ValueError, match="labels.txt disagrees"):
        cv.convert_context(release, voc)
    assert cv.convert_context(release, voc, check_names=False) == 2


def test_context_without_conversion_says_how(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2010" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(BenchmarkNotFoundError, match="converters context"):
        open_benchmark(OFFICIAL_CARDS["context"], tmp_path)


# --------------------------------------------------------------------------------------------
# COCO-Stuff 164k and COCO-Object


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    folder = tmp_path / "coco_stuff164k"
    _rgb(2, 4, folder / "images" / "val2017" / "000000000139.jpg")
    # stuffthingmaps values are category id - 1: person(1), bicycle(2), stop sign(13), banner(92),
    # wood(182), unlabelled
    raw = np.array([[0, 1, 12, 91], [181, 255, 0, 0]])
    _png(folder / "annotations" / "val2017" / "000000000139.png", raw)
    _png(folder / "annotations" / "val2017" / "000000000139_labelTrainIds.png", np.zeros((2, 4)))  # ignored
    return tmp_path


def test_coco_stuff_maps_182_ids_to_171(coco_root):
    bench = open_benchmark(OFFICIAL_CARDS["coco_stuff"], coco_root)
    assert len(bench) == 1 and bench.num_classes == 171
    label = _only(bench)[0][2]
    np.testing.assert_array_equal(label, [[0, 1, 11, 80], [170, 255, 0, 0]])
    names = [bench.class_names[k] for k in (0, 1, 11, 80, 170)]
    assert names == ["person", "bicycle", "stop sign", "banner", "wood"]


def test_coco_object_things_to_1_80_and_the_rest_to_background(coco_root):
    bench = open_benchmark(OFFICIAL_CARDS["coco_object"], coco_root)
    assert bench.num_classes == 81
    np.testing.assert_array_equal(_only(bench)[0][2], [[1, 2, 12, 0], [0, 0, 1, 1]])
    assert bench.class_names[12] == "stop sign"


def test_coco_unused_thing_id_is_an_error(coco_root):
    path = coco_root / "coco_stuff164k/annotations/val2017/000000000139.png"
    _png(path, np.array([[11, 0], [0, 0]]))  # value 11 = id 12 "street sign", unused in COCO
    with pytest.raises(ValueError, match=r"unexpected raw label values \[11\]"):
        _only(open_benchmark(OFFICIAL_CARDS["coco_stuff"], coco_root))


# --------------------------------------------------------------------------------------------
# ADE20K, Cityscapes, ImageNet-S


def test_ade20k_other_to_ignore_and_shift(tmp_path):
    folder = tmp_path / "ADEChallengeData2016"
    _rgb(2, 2, folder / "images" / "validation" / "ADE_val_00000001.jpg")
    _png(folder / "annotations" / "validation" / "ADE_val_00000001.png", np.array([[0, 1], [150, 13]]))
    bench = open_benchmark(OFFICIAL_CARDS["ade20k"], tmp_path)
    assert bench.num_classes == 150
    np.testing.assert_array_equal(_only(bench)[0][2], [[255, 0], [149, 12]])


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    folder = tmp_path / "cityscapes"
    stem = "frankfurt_000000_000294"
    _rgb(2, 3, folder / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png")
    gt = folder / "gtFine" / "val" / "frankfurt"
    _png(gt / f"{stem}_gtFine_labelIds.png", np.array([[0, 7, 26], [33, 9, 24]]))
    _png(gt / f"{stem}_gtFine_instanceIds.png", np.zeros((2, 3)))  # not a label file
    bench = open_benchmark(OFFICIAL_CARDS["cityscapes"], tmp_path)
    (image_id, image, label), = _only(bench)
    assert image_id == f"frankfurt/{stem}" and image.shape == (2, 3, 3)
    np.testing.assert_array_equal(label, [[255, 0, 13], [18, 255, 11]])
    assert bench.class_names[13] == "car" and bench.num_classes == 19


def _imagenet_s(tmp_path: Path, name: str, ids: np.ndarray) -> None:
    folder = tmp_path / name
    _rgb(2, 2, folder / "validation" / "n01443537" / "ILSVRC2012_val_00000001.JPEG", fmt="JPEG")
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1)  # id = R + 256 G
    _png(folder / "validation-segmentation" / "n01443537" / "ILSVRC2012_val_00000001.png", rgb)


def test_imagenet_s_rgb_encoded_ids(tmp_path):
    _imagenet_s(tmp_path, "ImageNetS50", np.array([[0, 1], [50, 1000]]))
    bench = open_benchmark(OFFICIAL_CARDS["imagenet_s50"], tmp_path)
    assert bench.num_classes == 51 and bench.class_names[1] == "goldfish"
    (image_id, _, label), = _only(bench)
    assert image_id == "n01443537/ILSVRC2012_val_00000001" and label.dtype == np.uint8
    np.testing.assert_array_equal(label, [[0, 1], [50, 255]])


def test_imagenet_s300_keeps_ignore_1000_in_uint16(tmp_path):
    _imagenet_s(tmp_path, "ImageNetS300", np.array([[0, 300], [257, 1000]]))
    bench = open_benchmark(OFFICIAL_CARDS["imagenet_s300"], tmp_path)
    label = _only(bench)[0][2]
    assert bench.num_classes == 301 and label.dtype == np.uint16
    np.testing.assert_array_equal(label, [[0, 300], [257, 1000]])


def test_imagenet_s_id_beyond_subset_is_an_error(tmp_path):
    _imagenet_s(tmp_path, "ImageNetS50", np.array([[0, 51], [1, 1]]))
    with pytest.raises(ValueError, match=r"\[51\]"):
        _only(open_benchmark(OFFICIAL_CARDS["imagenet_s50"], tmp_path))


# --------------------------------------------------------------------------------------------
# synthetic layout, class names, missing folders


def _synthetic(tmp_path: Path, names: list[str]) -> None:
    folder = tmp_path / "synth_things"
    _rgb(4, 4, folder / "images" / "00000.png")
    _png(folder / "labels" / "00000.png", np.array([[0, 1, 2, 255]] * 4))
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")


def test_synthetic_layout(tmp_path):
    _synthetic(tmp_path, ["background", "red circle", "blue square"])
    bench = open_benchmark(SYNTHETIC_CARDS["synth_things"], tmp_path)
    assert bench.class_names == ["background", "red circle", "blue square"]
    assert bench.prompt_names == ["red circle", "blue square"]
    (image_id, image, label), = _only(bench)
    assert image_id == "00000" and image.shape == (4, 4, 3)
    np.testing.assert_array_equal(label[0], [0, 1, 2, 255])


def test_foreground_only_names_get_a_background(tmp_path):
    _synthetic(tmp_path, ["red circle", "blue square"])
    assert open_benchmark(SYNTHETIC_CARDS["synth_things"], tmp_path).class_names[0] == "background"


def test_background_name_without_background_card_is_an_error(tmp_path):
    _synthetic(tmp_path, ["background", "red circle"])
    card = dataclasses.replace(SYNTHETIC_CARDS["synth_all"], root="synth_things")
    with pytest.raises(ValueError, match="no background"):
        open_benchmark(card, tmp_path)


def test_shipped_class_name_lists():
    counts = {"voc": 20, "context59": 59, "coco_object": 80, "coco_stuff": 171, "ade20k": 150,
              "cityscapes": 19, "imagenet_s50": 50, "imagenet_s300": 300}
    for name, n in counts.items():
        names = shipped_class_names(name)
        assert len(names) == n == len(set(names)), name
    assert shipped_class_names("coco_stuff")[:80] == shipped_class_names("coco_object")
    assert set(shipped_class_names("imagenet_s50")) <= set(shipped_class_names("imagenet_s300"))
    with pytest.raises(FileNotFoundError, match="shipped"):
        shipped_class_names("nope")


def test_missing_benchmark_folder_names_path_and_preparation(tmp_path):
    with pytest.raises(BenchmarkNotFoundError) as err:
        open_benchmark(OFFICIAL_CARDS["ade20k"], tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert str(tmp_path / "ADEChallengeData2016") in message and "ADEChallengeData2016.zip" in message
    with pytest.raises(BenchmarkNotFoundError, match="benchmarks"):
        open_benchmark(SYNTHETIC_CARDS["synth_stuff"], tmp_path)


def test_missing_image_is_an_error(voc_root):
    (voc_root / "VOCdevkit/VOC2012/JPEGImages/2007_000039.jpg").unlink()
    with pytest.raises(BenchmarkNotFoundError, match="2007_000039.jpg"):
        open_benchmark(OFFICIAL_CARDS["voc"], voc_root)


def test_root_from_environment(voc_root, monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(voc_root))
    assert len(open_benchmark(OFFICIAL_CARDS["voc"])) == 2
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "elsewhere"))
    with pytest.raises(BenchmarkNotFoundError, match="elsewhere"):
        open_benchmark(OFFICIAL_CARDS["voc"])


def test_explicit_class_names_path(tmp_path):
    _synthetic(tmp_path, ["background", "a", "b"])
    names = tmp_path / "my_names.txt"
    names.write_text("# my list\nx\ny\n")
    card = dataclasses.replace(SYNTHETIC_CARDS["synth_things"], class_names=str(names))
    assert open_benchmark(card, tmp_path).class_names == ["background", "x", "y"]
    with pytest.raises(FileNotFoundError, match="not found"):
        open_benchmark(dataclasses.replace(card, class_names=str(tmp_path / "none.txt")), tmp_path)


# --------------------------------------------------------------------------------------------
# converters


def test_convert_labels_writes_mapped_pngs(coco_root, tmp_path):
    src = coco_root / "coco_stuff164k" / "annotations"
    assert cv.convert_labels("coco_stuff", src, tmp_path / "out") == 1  # the *TrainIds.png file is skipped
    out = np.array(Image.open(tmp_path / "out" / "val2017" / "000000000139.png"))
    np.testing.assert_array_equal(out, [[0, 1, 11, 80], [170, 255, 0, 0]])


def test_extract_archive_zip_and_tar(tmp_path):
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ADEChallengeData2016/images/validation/x.txt", "hi")
    assert cv.extract_archive(zpath, tmp_path / "d") == 1
    assert (tmp_path / "d/ADEChallengeData2016/images/validation/x.txt").read_text() == "hi"
    tpath = tmp_path / "a.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        _add(tf, "VOCdevkit/VOC2012/a.txt", b"ok")
    cv.extract_archive(tpath, tmp_path / "t")
    assert (tmp_path / "t/VOCdevkit/VOC2012/a.txt").read_bytes() == b"ok"


def _add(tf: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, link
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil_abs.txt", "ok/../../evil.txt"])
def test_extract_refuses_members_outside_target(tmp_path, member):
    tpath = tmp_path / "bad.tar"
    with tarfile.open(tpath, "w") as tf:
        _add(tf, "fine.txt", b"1")
        _add(tf, member, b"x")
    with pytest.raises(cv.UnsafeArchiveError):
        cv.extract_archive(tpath, tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest" / "fine.txt").exists()
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(member, "x")
    with pytest.raises(cv.UnsafeArchiveError):
        cv.extract_archive(zpath, tmp_path / "dest2")


def test_extract_refuses_links(tmp_path):
    tpath = tmp_path / "link.tar"
    with tarfile.open(tpath, "w") as tf:
        _add(tf, "inside", b"", kind=tarfile.SYMTYPE, link="/etc/passwd")
    with pytest.raises(cv.UnsafeArchiveError, match="link"):
        cv.extract_archive(tpath, tmp_path / "dest")


def test_card_reader_names_have_layouts():
    from cocu.data.readers import LAYOUTS
    import typing
    from cocu.config import ReaderName

    assert set(typing.get_args(ReaderName)) == set(LAYOUTS)
    assert isinstance(OFFICIAL_CARDS["voc"], ProtocolCard)


def test_converter_command_line(coco_root, tmp_path):
    src = coco_root / "coco_stuff164k" / "annotations"
    cv.main(["labels", "coco_object", str(src), str(tmp_path / "objects")])
    out = np.array(Image.open(tmp_path / "objects" / "val2017" / "000000000139.png"))
    np.testing.assert_array_equal(out, [[1, 2, 12, 0], [0, 0, 1, 1]])
    with pytest.raises(SystemExit):
        cv.main(["labels", "no_such_kind", str(src), str(tmp_path / "x")])
