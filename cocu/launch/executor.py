"""Run a stage's heavy function here or as a submitit job, and wait for it (`launcher:` in params).

- `local`: in this process, a plain call (the laptop default; exceptions keep their traceback).
- `debug`: submitit's DebugExecutor, in this process at `result()` time (pdb post-mortem on error).
- `slurm`: an sbatch job through submitit's AutoExecutor. The caller (a DVC stage) blocks, streams
  the job's stdout/stderr into its own log, and gets the result back, or a `JobFailed` whose
  message carries the job's traceback and log paths. Wrap long work in `CheckpointableTask` to
  survive pre-emption and time limits (USR2 -> requeue -> resume from the newest checkpoint).

Stages whose work grows with N (pairs validation, embed, index queries, curate, evaluate) cut it
into units (shard files, row ranges, curation shards, benchmarks), deal the units to
`launcher.stages.<stage>.tasks` array tasks (`deal`) and run them with `map_shards`: one SLURM job
array, one task and at most one GPU per element (`stage_launcher`); locally the same calls in a
loop. The units, not the tasks, fix the outputs, so 1, 2 or 4 tasks write the same bytes.

`cluster=` is always explicit: submitit's AutoExecutor picks SLURM on any machine with `srun`.
`python -m cocu.launch.executor --params params.yaml --dry-run --stage NAME` prints the sbatch
script a stage would submit, without submitting it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, Optional, TypeVar
from unittest import mock

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.slurm.slurm import SlurmExecutor, SlurmJob

from cocu.config import ConfigError, LauncherConfig, StageLaunch, load_section
from cocu.launch.jobs import CheckpointableTask, JobCall, ResumableCall, distributed_env, export_distributed_env

__all__ = ["ARRAY_STAGES", "CheckpointableTask", "InProcessExecutor", "JobFailed", "deal", "distributed_env",
           "executor_parameters", "export_distributed_env", "make_executor", "map_shards", "run_job",
           "sbatch_script", "stage_launcher", "stage_tasks", "submit_job", "wait_for"]

log = logging.getLogger(__name__)
job_log = logging.getLogger("cocu.job")  # the streamed lines of a job's stdout/stderr
R = TypeVar("R")
SIGNAL_MARGIN_S = 30  # Slurm may send --signal up to PERIODIC_TIMEOUT (30 s) early (slurm_up.sh gotcha 1)


class JobFailed(RuntimeError):
    """A launched job failed or died; the message has its error, traceback and log paths."""


# --------------------------------------------------------------------------------------------
# executors


class InProcessJob(Generic[R]):
    """A call already made in this process, with the part of submitit's Job API used here."""

    def __init__(self, job_id: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> None:
        self.job_id = job_id
        self._result: Optional[R] = None
        self._error: Optional[Exception] = None
        try:
            self._result = fn(*args, **kwargs)
        except Exception as e:  # re-raised, traceback intact, by result()
            self._error = e

    @property
    def state(self) -> str:
        return "FAILED" if self._error is not None else "COMPLETED"

    def done(self, force_check: bool = False) -> bool:
        return True

    def exception(self) -> Optional[Exception]:
        return self._error

    def result(self) -> R:
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def results(self) -> list[R]:
        return [self.result()]


class InProcessExecutor:
    """`launcher.cluster: local`: submit() calls the function right away in this process."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._count = 0

    def update_parameters(self, **kwargs: Any) -> None:
        """Resources mean nothing in-process; accepted for API compatibility."""

    def submit(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> InProcessJob[R]:
        self._count += 1
        return InProcessJob(f"local-{self._count}", fn, *args, **kwargs)

    def submit_array(self, fns: Sequence[Callable[[], R]]) -> list[InProcessJob[R]]:
        return [self.submit(fn) for fn in fns]

    def map_array(self, fn: Callable[..., R], *iterables: Iterable[Any]) -> list[InProcessJob[R]]:
        return [self.submit(fn, *args) for args in zip(*iterables)]


ARRAY_STAGES = ("pairs", "embed", "index", "curate", "evaluate")  # the fields of launcher.stages


def stage_resources(cfg: LauncherConfig, stage: str) -> StageLaunch:
    """`launcher.stages.<stage>` (its values are checked when the params load: cocu.config.StageLaunch)."""
    if stage not in ARRAY_STAGES:
        raise ConfigError(f"launcher.stages has no stage {stage!r} (expected one of {', '.join(ARRAY_STAGES)})")
    return getattr(cfg.stages, stage)


def stage_tasks(cfg: LauncherConfig, stage: str) -> int:
    """How many array tasks `stage` asks for (`launcher.stages.<stage>.tasks`)."""
    return stage_resources(cfg, stage).tasks


def stage_launcher(cfg: LauncherConfig, stage: str) -> LauncherConfig:
    """The launcher of one job of `stage`: one task on one node with the stage's GPUs, CPUs, memory,
    time limit and partition (the rest, e.g. cluster, folder, extra_sbatch, as `cfg`)."""
    res = stage_resources(cfg, stage)
    return dataclasses.replace(cfg, nodes=1, gpus_per_node=res.gpus, tasks_per_node=1,
                               cpus_per_task=res.cpus_per_task, mem_gb=res.mem_gb, timeout_min=res.timeout_min,
                               partition=res.partition if res.partition is not None else cfg.partition)


def deal(num_units: int, tasks: int) -> list[range]:
    """Units 0..num_units-1 dealt to at most `tasks` tasks as contiguous runs, in order, sizes
    differing by at most one (no empty run): deal(5, 2) == [range(0, 3), range(3, 5)]."""
    if tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {tasks}")
    tasks = min(tasks, num_units)
    bounds = [num_units * t // tasks for t in range(tasks + 1)] if tasks else [0]
    return [range(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def job_folder(cfg: LauncherConfig, name: str, folder: Path | str | None = None) -> Path:
    """Where submitit writes one stage's jobs: `folder` or `<launcher.folder>/<name>`."""
    return Path(folder) if folder is not None else Path(cfg.folder) / name


def executor_parameters(cfg: LauncherConfig, name: str, shard: bool = False) -> dict[str, Any]:
    """The AutoExecutor.update_parameters() keywords for a SLURM job of this launcher config.

    `tasks_per_node` tasks per node (None: one per GPU, or 1 on CPU), each calling the function;
    `shard=True` is one task on one node with at most one GPU (an element of a job array, at most
    `array_parallelism` of them running at once).
    `extra_sbatch` entries become `#SBATCH --key=value` lines (an empty value: a bare `--key`).
    The script exports OMP_NUM_THREADS = `cpus_per_task`, so that each task's torch uses the CPUs
    it was given, whether or not the cluster binds it to them.
    """
    if cfg.timeout_min * 60 <= cfg.signal_delay_s + SIGNAL_MARGIN_S:
        raise ConfigError(f"launcher: timeout_min*60 ({cfg.timeout_min * 60} s) must exceed signal_delay_s + "
                          f"{SIGNAL_MARGIN_S} ({cfg.signal_delay_s + SIGNAL_MARGIN_S} s), or USR2 arrives "
                          "as the job starts and kills it")
    nodes, gpus = (1, min(cfg.gpus_per_node, 1)) if shard else (cfg.nodes, cfg.gpus_per_node)
    tasks = 1 if shard else (cfg.tasks_per_node or max(1, gpus))
    extra: dict[str, Any] = {"requeue": True}  # a pre-empted job goes back in the queue
    extra.update({k: (True if v == "" else v) for k, v in cfg.extra_sbatch.items()})
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": cfg.timeout_min,
        "nodes": nodes,
        "tasks_per_node": tasks,
        "cpus_per_task": cfg.cpus_per_task,
        "mem_gb": cfg.mem_gb,
        "slurm_signal_delay_s": cfg.signal_delay_s,
        "slurm_additional_parameters": extra,
        # torch (OpenMP) sizes its thread pool by the CPUs it can see: on a cluster that does not
        # bind a job to its CPUs (TaskPlugin=task/none) that is the whole node, and jobs sharing it
        # oversubscribe the cores (two 1-CPU evaluation jobs on a 2-core node: 2x slower). A
        # `threads: 0` key means the CPUs the job was given.
        "slurm_setup": [f"export OMP_NUM_THREADS={cfg.cpus_per_task}"],
    }
    if gpus > 0:
        params["gpus_per_node"] = gpus
    if cfg.partition:
        params["slurm_partition"] = cfg.partition
    if shard:
        params["slurm_array_parallelism"] = cfg.array_parallelism
    return params


def make_executor(cfg: LauncherConfig, name: str, folder: Path | str | None = None,
                  shard: bool = False) -> Any:
    """An executor for `cfg.cluster`: InProcessExecutor, submitit DebugExecutor or AutoExecutor(slurm).

    SLURM jobs write their pickles and logs under `<folder>/<job id>/`.
    """
    base = job_folder(cfg, name, folder)
    if cfg.cluster == "local":
        return InProcessExecutor(base)
    if cfg.cluster == "debug":
        return submitit.AutoExecutor(folder=base / "%j", cluster="debug")
    if cfg.cluster == "slurm":
        params = executor_parameters(cfg, name, shard)  # validates before touching the cluster
        ex = submitit.AutoExecutor(folder=base / "%j", cluster="slurm",
                                   slurm_max_num_timeout=cfg.max_requeues)
        ex.update_parameters(**params)
        return ex
    raise ConfigError(f"launcher.cluster must be local, debug or slurm, got {cfg.cluster!r}")


@contextlib.contextmanager
def _pretend_srun() -> Iterator[None]:
    """Let submitit build a SlurmExecutor on a machine without `srun` (dry runs only)."""
    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 2)):
        yield


def sbatch_script(cfg: LauncherConfig, name: str, folder: Path | str | None = None,
                  shard: bool = False, array: int = 0) -> str:
    """The sbatch script that `make_executor(cfg with cluster=slurm, ...)` would submit; submits nothing.

    `array=n` (n >= 2, with `shard=True`) shows the script of an n-element job array, as submitit
    writes it for `map_shards` (`#SBATCH --array=0-<n-1>%<array_parallelism>`).
    """
    slurm_cfg = dataclasses.replace(cfg, cluster="slurm")
    with _pretend_srun():
        ex = make_executor(slurm_cfg, name, folder, shard=shard)
    inner = ex._executor  # submitit.slurm.SlurmExecutor
    if array > 1:
        inner.parameters["map_count"] = array  # what submitit sets for a submitted array
    return inner._make_submission_file_text(inner._submitit_command_str, "dry-run")


# --------------------------------------------------------------------------------------------
# submit and wait


class LogTail:
    """Follow a growing text file (a job's log) from where the last poll stopped, line by line."""

    def __init__(self, path: Path, emit: Callable[[str], None]) -> None:
        self.path = path
        self.emit = emit
        self._pos = 0
        self._partial = ""

    def poll(self, final: bool = False) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return
        self._pos += len(data)
        *lines, self._partial = (self._partial + data.decode("utf-8", errors="replace")).split("\n")
        for line in lines:
            self.emit(line)
        if final and self._partial:
            self.emit(self._partial)
            self._partial = ""


def submit_job(fn: Callable[..., R], *args: Any, cfg: LauncherConfig, name: str,
               folder: Path | str | None = None) -> Any:
    """Submit `fn(*args)` (each task of the job calls it) and return the job without waiting.

    A Checkpointable `fn` (e.g. CheckpointableTask) is submitted as it is, so submitit requeues it;
    any other callable runs inside `JobCall` (job logging + torch.distributed environment).
    """
    ex = make_executor(cfg, name, folder)
    call = (fn, *args) if hasattr(fn, "checkpoint") or cfg.cluster == "local" else (JobCall(fn, *args),)
    try:
        job = ex.submit(*call)
    except FailedJobError as e:  # sbatch refused the script: its stderr is the message
        raise JobFailed(f"{name}: sbatch refused the job: {e}") from None
    if cfg.cluster == "slurm":
        log.info("%s: submitted SLURM job %s (%d task(s)); logs in %s", name, job.job_id, job.num_tasks,
                 job.paths.folder)
    return job


def wait_for(job: Any, name: str, stream_log: bool = True, poll_s: float = 1.0) -> Any:
    """Block until `job` ends, streaming its task-0 stdout/stderr to the `cocu.job` logger.

    Returns the result of task 0. A failed or vanished job raises JobFailed (its traceback and log
    paths in the message); Ctrl-C cancels the job.
    """
    if not isinstance(job, SlurmJob):
        return job.result()  # in-process (local, debug): the original exception propagates
    tails = []
    if stream_log:
        paths = job.paths  # task 0 of a multi-task job
        tails = [LogTail(p, lambda line, jid=job.job_id: job_log.info("%s[%s] %s", name, jid, line))
                 for p in (paths.stdout, paths.stderr)]
    try:
        while not job.done():
            for tail in tails:
                tail.poll()
            time.sleep(poll_s)
        for tail in tails:
            tail.poll(final=True)
        return job.results()[0]
    except KeyboardInterrupt:
        log.warning("%s: interrupted, cancelling SLURM job %s", name, job.job_id)
        job.cancel(check=False)
        raise
    except (FailedJobError, UncompletedJobError) as e:
        for tail in tails:
            tail.poll(final=True)
        raise JobFailed(_failure_message(job, name, e)) from None


def _failure_message(job: Any, name: str, error: Exception) -> str:
    try:
        state = job.get_info(mode="force").get("State", "UNKNOWN")
    except Exception:  # sacct missing or slow: the state is a nicety, the trace is the point
        state = "UNKNOWN"
    return (f"{name}: SLURM job {job.job_id} failed (state {state}).\n"
            f"stdout: {job.paths.stdout}\nstderr: {job.paths.stderr}\n{error}")


def run_job(fn: Callable[..., R], *args: Any, cfg: LauncherConfig, name: str,
            folder: Path | str | None = None, stream_log: bool = True, poll_s: float = 1.0) -> R:
    """Run `fn(*args)` as `cfg.cluster` says, wait for it and return its result (task 0's)."""
    job = submit_job(fn, *args, cfg=cfg, name=name, folder=folder)
    return wait_for(job, name, stream_log=stream_log, poll_s=poll_s)


def map_shards(fn: Callable[[Any], R], items: Iterable[Any], cfg: LauncherConfig, name: str,
               folder: Path | str | None = None, poll_s: float = 1.0, resumable: bool = False) -> list[R]:
    """[fn(x) for x in items], as one SLURM job array (one task, at most one GPU each) on slurm.

    For fan-out work such as embedding shards. Locally a plain loop. Results keep the input order;
    if any element fails, JobFailed names every failed element and shows the first error.
    `resumable=True` says that `fn(x)` keeps its finished units on disk and skips them when called
    again: a pre-empted or timed-out element is then requeued (submitit's checkpoint) and resumes;
    otherwise only pre-emption requeues (and the element starts over).
    """
    items = list(items)
    if cfg.cluster == "local" or not items:
        return [fn(x) for x in items]
    ex = make_executor(cfg, name, folder, shard=True)
    jobs = ex.submit_array([(ResumableCall if resumable else JobCall)(fn, x) for x in items])
    if cfg.cluster != "slurm":
        return [job.result() for job in jobs]
    log.info("%s: submitted SLURM array %s (%d elements)", name, jobs[0].job_id.split("_")[0], len(jobs))
    finished = 0
    try:
        while finished < len(jobs):
            time.sleep(poll_s)
            now = sum(job.done() for job in jobs)
            if now != finished:
                log.info("%s: %d/%d array elements done", name, now, len(jobs))
            finished = now
    except KeyboardInterrupt:
        for job in jobs:
            job.cancel(check=False)
        raise
    failed = [(job, job.exception()) for job in jobs]
    failed = [(job, e) for job, e in failed if e is not None]
    if failed:
        ids = ", ".join(job.job_id for job, _ in failed)
        raise JobFailed(f"{name}: {len(failed)}/{len(jobs)} array elements failed ({ids}); first:\n"
                        + _failure_message(failed[0][0], name, failed[0][1]))
    return [job.result() for job in jobs]


# --------------------------------------------------------------------------------------------
# command line


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocu.launch.executor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file (default: params.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the sbatch script the stage would submit "
                             "(default: print the executor parameters)")
    parser.add_argument("--stage", default="cocu", help="job name / stage (default: cocu); one of "
                        f"{', '.join(ARRAY_STAGES)}: that stage's job array (launcher.stages.<stage>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_section(LauncherConfig, "launcher", args.params)
        array = args.stage in ARRAY_STAGES  # an N-sized stage: its job array, with its resources
        tasks = stage_tasks(cfg, args.stage) if array else 0
        job_cfg = stage_launcher(cfg, args.stage) if array else cfg
        if args.dry_run:
            if cfg.cluster != "slurm":
                log.info("launcher.cluster is %r: showing what cluster=slurm would submit", cfg.cluster)
            sys.stdout.write(sbatch_script(job_cfg, args.stage, shard=array, array=tasks))
        else:
            params = {**executor_parameters(job_cfg, args.stage, shard=array), **({"array_tasks": tasks} if array else {})}
            sys.stdout.write(json.dumps({"cluster": cfg.cluster, "folder": str(job_folder(cfg, args.stage)),
                                         "max_requeues": cfg.max_requeues, **params}, indent=2) + "\n")
    except ConfigError as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
