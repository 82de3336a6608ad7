"""One GroupViT pre-training run (a variant and a seed) from the params: data, model, loop, outputs.

`run_pretraining` is what the `pretrain` stage launches: in-process locally, or as a submitit job
(wrapped in `CheckpointableTask`, so a pre-empted job resumes from its run folder). It runs on
every rank; rank 0 logs to MLflow and writes the final weights, metrics and loss curve.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from cocu.config import Params, to_dict
from cocu.data.manifest import read_ground_truth, read_manifest_table
from cocu.data.sources import pair_shards
from cocu.launch.device import resolve_device
from cocu.launch.distributed import DistInfo, barrier, destroy_process_group, from_env, init_process_group
from cocu.models.factory import build_model
from cocu.models.text import build_tokenizer
from cocu.provenance import source_digest
from cocu.training.checkpoint import save_checkpoint, sha256_file
from cocu.training.data import PretrainData
from cocu.training.loop import TrainResult, train
from cocu.training.prompts import (
    ARCHIVE_METHODS, load_archives, make_prompt_source, reads_ground_truth, variant_precision,
)
from cocu.training.runs import run_name, run_outputs

log = logging.getLogger(__name__)

CURVE_COLUMNS = ("step", "loss", "itc", "mlc", "lr")  # the committed curve: no wall-clock column
TIMINGS = ("images_per_s",)  # logged metrics that measure the machine, not the run: MLflow only


def fingerprint(params: Params, variant: str, seed: int, inputs: list[Path]) -> str:
    """What a resumable run depends on: its params, its inputs (size + mtime) and the code that
    trains (data, models, training, concept sampling). A stale run folder from other settings or
    code is cleared instead of resumed."""
    h = hashlib.sha256(json.dumps({"variant": variant, "seed": seed, "model": to_dict(params.model),
                                   "train": to_dict(params.train), "data": to_dict(params.data)},
                                  sort_keys=True).encode())
    h.update(source_digest("concepts", "data", "models", "training").encode())
    for path in inputs:
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def prepare_run_dir(run_dir: Path, stamp: str, dist: DistInfo) -> None:
    """Make `run_dir` hold only a run of `stamp` (a `fingerprint`), on every rank.

    Rank 0 deletes a folder of other settings, inputs or code and writes the stamp; every rank
    then waits at a barrier, so that no rank looks for a checkpoint before the clean-up is done
    (a rank that looked earlier could resume the stale run while rank 0 starts afresh).
    """
    if dist.is_main:
        stamp_file = run_dir / "fingerprint.txt"
        if run_dir.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
            log.info("%s holds a run with other settings or inputs: starting afresh", run_dir)
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        stamp_file.write_text(stamp)
    barrier(dist)


class CurveTracker:
    """Forwards to another tracker and keeps the loss curve in `<run_dir>/curve.csv` (survives resume)."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner, self.path = inner, path

    def truncate(self, step: int) -> None:
        """Drop rows logged after `step` (a resumed run logs them again)."""
        if not self.path.exists():
            return
        rows = [r for r in csv.DictReader(self.path.open()) if int(r["step"]) <= step]
        self._write(rows, "w")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.inner.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.inner.log_metrics(metrics, step=step)
        if step is not None and "loss" in metrics:
            self._write([{"step": step, **{k: metrics.get(k, "") for k in CURVE_COLUMNS[1:]}}], "a")

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self.inner.log_artifact(path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.inner.set_tags(tags)

    def _write(self, rows: list[dict], mode: str) -> None:
        new = mode == "w" or not self.path.exists()
        with self.path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)


def build_data(params: Params, variant: str, seed: int, dist: DistInfo) -> PretrainData:
    """The webdataset stream of this variant: the caption plus K prompts from its concept source."""
    paths = params.paths
    manifest = read_manifest_table(paths.pairs_manifest)  # arrow: no Python object per pair
    vocab = archives = truth = caption_concepts = None
    precision = variant_precision(variant)
    if variant == "baseline" or precision is not None:
        from cocu.concepts.vocabulary import load_vocabulary

        vocab = load_vocabulary(paths.vocabulary, paths.synonyms, params.vocabulary)
    if variant in ARCHIVE_METHODS or precision is not None:
        archives = load_archives(paths.archives, keys=manifest.column("key"))
    if reads_ground_truth(variant):  # the upper bound and its ablations: the only readers of the hidden truth
        truth = read_ground_truth(paths.pairs_manifest)
    if precision is not None:
        captions = zip(manifest.column("key").to_pylist(), manifest.column("caption").to_pylist())
        caption_concepts = {k: vocab.extract(c) for k, c in captions}  # synthetic-world ablation only
        vocab = None
    prompts = make_prompt_source(variant, vocab, archives, truth, num_prompts=params.train.num_prompts,
                                 caption_concepts=caption_concepts)
    return PretrainData(pair_shards(params), manifest, prompts, build_tokenizer(params.model.text),
                        params.data, image_size=params.model.image.img_size, batch_size=params.train.batch_size,
                        rank=dist.rank, world_size=dist.world_size, seed=seed,
                        pin_memory=torch.cuda.is_available(), with_keys=False, image_keys=params.pairs.image_keys)


def run_pretraining(params: Params, variant: str, seed: int) -> dict[str, Any]:
    """Train one variant at one seed (resuming its run folder if it holds a matching checkpoint)."""
    from cocu.tracking import NullTracker, start_run

    dist = from_env()
    device = resolve_device("auto", dist.local_rank)
    if device.type == "cpu" and params.pretrain.threads > 0:
        torch.set_num_threads(params.pretrain.threads)
    init_process_group(dist, device=device)
    out = run_outputs(params, variant, seed)
    run_dir = out["run_dir"]
    uses_archives = variant in ARCHIVE_METHODS or variant_precision(variant) is not None
    inputs = [Path(params.paths.pairs_manifest)] + ([Path(params.paths.archives)] if uses_archives else [])
    prepare_run_dir(run_dir, fingerprint(params, variant, seed, inputs), dist)
    train_cfg = dataclasses.replace(params.train, seed=seed)
    params = dataclasses.replace(params, train=train_cfg)  # what MLflow records is what runs
    data = build_data(params, variant, seed, dist)
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = build_model(params.model)
    try:
        if dist.is_main:
            tags = {"variant": variant, "seed": seed, "upper_bound": variant == "oracle"}
            with start_run(params, stage="pretrain", run_name=run_name(variant, seed), tags=tags) as mlflow_run:
                tracker = CurveTracker(mlflow_run, run_dir / "curve.csv")
                result = _train(model, train_cfg, data, run_dir, dist, device, tracker)
                summary = _finish(params, model, result, out, variant, seed, getattr(data.prompts, "summary", {}))
                mlflow_run.log_metrics({f"final/{k}": v for k, v in result.metrics.items()})
                mlflow_run.set_tags({"resumed_from": result.resumed_from})
                mlflow_run.log_artifact(out["curve"])
        else:
            result = _train(model, train_cfg, data, run_dir, dist, device, NullTracker())
            summary = {}
    finally:
        destroy_process_group()
    return summary


def pretrain_job(params_file: Path, variant: str, seed: int, run_dir: Path | None = None) -> dict[str, Any]:
    """The job's entry point (picklable, every rank): reload the params, train; `run_dir` resumes."""
    from cocu.config import load_params

    return run_pretraining(load_params(params_file), variant, seed)


def _pool_job(params_file: Path, variant: str, seed: int) -> dict[str, Any]:
    """`pretrain_job` in a worker process of the local pool (its own logging, like a job's)."""
    import logging as _logging

    _logging.basicConfig(level=_logging.INFO, format=f"%(asctime)s %(levelname)s [{variant}-s{seed}] %(name)s: "
                         "%(message)s", datefmt="%H:%M:%S")
    return pretrain_job(params_file, variant, seed)


def train_runs(params_file: Path, params: Params, runs: list[tuple[str, int]]) -> dict[str, dict[str, Any]]:
    """Train `runs` [(variant, seed)] as `params.launcher` says; {run name: summary}.

    Locally (`launcher.cluster: local`) `pretrain.parallel` runs train at a time, each in its own
    process with `pretrain.threads` threads (two one-thread processes keep two cores busier than one
    two-thread process with the tiny model); with `parallel: 1`, in this process, one after another.
    On SLURM (or `debug`) every run is a `CheckpointableTask` job, all submitted at once, then
    awaited; a failure names the run. Every run writes its own outputs (`_finish`).
    """
    from cocu.launch.executor import JobFailed, submit_job, wait_for
    from cocu.launch.jobs import CheckpointableTask
    from cocu.training.runs import run_name

    names = [run_name(v, s) for v, s in runs]
    if params.launcher.cluster == "local" and params.pretrain.parallel > 1 and len(runs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with ProcessPoolExecutor(max_workers=min(params.pretrain.parallel, len(runs)), mp_context=ctx) as pool:
            futures = {n: pool.submit(_pool_job, params_file, v, s) for n, (v, s) in zip(names, runs)}
            out, failed = {}, []
            for name, future in futures.items():
                try:
                    out[name] = future.result()
                except Exception as e:  # keep waiting for the others: their work is kept in run folders
                    failed.append((name, e))
            if failed:
                raise JobFailed(f"pretrain: {len(failed)} of {len(runs)} runs failed: "
                                + "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in failed)) from failed[0][1]
            return out
    jobs = []
    for name, (v, s) in zip(names, runs):
        run_dir = run_outputs(params, v, s)["run_dir"]
        task = CheckpointableTask(functools.partial(pretrain_job, params_file, v, s), run_dir)
        jobs.append((name, submit_job(task, cfg=params.launcher, name=f"pretrain-{name}")))
    return {name: wait_for(job, f"pretrain-{name}") for name, job in jobs}


def _train(model, cfg, data, run_dir: Path, dist: DistInfo, device, tracker) -> TrainResult:
    from cocu.training.checkpoint import latest_checkpoint, load_checkpoint

    if isinstance(tracker, CurveTracker):
        found = latest_checkpoint(run_dir)
        tracker.truncate(int(load_checkpoint(found)["step"]) if found is not None else -1)
    return train(model, cfg, data, run_dir, dist, device, tracker,
                 samples_per_epoch=data.samples_per_epoch * dist.world_size)


def _finish(params: Params, model: torch.nn.Module, result: TrainResult, out: dict[str, Path], variant: str,
            seed: int, summary_of_prompts: Mapping[str, float]) -> dict[str, Any]:
    """Export the final weights (model + its config) and write the committed metrics, details and curve.

    The committed files hold what the run computed, never how it went (throughput, where it
    resumed): an identical re-run, resumed or not, rewrites them byte for byte. The returned
    summary adds `resumed_from`, which MLflow keeps.
    """
    from cocu.tracking.run_info import write_json, write_metrics

    out["checkpoint"].parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "model_config": to_dict(params.model), "variant": variant,
                     "seed": seed, "step": result.step}, out["checkpoint"])
    final = {k: v for k, v in result.metrics.items() if k not in TIMINGS}
    details = {"variant": variant, "seed": seed, "steps": result.step,
               "checkpoint_sha256": sha256_file(out["checkpoint"]), "profile": params.run.profile,
               **{f"final/{k}": v for k, v in final.items()},
               **{f"prompts/{k}": v for k, v in summary_of_prompts.items()}}
    write_metrics(out["metrics"], {"loss": final.get("loss")})
    write_json(out["details"], details)
    out["curve"].parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out["run_dir"] / "curve.csv", out["curve"])
    return {**details, "resumed_from": result.resumed_from}
