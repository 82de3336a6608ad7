"""The synthetic segmentation benchmarks, written in the standard layout that the readers expect.

`<root>/<name>/images/<id>.png`, `<root>/<name>/labels/<id>.png` (uint8, 255 = ignore) and
`<root>/<name>/class_names.txt` (one name per line, label-id order), as detectron2-style
semantic-segmentation folders are laid out.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cocu.config import WorldConfig
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
