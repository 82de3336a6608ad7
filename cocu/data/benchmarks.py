"""The benchmarks' two homes: the synthetic sets the `benchmarks` stage writes inside the repo, and
the real benchmarks outside it, which the pipeline only reads.

Synthetic: `<paths.benchmarks_root>/<name>/images/<id>.png`, `.../labels/<id>.png` (uint8, 255 =
ignore) and `.../class_names.txt` (one name per line, label-id order), as detectron2-style
semantic-segmentation folders are laid out. Real (`reader` other than `synthetic`): the card's
folder under `paths.benchmarks_external` (DETECTRON2_DATASETS layout, cocu/data/readers.py), never
written; the `inputs` stage fingerprints the files evaluation reads and the `benchmarks` stage
checks their layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cocu.config import ConfigError, Params, ProtocolCard, WorldConfig
from cocu.data import world


def write_synthetic_benchmark(cfg: WorldConfig, name: str, n: int, root: Path) -> dict[str, float]:
    """Render `n` images of benchmark `name` (its own seeded stream) and return summary statistics."""
    if name not in world.BENCHMARKS:
        raise KeyError(f"world.benchmarks: unknown synthetic benchmark {name!r} (known: {sorted(world.BENCHMARKS)})")
    spec = world.BENCHMARKS[name]
    out = Path(root) / name
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir(parents=True)
    (out / "class_names.txt").write_text("\n".join(spec.class_names) + "\n")
    pixels = np.zeros(len(spec.class_names) + 1, dtype=np.int64)  # last bin: ignored pixels
    for i, sample in enumerate(tqdm(world.generate(cfg, n, name), total=n, desc=f"benchmark {name}", mininterval=2.0)):
        label = world.benchmark_label(sample, spec)
        Image.fromarray(sample.image).save(out / "images" / f"{i:05d}.png")
        Image.fromarray(label).save(out / "labels" / f"{i:05d}.png")
        pixels += np.bincount(np.where(label == 255, len(spec.class_names), label).ravel(), minlength=len(pixels))
    total = max(1, int(pixels.sum()))
    present = int((pixels[:-1] > 0).sum())
    return {f"{name}/images": float(n), f"{name}/classes": float(len(spec.class_names)),
            f"{name}/classes_present": float(present), f"{name}/ignored_fraction": float(pixels[-1] / total)}


# --------------------------------------------------------------------------------------------
# where each benchmark lives


def benchmark_root(params: Params, name: str) -> Path:
    """The root a card's folder is under: the repo's synthetic root, or the external real one."""
    card = params.eval.benchmarks[name]
    if card.reader == "synthetic":
        return Path(params.paths.benchmarks_root)
    if params.paths.benchmarks_external is None:
        raise ConfigError(f"eval.benchmarks.{name} is a real benchmark (reader {card.reader!r}) but "
                          "paths.benchmarks_external is null: set it to the folder that holds the benchmarks "
                          "(DETECTRON2_DATASETS layout, docs/paper_profile.md)")
    return Path(params.paths.benchmarks_external)


def active_roots(params: Params) -> dict[str, Path]:
    """{active benchmark: its root}, in `eval.active` order."""
    return {name: benchmark_root(params, name) for name in params.eval.active}


def check_roots_apart(params: Params) -> None:
    """The synthetic root (written) and the external root (only read) must not overlap."""
    if params.paths.benchmarks_external is None:
        return
    own, ext = Path(params.paths.benchmarks_root).resolve(), Path(params.paths.benchmarks_external).resolve()
    if own.is_relative_to(ext) or ext.is_relative_to(own):
        raise ConfigError(f"paths.benchmarks_root ({params.paths.benchmarks_root}) and paths.benchmarks_external "
                          f"({params.paths.benchmarks_external}) overlap: the first is written by the `benchmarks` "
                          "stage, the second must never be")


def real_active(params: Params) -> dict[str, ProtocolCard]:
    """The active cards whose data lives outside the repo."""
    cards = {name: params.eval.benchmarks[name] for name in params.eval.active}
    return {name: card for name, card in cards.items() if card.reader != "synthetic"}


def benchmark_files(card: ProtocolCard, root: Path) -> tuple[Path, list[Path], int]:
    """(benchmark folder, every file evaluation reads, number of images); raises
    BenchmarkNotFoundError naming the missing path and how to prepare it."""
    from cocu.data.readers import LAYOUTS, open_benchmark

    bench = open_benchmark(card, root)
    files = [p for item in bench.items for p in (item.image, item.label)]
    files += [bench.folder / r for r in LAYOUTS[card.reader].required if (bench.folder / r).is_file()]
    if card.class_names is None and (bench.folder / "class_names.txt").is_file():
        files.append(bench.folder / "class_names.txt")
    return bench.folder, sorted(set(files)), len(bench)


def check_real_benchmarks(params: Params) -> dict[str, float]:
    """Validate the layout of every active real benchmark (folders, split lists, every image and
    label file, the class names); metrics: images and classes per benchmark."""
    from cocu.data.readers import open_benchmark

    metrics: dict[str, float] = {}
    for name, card in real_active(params).items():
        bench = open_benchmark(card, benchmark_root(params, name))
        metrics[f"{name}/images"] = float(len(bench))
        metrics[f"{name}/classes"] = float(bench.num_classes)
    return metrics
