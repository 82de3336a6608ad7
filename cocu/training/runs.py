"""Names and files of the pre-training runs (light: stages that only read them import this)."""

from __future__ import annotations

from pathlib import Path

from cocu.config import Params


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-s{seed}"


def run_outputs(params: Params, variant: str, seed: int) -> dict[str, Path]:
    """Where a run writes: its resume folder, final weights, metrics json (DVC metrics), details json
    and loss curve."""
    name = run_name(variant, seed)
    metrics = Path(params.paths.pretrain_metrics)
    return {"run_dir": Path(params.paths.runs) / name, "checkpoint": Path(params.paths.checkpoints) / f"{name}.pt",
            "metrics": metrics / f"{name}.json", "curve": metrics / f"{name}.csv",
            "details": Path(params.paths.details) / "pretrain" / f"{name}.json"}
