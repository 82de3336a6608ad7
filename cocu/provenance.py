"""Digests of the source code that a resumable output depends on.

A finished archive shard or pre-training run is reused only when it was made from the same
inputs, settings *and code*: DVC re-runs a stage when its code changes, and a resumed output
from older code would then disagree with what a fresh clone produces.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent  # the `cocu` package


def source_digest(*parts: str) -> str:
    """sha256 over the `.py` files (relative path and bytes, sorted) of the named parts of the
    `cocu` package: sub-packages ("concepts") or modules ("config.py")."""
    h = hashlib.sha256()
    for part in parts:
        path = PACKAGE / part
        if not path.exists():
            raise FileNotFoundError(f"source_digest: {path} does not exist")
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f"{f.relative_to(PACKAGE)}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()
