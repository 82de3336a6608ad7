"""Names and files of the pre-training runs (light: stages that only read them import this)."""

from __future__ import annotations

from pathlib import Path

from cocu.config import Params


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-s{seed}"


def configured_runs(params: Params) -> list[tuple[str, int]]:
    """(variant, seed) of every configured run, seed-major (the runs of one seed, which the report
    pairs, are trained next to each other)."""
    return [(v, s) for s in params.pretrain.seeds for v in params.pretrain.variants]


def run_outputs(params: Params, variant: str, seed: int) -> dict[str, Path]:
    """Where a run writes: its resume folder, final weights, metrics json (DVC metrics), details json
    and loss curve."""
    name = run_name(variant, seed)
    return {"run_dir": Path(params.paths.runs) / name, "checkpoint": Path(params.paths.checkpoints) / f"{name}.pt",
            "metrics": Path(params.paths.pretrain_metrics) / f"{name}.json",
            "curve": Path(params.paths.pretrain_curves) / f"{name}.csv",
            "details": Path(params.paths.details) / "pretrain" / f"{name}.json"}
