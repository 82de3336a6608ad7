"""The rehearsal's data: the paper profile's inputs in their real on-disk formats, small and fake.

    python -m cocu.rehearsal ../cocu-rehearsal                     # about 3k pairs (a few minutes)
    python -m cocu.rehearsal ../cocu-rehearsal --pairs-per-source 16 --per-shard 8   # CI size

writes into an empty folder OUTSIDE the repo (the `rehearsal` profile reads `../cocu-rehearsal`):

- `cc3m/`, `cc12m/`, `yfcc14m/`: img2dataset output, each numbered from `00000.tar` with keys from
  `000000000` (so shard names and keys collide across the three, as they do for the real sets):
  `<shard>.tar` holding `<key>.jpg`, `<key>.txt` and `<key>.json`, and beside it `<shard>.parquet`
  (one row per attempted sample, failed downloads included) and `<shard>_stats.json`. Images and
  captions come from the synthetic world (a different stream per source);
- `clip/ViT-B-16.pt`: a CLIP ViT-B/16 in OpenAI's release format (a TorchScript archive with
  QuickGELU activations, OpenAI's `input_resolution`/`context_length`/`vocab_size` tensors and fp16
  weights), with random weights: `clip.arch` must be `ViT-B-16-quickgelu` for it;
- `vocabulary/gallery.json`: a concept list in the official code's format (`{"concept": [...]}`),
  which `python -m cocu.concepts.official` converts, as for the real list;
- `benchmarks/`: the eight benchmarks in their real layouts (DETECTRON2_DATASETS): VOCdevkit/VOC2012,
  VOCdevkit/VOC2010 with PASCAL Context converted from a fabricated release archive by the repo's
  converter (the documented preparation step), coco_stuff164k (COCO-Object and COCO-Stuff),
  cityscapes, ADEChallengeData2016, ImageNetS50 and ImageNetS300, a few fabricated images each;
- `downloads/`: the fabricated PASCAL Context release archive the converter read.

`listing(root)` is the full listing (path, kind, size, mtime, mode, sha256) that the rehearsal test
compares before and after the pipeline ran, to show nothing under the folder was written.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

SOURCES = ("cc3m", "cc12m", "yfcc14m")
CLIP_ARCH = "ViT-B-16-quickgelu"  # OpenAI's ViT-B/16 as open_clip builds it
SHARD_DIGITS, SAMPLE_DIGITS = 5, 4  # img2dataset's key = shard id (5 digits) + index in shard (4 digits)


# --------------------------------------------------------------------------------------------
# CLIP weights files in the formats of cocu/clip/model.py


def _open_clip_model(arch: str, seed: int):
    import logging

    import open_clip
    import torch

    torch.manual_seed(seed)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "initialized randomly" is the point here
    try:
        return open_clip.create_model(arch, load_weights=False).eval()
    finally:
        logging.getLogger().setLevel(level)


def openai_layout(model: Any) -> Any:
    """An open_clip CLIP with OpenAI's module layout: the same submodule names (visual, transformer,
    token_embedding, ...) plus OpenAI's `input_resolution`, `context_length`, `vocab_size` tensors;
    forward(image, text) -> (image features, text features), as OpenAI's traced models."""
    import torch

    class CLIP(torch.nn.Module):
        def __init__(self, oc: Any) -> None:
            super().__init__()
            self.visual, self.transformer, self.token_embedding = oc.visual, oc.transformer, oc.token_embedding
            self.positional_embedding, self.ln_final = oc.positional_embedding, oc.ln_final
            self.text_projection, self.logit_scale = oc.text_projection, oc.logit_scale
            size = oc.visual.image_size
            self.register_buffer("input_resolution", torch.tensor(size[0] if isinstance(size, tuple) else size))
            self.register_buffer("context_length", torch.tensor(oc.context_length))
            self.register_buffer("vocab_size", torch.tensor(oc.vocab_size))
            self._encode = (oc.encode_image, oc.encode_text)  # not a submodule: no duplicate keys

        def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self._encode[0](image), self._encode[1](text)

    return CLIP(model).eval()


def write_openai_torchscript(path: Path | str, arch: str = CLIP_ARCH, seed: int = 0) -> Path:
    """A random-weights CLIP of `arch` in OpenAI's release format: a traced TorchScript archive of
    the OpenAI layout, matrices stored in fp16 as OpenAI's files store them."""
    import torch

    model = _open_clip_model(arch, seed)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    example = (torch.zeros(1, 3, size, size), torch.zeros(1, model.context_length, dtype=torch.long))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(openai_layout(model), example, check_trace=False)
    for _, p in traced.named_parameters():
        if p.dim() >= 2:
            p.data = p.data.half()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def write_openai_state_dict(path: Path | str, arch: str = CLIP_ARCH, seed: int = 0) -> Path:
    """torch.save of an OpenAI-layout model's state dict (OpenAI's three extra tensors kept)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(openai_layout(_open_clip_model(arch, seed)).state_dict(), path)
    return path


def write_open_clip_state_dict(path: Path | str, arch: str, seed: int = 0, config: bool = True) -> Path:
    """An open_clip state dict, with open_clip's hub `open_clip_config.json` beside it if `config`."""
    import open_clip
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_open_clip_model(arch, seed).state_dict(), path)
    if config:
        (path.parent / "open_clip_config.json").write_text(json.dumps(
            {"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": {}}, indent=2))
    return path


# --------------------------------------------------------------------------------------------
# img2dataset shards


def _world_cfg(image_size: int = 64) -> Any:
    from cocu.config import load_params

    world = load_params(Path(__file__).resolve().parents[1] / "params.yaml").world
    import dataclasses

    return dataclasses.replace(world, image_size=image_size)


def img2dataset_key(shard: int, index: int) -> str:
    return f"{shard:0{SHARD_DIGITS}d}{index:0{SAMPLE_DIGITS}d}"


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_img2dataset(folder: Path | str, source: str, n: int, per_shard: int, failed_per_shard: int = 1,
                      seed: int = 0) -> dict[str, int]:
    """`n` successful samples of the synthetic world's stream `source` as img2dataset writes them
    (module docstring), `per_shard` attempts per shard of which `failed_per_shard` failed (listed in
    the parquet and stats only, as img2dataset does)."""
    from cocu.data import world
    from cocu.data.shards import encode_jpeg

    if not 0 <= failed_per_shard < per_shard <= 10 ** SAMPLE_DIGITS:
        raise ValueError(f"need 0 <= failed_per_shard < per_shard <= {10 ** SAMPLE_DIGITS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = _world_cfg()
    samples = world.generate(cfg, n, f"rehearsal-{source}-{seed}")
    ok_per_shard = per_shard - failed_per_shard
    written = shards = 0
    now = time.time()
    while written < n:
        rows, members = [], []
        for i in range(per_shard):
            key = img2dataset_key(shards, i)
            url = f"https://images.example.invalid/{source}/{key}.jpg"
            if i >= ok_per_shard or written + len(members) >= n:
                rows.append({"url": url, "key": key, "caption": None, "status": "failed_to_download",
                             "error_message": "HTTP Error 404: Not Found", "width": None, "height": None,
                             "original_width": None, "original_height": None, "exif": None, "sha256": None})
                continue
            sample = next(samples)
            jpg = encode_jpeg(sample.image, 90)
            h, w = sample.image.shape[:2]
            meta = {"url": url, "key": key, "caption": sample.caption, "status": "success", "error_message": None,
                    "width": w, "height": h, "original_width": 4 * w, "original_height": 3 * h, "exif": "{}",
                    "sha256": hashlib.sha256(jpg).hexdigest()}
            rows.append(meta)
            members.append((key, jpg, sample.caption.encode("utf-8"), json.dumps(meta).encode()))
        name = f"{shards:0{SHARD_DIGITS}d}"
        with tarfile.open(folder / f"{name}.tar", "w") as tar:
            for key, jpg, txt, meta in members:  # webdataset's member order within a sample
                _tar_add(tar, f"{key}.jpg", jpg, now)
                _tar_add(tar, f"{key}.json", meta, now)
                _tar_add(tar, f"{key}.txt", txt, now)
        pd.DataFrame(rows).to_parquet(folder / f"{name}.parquet", index=False)
        status: dict[str, int] = {}
        for r in rows:
            status[r["status"]] = status.get(r["status"], 0) + 1
        (folder / f"{name}_stats.json").write_text(json.dumps({
            "count": len(rows), "successes": len(members), "failed_to_download": len(rows) - len(members),
            "failed_to_resize": 0, "duration": 1.0, "start_time": now, "end_time": now + 1.0,
            "status_dict": status}, indent=4))
        written += len(members)
        shards += 1
    return {"samples": written, "shards": shards}


# --------------------------------------------------------------------------------------------
# vocabulary


def write_gallery(path: Path | str, concepts: Sequence[str]) -> Path:
    """A concept list in the official code's format: `{"concept": [...]}` (its rewrite/gallery.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"concept": list(concepts)}, indent=4) + "\n")
    return path


def rehearsal_concepts() -> list[str]:
    """The synthetic world's names and synonyms (what its captions say), lower-case as the official list."""
    from cocu.data import world

    return [c for c in world.vocabulary()]


# --------------------------------------------------------------------------------------------
# benchmarks in their real layouts


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(0, 256, size=(1, 1, 3)) * np.ones((h, w, 1))
    return np.clip(base + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)


def _label(rng: np.random.Generator, h: int, w: int, values: Sequence[int], fill: int) -> np.ndarray:
    """A label map of a few rectangles with values drawn from `values` on `fill`."""
    label = np.full((h, w), fill, dtype=np.int64)
    for _ in range(4):
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        label[y: y + int(rng.integers(4, h // 2 + 5)), x: x + int(rng.integers(4, w // 2 + 5))] = rng.choice(values)
    return label


def _save(path: Path, array: np.ndarray, palette: bool = False, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:  # a palette PNG: the pixel values are indices (VOC)
        from cocu.eval.overlay import palette as colours

        im = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array.astype(np.uint8)).tobytes())
        im.putpalette(colours(256).ravel().tolist())
    else:
        im = Image.fromarray(array.astype(np.uint8) if array.ndim == 3 or array.max() < 256 else array)
    im.save(path, format=fmt)


def _voc2012(root: Path, n: int, rng: np.random.Generator, h: int, w: int) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    ids = [f"2007_{i:06d}" for i in range(1, n + 1)]
    for i in ids:
        _save(voc / "JPEGImages" / f"{i}.jpg", _image(rng, h, w))
        label = _label(rng, h, w, range(1, 21), 0)
        label[0, :] = 255  # VOC's void border pixels
        _save(voc / "SegmentationClass" / f"{i}.png", label, palette=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("")


def _context(root: Path, downloads: Path, n: int, rng: np.random.Generator, h: int, w: int) -> None:
    """VOC2010 images + a PASCAL Context release archive (459-class .mat labels and labels.txt),
    converted by `python -m cocu.data.converters context`, the documented preparation step."""
    from scipy.io import savemat

    from cocu.data import converters as cv
    from cocu.data.converters import shipped_class_names

    voc = root / "VOCdevkit" / "VOC2010"
    ids = [f"2008_{i:06d}" for i in range(1, n + 1)]
    release = downloads / "pascal_context_release"
    (release / "trainval").mkdir(parents=True, exist_ok=True)
    names = {i: f"class{i}" for i in range(1, 460)}
    names.update(dict(zip(cv.CONTEXT_59_IDS, shipped_class_names("context59"))))
    (release / "labels.txt").write_text("".join(f"{i}: {names[i]}\n" for i in sorted(names)))
    for i in ids:
        _save(voc / "JPEGImages" / f"{i}.jpg", _image(rng, h, w))
        label = _label(rng, h, w, [*cv.CONTEXT_59_IDS, 1, 17], 0).astype(np.uint16)  # 1, 17: not among the 59
        savemat(release / "trainval" / f"{i}.mat", {"LabelMap": label})
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    archive = downloads / "trainval.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(release, arcname=".")
    cv.main(["context", "--mats", str(archive), "--voc2010", str(voc)])


def _coco(root: Path, n: int, rng: np.random.Generator, h: int, w: int) -> None:
    from cocu.data import converters as cv

    folder = root / "coco_stuff164k"
    values = [k - 1 for k in cv.COCO_THING_IDS + cv.COCO_STUFF_IDS]  # stuffthingmaps: category id - 1
    for i in range(n):
        stem = f"{139 + 146 * i:012d}"
        _save(folder / "images" / "val2017" / f"{stem}.jpg", _image(rng, h, w))
        _save(folder / "annotations" / "val2017" / f"{stem}.png", _label(rng, h, w, values, 255))


def _cityscapes(root: Path, n: int, rng: np.random.Generator, h: int, w: int) -> None:
    folder = root / "cityscapes"
    for i in range(n):
        city = ("frankfurt", "lindau", "munster")[i % 3]
        stem = f"{city}_{i:06d}_000019"
        _save(folder / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", _image(rng, h, 2 * h))
        gt = folder / "gtFine" / "val" / city
        label = _label(rng, h, 2 * h, list(range(34)), 0)
        _save(gt / f"{stem}_gtFine_labelIds.png", label)
        _save(gt / f"{stem}_gtFine_instanceIds.png", label)
        (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": h, "imgWidth": 2 * h,
                                                                    "objects": []}))


def _ade20k(root: Path, n: int, rng: np.random.Generator, h: int, w: int) -> None:
    folder = root / "ADEChallengeData2016"
    for i in range(1, n + 1):
        _save(folder / "images" / "validation" / f"ADE_val_{i:08d}.jpg", _image(rng, h, w))
        _save(folder / "annotations" / "validation" / f"ADE_val_{i:08d}.png", _label(rng, h, w, range(1, 151), 0))
    (folder / "sceneCategories.txt").write_text("".join(f"ADE_val_{i:08d} street\n" for i in range(1, n + 1)))


def _imagenet_s(root: Path, name: str, classes: int, n: int, rng: np.random.Generator, h: int, w: int) -> None:
    folder = root / name
    wnids = ("n01443537", "n01491361", "n01531178")
    for i in range(n):
        wnid = wnids[i % len(wnids)]
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        _save(folder / "validation" / wnid / f"{stem}.JPEG", _image(rng, h, w), fmt="JPEG")
        ids = _label(rng, h, w, [1 + i % classes, 1000], 0)  # one class per image, 1000 = ignore
        rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1)  # id = R + 256 G
        _save(folder / "validation-segmentation" / wnid / f"{stem}.png", rgb)


def write_benchmarks(root: Path | str, downloads: Path | str, n: int = 2, seed: int = 0, size: int = 48) -> None:
    """The eight benchmarks of the paper profile, `n` images each, in their real layouts."""
    root, downloads = Path(root), Path(downloads)
    rng = np.random.default_rng(seed)
    h, w = size, size * 4 // 3
    _voc2012(root, n, rng, h, w)
    _context(root, downloads, n, rng, h, w)
    _coco(root, n, rng, h, w)
    _cityscapes(root, n, rng, h, w)
    _ade20k(root, n, rng, h, w)
    _imagenet_s(root, "ImageNetS50", 50, n, rng, h, w)
    _imagenet_s(root, "ImageNetS300", 300, n, rng, h, w)


# --------------------------------------------------------------------------------------------
# all of it


def write_rehearsal(dest: Path | str, pairs_per_source: int = 1000, per_shard: int = 256,
                    benchmark_images: int = 2, seed: int = 0) -> dict[str, Any]:
    """Write every input of the rehearsal profile into `dest` (an empty or new folder)."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty: the rehearsal data goes into a new folder")
    summary: dict[str, Any] = {}
    t0 = time.perf_counter()
    for source in SOURCES:
        summary[source] = write_img2dataset(dest / source, source, pairs_per_source, per_shard, seed=seed)
    summary["clip"] = str(write_openai_torchscript(dest / "clip" / "ViT-B-16.pt", CLIP_ARCH, seed))
    summary["vocabulary"] = str(write_gallery(dest / "vocabulary" / "gallery.json", rehearsal_concepts()))
    write_benchmarks(dest / "benchmarks", dest / "downloads", benchmark_images, seed)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def listing(root: Path | str) -> list[tuple[str, str, int, int, int, str]]:
    """(relative path, kind, size, mtime_ns, mode, sha256 or link target) of everything under
    `root`, the folder itself included: equal before and after means nothing was written, moved,
    deleted or re-permissioned, whatever the permissions (root ignores them)."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in ["", *sorted(filenames), *dirnames]:
            path = Path(dirpath) / name if name else Path(dirpath)
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                kind, digest = "link", os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                if name:  # listed when walked into (its mtime changes when an entry is added or removed)
                    continue
                kind, digest = "dir", ""
            else:
                kind, digest = "file", hashlib.sha256(path.read_bytes()).hexdigest()
            out.append((rel, kind, int(st.st_size), int(st.st_mtime_ns), int(st.st_mode), digest))
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocu.rehearsal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="a new folder outside the repo (the profile reads ../cocu-rehearsal)")
    parser.add_argument("--pairs-per-source", type=int, default=1000)
    parser.add_argument("--per-shard", type=int, default=256, help="attempted samples per shard (one fails)")
    parser.add_argument("--benchmark-images", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        summary = write_rehearsal(args.dest, args.pairs_per_source, args.per_shard, args.benchmark_images, args.seed)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
