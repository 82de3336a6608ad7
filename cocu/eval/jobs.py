"""The `evaluate` stage's jobs: one checkpoint's benchmarks, dealt to array tasks.

A benchmark is the unit: `launcher.stages.evaluate.tasks` tasks each evaluate a contiguous run of
the active benchmarks (1 task: one job per checkpoint, the model loaded once; as many tasks as
benchmarks: one job per benchmark). A benchmark's result does not depend on the task it ran in.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from cocu.config import LauncherConfig, ProtocolCard

log = logging.getLogger(__name__)


def evaluate_job(checkpoint: Path, root: Path | Mapping[str, Path], mean: Sequence[float], std: Sequence[float],
                 overlay_root: Path, num_overlays: int, threads: int,
                 cards: Mapping[str, ProtocolCard]) -> dict[str, dict[str, Any]]:
    """One task: `evaluate_checkpoint` on its benchmarks (overlays and per-image counts under
    `overlay_root`)."""
    import torch

    from cocu.eval.evaluate import evaluate_checkpoint
    from cocu.launch.device import resolve_device

    if threads > 0:
        torch.set_num_threads(threads)
    return evaluate_checkpoint(checkpoint, cards, root, mean, std, overlay_root=overlay_root,
                               num_overlays=num_overlays, device=resolve_device("auto"), counts_root=overlay_root)


def evaluate_benchmarks(checkpoint: Path, cards: Mapping[str, ProtocolCard], root: Path | Mapping[str, Path],
                        mean: Sequence[float],
                        std: Sequence[float], overlay_root: Path, num_overlays: int, threads: int,
                        launcher: LauncherConfig, name: str) -> dict[str, dict[str, Any]]:
    """Every benchmark of `cards` (name -> card) through the launcher; results in `cards` order."""
    from cocu.launch.executor import deal, map_shards, stage_launcher, stage_tasks

    names = list(cards)
    runs = deal(len(names), stage_tasks(launcher, "evaluate"))
    roots = {k: Path(v) for k, v in root.items()} if isinstance(root, Mapping) else Path(root)
    job = functools.partial(evaluate_job, Path(checkpoint), roots, tuple(mean), tuple(std), Path(overlay_root),
                            num_overlays, threads)
    parts = map_shards(job, [{names[i]: cards[names[i]] for i in run} for run in runs],
                       stage_launcher(launcher, "evaluate"), name)
    results = {b: r for part in parts for b, r in part.items()}
    return {b: results[b] for b in names}
