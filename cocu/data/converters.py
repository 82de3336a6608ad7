"""The benchmarks' label spaces (raw values -> label ids, the shipped class-name lists), safe archive
extraction, and the Context converter.

The readers decode the original label files on the fly with the pure maps below, so only PASCAL
Context needs a conversion step (its labels ship as MATLAB files). `convert_labels` still writes
converted PNGs (the detectron2 `annotations_detectron2`-style folders) for use with other tools.

    python -m cocu.data.converters extract ARCHIVE DEST          # never writes outside DEST
    python -m cocu.data.converters context --mats trainval.tar.gz \
        --voc2010 $DETECTRON2_DATASETS/VOCdevkit/VOC2010
    python -m cocu.data.converters labels KIND SRC_DIR DST_DIR    # KIND: see LABEL_MAPS
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)
IGNORE = 255
CLASSNAMES_DIR = Path(__file__).parent / "classnames"  # shipped class-name lists, one per label space


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target folder, or is a link or device."""


def apply_lut(raw: np.ndarray, lut: np.ndarray, what: str) -> np.ndarray:
    """lut[raw]; entries < 0 mark raw values that must not occur (an error naming them)."""
    raw = np.asarray(raw)
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        bad = np.unique(raw[(raw < 0) | (raw >= len(lut))])[:10].tolist()
        raise ValueError(f"{what}: raw label values outside [0, {len(lut)}): {bad}")
    out = lut[raw]
    if (out < 0).any():
        raise ValueError(f"{what}: unexpected raw label values {np.unique(raw[out < 0])[:10].tolist()}")
    return out.astype(np.uint8 if lut.max() <= 255 else np.uint16)


def shipped_class_names(name: str) -> list[str]:
    """Names in cocu/data/classnames/<name>.txt (one name per label id, label-id order)."""
    path = CLASSNAMES_DIR / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in CLASSNAMES_DIR.glob("*.txt"))
        raise FileNotFoundError(f"no shipped class-names list {name!r} (shipped: {known}); "
                                "give a file path instead")
    return read_class_names(path)


def read_class_names(path: Path) -> list[str]:
    """One name per line; blank and `#` lines skipped."""
    lines = (line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _lut(size: int, mapping: dict[int, int], default: int = -1) -> np.ndarray:
    lut = np.full(size, default, dtype=np.int32)
    for k, v in mapping.items():
        lut[k] = v
    return lut


# PASCAL VOC: palette PNGs, 0 = background, 1..20 classes, 255 = void (object borders)
VOC_LUT = _lut(256, {**{k: k for k in range(21)}, IGNORE: IGNORE})
VOC20_LUT = _lut(256, {0: IGNORE, **{k: k - 1 for k in range(1, 21)}, IGNORE: IGNORE})

# PASCAL Context: the 59 classes' ids in the 459-class label space (labels.txt of the release), the
# 60-entry table of mmseg's converter minus its 0; any other id, and 0 (unlabelled), is background.
CONTEXT_59_IDS = (2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105,
                  113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
                  324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454,
                  458)
CONTEXT_LUT = _lut(460, {k: i + 1 for i, k in enumerate(CONTEXT_59_IDS)}, default=0)
CONTEXT60_LUT = _lut(256, {k: k for k in range(60)})
CONTEXT59_LUT = _lut(256, {0: IGNORE, **{k: k - 1 for k in range(1, 60)}, IGNORE: IGNORE})

# COCO-Stuff 164k stuffthingmaps: value = category id - 1 (ids 1..182), 255 = unlabelled. The 80
# thing ids lie in 1..90 (11 ids unused), the 91 stuff ids are 92..182.
COCO_THING_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
COCO_STUFF_IDS = tuple(range(92, 183))
COCO_STUFF_LUT = _lut(256, {**{k - 1: i for i, k in enumerate(COCO_THING_IDS + COCO_STUFF_IDS)},
                            IGNORE: IGNORE})
# COCO-Object (GroupViT): things -> 1..80, stuff AND unlabelled -> 0 background (docs/protocol.md §5)
COCO_OBJECT_LUT = _lut(256, {**{k - 1: 0 for k in COCO_STUFF_IDS},
                             **{k - 1: i + 1 for i, k in enumerate(COCO_THING_IDS)}, IGNORE: 0})

# ADE20K SceneParsing: 0 = "other" -> ignore, 1..150 -> 0..149
ADE_LUT = _lut(256, {0: IGNORE, **{k: k - 1 for k in range(1, 151)}})

# Cityscapes labelIds -> the 19 trainIds (cityscapesScripts' labels.py); everything else ignored
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_LUT = _lut(256, CITYSCAPES_TRAIN_IDS, default=IGNORE)

SYNTHETIC_LUT = _lut(256, {k: k for k in range(256)})


def imagenet_s_decode(rgb: np.ndarray, num_foreground: int, ignore_index: int,
                      what: str = "ImageNet-S") -> np.ndarray:
    """ImageNet-S RGB label PNG [H, W, 3] -> ids: id = R + 256 G; 0 = background ('others'),
    1..num_foreground classes, 1000 = ignore -> `ignore_index` (uint8 if everything fits)."""
    ids = rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)  # [H, W]
    bad = (ids > num_foreground) & (ids != 1000)
    if bad.any():
        values = np.unique(ids[bad])[:10].tolist()
        raise ValueError(f"{what}: label ids {values} outside 0..{num_foreground} and 1000")
    ids[ids == 1000] = ignore_index
    return ids.astype(np.uint8 if max(num_foreground, ignore_index) <= 255 else np.uint16)


def read_index_png(path: Path) -> np.ndarray:
    """Label ids of a palette ('P'), grey ('L') or 16-bit PNG; the palette itself is ignored."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I;16", "I"):
            raise ValueError(f"{path}: expected a palette or single-channel label PNG, got mode {im.mode}")
        return np.array(im)


LABEL_MAPS: dict[str, np.ndarray] = {
    "voc": VOC_LUT, "voc20": VOC20_LUT, "context": CONTEXT60_LUT, "context59": CONTEXT59_LUT,
    "coco_stuff": COCO_STUFF_LUT, "coco_object": COCO_OBJECT_LUT, "ade20k": ADE_LUT,
    "cityscapes": CITYSCAPES_LUT, "synthetic": SYNTHETIC_LUT,
}


# --------------------------------------------------------------------------------------------
# archives


def _check_member(dest: Path, name: str) -> Path:
    target = (dest / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(dest):
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {dest}")
    return target


def extract_archive(archive: Path | str, dest: Path | str) -> int:
    """Extract a .zip or .tar(.gz) into `dest` after checking every member; returns the member count.

    Absolute paths, `..` escapes, links and device files are refused before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member(dest, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link")
            zf.extractall(dest)
            return len(infos)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _check_member(dest, m.name)
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a link or special file")
            tf.extractall(dest, members=members, filter="data")  # the stdlib filter as a second guard
            return len(members)
    raise ValueError(f"{archive}: not a zip or tar archive")


# --------------------------------------------------------------------------------------------
# writers


def convert_labels(kind: str, src: Path | str, dst: Path | str, pattern: str = "**/*.png") -> int:
    """Write `LABEL_MAPS[kind]` applied to every label PNG under `src` into `dst` (same relative paths)."""
    if kind not in LABEL_MAPS:
        raise KeyError(f"unknown label map {kind!r} (known: {sorted(LABEL_MAPS)})")
    src, dst = Path(src), Path(dst)
    files = sorted(p for p in src.glob(pattern) if not p.name.endswith("TrainIds.png"))
    if not files:
        raise FileNotFoundError(f"no label files matching {pattern!r} under {src}")
    for path in files:
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(apply_lut(read_index_png(path), LABEL_MAPS[kind], str(path))).save(out)
    return len(files)


def _context_files(mats: Path, keep: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) of the files whose name `keep` accepts, from a folder or a tar(.gz);
    nothing is extracted to disk."""
    if mats.is_dir():
        for p in sorted(mats.rglob("*")):
            if p.is_file() and keep(p.name):
                yield p.name, p.read_bytes()
        return
    with tarfile.open(mats) as tf:
        for m in tf:
            name = Path(m.name).name
            if m.isfile() and keep(name):
                yield name, tf.extractfile(m).read()  # type: ignore[union-attr]


def _check_context_names(text: str, names: Sequence[str]) -> None:
    table = {int(m[1]): m[2].strip().lower() for m in re.finditer(r"^\s*(\d+)\s*:\s*(.+?)\s*$", text, re.M)}
    wrong = [(i, table.get(i), n) for i, n in zip(CONTEXT_59_IDS, names)
             if table.get(i, "").replace(" ", "") != n]
    if wrong:
        raise ValueError("PASCAL Context labels.txt disagrees with the 59-class id table "
                         f"(id, labels.txt, expected): {wrong[:5]}; pass check_names=False to convert anyway")


def convert_context(mats: Path | str, voc2010: Path | str, split: Optional[Path | str] = None,
                    check_names: bool = True) -> int:
    """PASCAL Context (`trainval.tar.gz` of the release: per-image .mat `LabelMap`, 459-class ids)
    -> `voc2010/SegmentationClassContext/<id>.png` (0 = background, 1..59) and the list
    `voc2010/ImageSets/SegmentationContext/val.txt`. Returns the number of images written.

    The split is VOC2010's `ImageSets/Main/val.txt` (5,105 images), unless `split` names another
    list. This replaces mmseg's Detail-API converter (pycocotools + detail-api, not installed).
    """
    from scipy.io import loadmat

    mats, voc2010 = Path(mats), Path(voc2010)
    split_file = Path(split) if split else voc2010 / "ImageSets" / "Main" / "val.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: VOC2010 split list not found "
                                "(extract VOCtrainval_03-May-2010.tar first)")
    wanted = set(split_file.read_text().split())
    if check_names:
        found = [data for _, data in _context_files(mats, lambda n: n == "labels.txt")]
        if found:
            _check_context_names(found[0].decode("utf-8", "replace"), shipped_class_names("context59"))
        else:
            log.warning("%s: no labels.txt found; the 59-class id table was not checked against it", mats)
    out_dir = voc2010 / "SegmentationClassContext"
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for name, data in _context_files(mats, lambda n: n.endswith(".mat") and n[:-4] in wanted):
        label = loadmat(io.BytesIO(data))["LabelMap"]  # [H, W] 459-class ids
        ids = apply_lut(label.astype(np.int64), CONTEXT_LUT, name)  # [H, W] 0..59
        Image.fromarray(ids).save(out_dir / f"{name[:-4]}.png")
        done.append(name[:-4])
    if not done:
        raise FileNotFoundError(f"{mats}: no .mat label file of the {len(wanted)} ids in {split_file}")
    if len(done) < len(wanted):
        log.warning("PASCAL Context: %d of %d split images have no .mat label file",
                    len(wanted) - len(done), len(wanted))
    list_file = voc2010 / "ImageSets" / "SegmentationContext" / "val.txt"
    list_file.parent.mkdir(parents=True, exist_ok=True)
    list_file.write_text("\n".join(sorted(done)) + "\n")
    return len(done)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cocu.data.converters",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extract", help="extract a benchmark archive safely")
    p.add_argument("archive")
    p.add_argument("dest")
    p = sub.add_parser("context", help="PASCAL Context .mat labels -> 60-class PNGs")
    p.add_argument("--mats", required=True, help="trainval.tar.gz of PASCAL Context, or its extracted folder")
    p.add_argument("--voc2010", required=True, help="the VOCdevkit/VOC2010 folder")
    p.add_argument("--split", default=None)
    p.add_argument("--no-check-names", action="store_true")
    p = sub.add_parser("labels", help="write converted label PNGs")
    p.add_argument("kind", choices=sorted(LABEL_MAPS))
    p.add_argument("src")
    p.add_argument("dst")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "extract":
        n = extract_archive(args.archive, args.dest)
    elif args.cmd == "context":
        n = convert_context(args.mats, args.voc2010, args.split, check_names=not args.no_check_names)
    else:
        n = convert_labels(args.kind, args.src, args.dst)
    log.info("%s: %d files", args.cmd, n)


if __name__ == "__main__":
    main()
