"""Small JSON files beside outputs: stage metrics (DVC metrics, committed) and run provenance."""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json(path: Path | str, data: Any, indent: int = 2) -> None:
    """Pretty, key-sorted JSON (stable diffs in git), written atomically (a temporary file renamed
    over `path`); NaN becomes null, numpy scalars plain numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=indent, sort_keys=True) + "\n")
    tmp.replace(path)


def write_metrics(path: Path | str, metrics: Mapping[str, float | int | None]) -> None:
    """Write a stage's DVC metrics file: a flat object of a few numbers.

    `dvc metrics show` prints every metrics file of the pipeline as one table whose columns are the
    union of their keys, so each file keeps a handful of headline numbers (shared names such as
    `pairs`, `skipped`, `loss` share a column); counts by reason, lists, per-class values and
    histories go to the stage's details file (`write_json`) and MLflow, wall-clock times to MLflow
    only. A nested value, list or string here is a ValueError naming the key.
    """
    for key, value in metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{path}: metric {key!r} must be a number, got {type(value).__name__}: "
                             "put it in the stage's details file")
    write_json(path, dict(metrics))


def numeric_leaves(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """{'a': {'b': 1, 'c': 'x', 'd': [1]}} -> {'a/b': 1.0}: the numbers of a details object, for MLflow."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_leaves(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints, weights files, inputs of a report)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def environment() -> dict[str, str]:
    """Versions and host facts worth keeping beside a result."""
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
    }


def _clean(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {str(k): _clean(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_clean(v) for v in data]
    if hasattr(data, "item") and callable(data.item):  # numpy scalars
        return _clean(data.item())
    return data
