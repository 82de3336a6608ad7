"""Small JSON files beside outputs: stage metrics (DVC metrics, committed) and run provenance."""

from __future__ import annotations

import hashlib
import json
import math
import platform
from pathlib import Path
from typing import Any


def write_json(path: Path | str, data: Any) -> None:
    """Pretty, key-sorted JSON (stable diffs in git); NaN becomes null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


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
