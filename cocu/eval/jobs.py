"""The `evaluate` stage's jobs: one checkpoint's benchmarks, dealt to array tasks.

A benchmark is the unit: `launcher.stages.evaluate.tasks` tasks each evaluate a contiguous run of
the active benchmarks (1 task: one job per checkpoint, the model loaded once; as many tasks as
benchmarks: one job per benchmark). A benchmark's result does not depend on the task it ran in.
`evaluate_runs` does this for every configured run: locally `pretrain.parallel` checkpoints at a
time, each in its own process; on a cluster every checkpoint's jobs submitted at once.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from cocu.config import LauncherConfig, Params, ProtocolCard

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


def evaluate_run(params_file: Path, variant: str, seed: int) -> dict[str, dict[str, Any]]:
    """One configured run's checkpoint on every active benchmark: {benchmark: result}, in
    `eval.active` order (overlays and per-image counts under `<paths.results>/<variant>/s<seed>`)."""
    from cocu.config import load_params
    from cocu.data.benchmarks import active_roots
    from cocu.training.runs import run_name, run_outputs

    params = load_params(params_file)
    cards = {b: params.eval.benchmarks[b] for b in params.eval.active}
    return evaluate_benchmarks(run_outputs(params, variant, seed)["checkpoint"], cards, active_roots(params),
                               params.data.mean, params.data.std, Path(params.paths.results) / variant / f"s{seed}",
                               params.eval.overlays, params.eval.threads, params.launcher,
                               f"evaluate-{run_name(variant, seed)}")


def _pool_run(params_file: Path, variant: str, seed: int) -> dict[str, dict[str, Any]]:
    """`evaluate_run` in a worker process of the local pool (its own logging)."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{variant}-s{seed}] %(name)s: "
                        "%(message)s", datefmt="%H:%M:%S")
    return evaluate_run(params_file, variant, seed)


def evaluate_runs(params_file: Path, params: Params, runs: Sequence[tuple[str, int]]) -> list[dict[str, dict[str, Any]]]:
    """`evaluate_run` of every (variant, seed), results in `runs` order. Locally `pretrain.parallel`
    runs at a time, each in its own spawned process with `eval.threads` threads (as pre-training
    does: the results do not depend on it); on SLURM every run's jobs are submitted at once, one
    thread of this process waiting for each."""
    runs = list(runs)
    if len(runs) > 1 and params.launcher.cluster == "local" and params.pretrain.parallel > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with ProcessPoolExecutor(max_workers=min(params.pretrain.parallel, len(runs)), mp_context=ctx) as pool:
            return list(pool.map(_pool_run, [params_file] * len(runs), *zip(*runs)))
    if len(runs) > 1 and params.launcher.cluster != "local":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(runs)) as pool:
            return list(pool.map(lambda run: evaluate_run(params_file, *run), runs))
    return [evaluate_run(params_file, v, s) for v, s in runs]
