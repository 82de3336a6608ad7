"""Checkpoints: atomic writes, `weights_only` loads, RNG capture, discovery of the latest one.

A checkpoint is one file `ckpt_<step:08d>.pt` in the run directory holding only tensors and plain
Python values, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from cocu.launch.device import cuda_rng_states, set_cuda_rng_states
from cocu.launch.signals import held_signals
from cocu.tracking.run_info import sha256_file  # noqa: F401 (re-exported)

_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints in `run_dir`, oldest first (temporary files are never matched)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if _NAME.match(p.name))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write `state` to a temporary file in the same folder, fsync, then rename over `path`. A
    pre-emption signal (SIGTERM, SIGUSR2) that arrives meanwhile is handled once the file is in
    place (`cocu.launch.signals.held_signals`), never in the middle of the write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with held_signals():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model_state(path: Path) -> tuple[dict[str, torch.Tensor], Optional[dict[str, Any]]]:
    """(model state_dict, model config as a plain dict or None) of a checkpoint, for evaluation:
    `from_dict(ModelConfig, cfg)` rebuilds the config, `build_model(...).load_state_dict(state)`."""
    state = load_checkpoint(path)
    return state["model"], state.get("model_config")


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the `keep` most recent checkpoints."""
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),  # (version, tuple of ints, gauss_next)
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": cuda_rng_states(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
                         "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]})
    torch.set_rng_state(state["torch"].cpu())
    set_cuda_rng_states([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
