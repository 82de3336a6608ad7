"""What runs inside a launched job: logging, the torch.distributed environment, pre-emption.

`executor.py` submits these objects; they are pickled (cloudpickle) into the job folder and called
by `python -m submitit.core._submit` on the compute node, once per task (nodes x tasks_per_node).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import submitit
from submitit.helpers import DelayedSubmission

if TYPE_CHECKING:
    from cocu.launch.distributed import DistInfo

log = logging.getLogger(__name__)
R = TypeVar("R")

MASTER_PORT_RANGE = (20000, 60000)  # submitit's range; the port is a hash of the job id, so two jobs
# sharing a node rarely collide and a requeued job gets the same port again


def configure_job_logging() -> None:
    """INFO logs to stderr in a job's own process (the caller's `logging.basicConfig` does not
    travel); in-process runs (local, debug) keep the caller's logging as it is."""
    if os.environ.get("SUBMITIT_EXECUTOR") not in ("slurm", "local"):
        return
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    logging.getLogger("submitit").propagate = False  # it has its own handlers: no duplicate lines


def master_port(job_id: str) -> int:
    """A port every task of one job agrees on without talking: a hash of the job id."""
    lo, hi = MASTER_PORT_RANGE
    return lo + zlib.crc32(job_id.encode()) % (hi - lo)


def export_distributed_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Inside a submitit SLURM job, set the torch.distributed `env://` variables from the job.

    RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE come from SLURM_PROCID, SLURM_NTASKS,
    SLURM_LOCALID and SLURM_JOB_NUM_NODES; MASTER_ADDR is the first host of SLURM_JOB_NODELIST and
    MASTER_PORT a hash of SLURM_JOB_ID. They overwrite whatever `sbatch --export=ALL` copied from the
    submitting shell. Elsewhere (local, debug, torchrun) nothing changes. Returns what was set.
    CUDA_VISIBLE_DEVICES is not touched: a task's device is `cuda:LOCAL_RANK` (`resolve_device`).
    """
    env = os.environ if environ is None else environ
    if env.get("SUBMITIT_EXECUTOR") != "slurm":
        return {}
    exported = _slurm_distributed_vars(env)
    env.update(exported)
    return exported


def distributed_env(environ: dict[str, str] | None = None) -> "DistInfo":
    """`export_distributed_env()`, then the resulting `DistInfo` for `init_process_group`."""
    env = os.environ if environ is None else environ
    export_distributed_env(env)
    from cocu.launch.distributed import from_env  # imports torch: only when asked for

    return from_env(dict(env))


def _slurm_distributed_vars(env: dict[str, str]) -> dict[str, str]:
    from submitit.slurm.slurm import _parse_node_list

    nodes = _parse_node_list(env["SLURM_JOB_NODELIST"]) if env.get("SLURM_JOB_NODELIST") else ["localhost"]
    num_tasks = int(env.get("SLURM_NTASKS", 1))
    num_nodes = int(env.get("SLURM_JOB_NUM_NODES", 1))
    return {
        "RANK": env.get("SLURM_PROCID", "0"),
        "WORLD_SIZE": str(num_tasks),
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "LOCAL_WORLD_SIZE": str(max(1, num_tasks // num_nodes)),
        "MASTER_ADDR": nodes[0],
        "MASTER_PORT": str(master_port(env.get("SLURM_JOB_ID", "0"))),
    }


class JobCall(Generic[R]):
    """`fn(*args)` inside a job, after setting up logging and the distributed environment."""

    def __init__(self, fn: Callable[..., R], *args: Any) -> None:
        self.fn = fn
        self.args = args

    def __call__(self) -> R:
        configure_job_logging()
        export_distributed_env()
        return self.fn(*self.args)


class ResumableCall(JobCall[R]):
    """`fn(*args)` as an array element whose work is resumable on disk (finished units kept and
    skipped when called again). On USR2 (pre-emption, or `signal_delay_s` before the time limit)
    submitit requeues this same call, which resumes; see `CheckpointableTask.checkpoint` for why
    SIGTERM is ignored from then on."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        log.warning("pre-empted or near the time limit: requeueing %s; finished units are kept",
                    getattr(self.fn, "__name__", type(self.fn).__name__))
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return DelayedSubmission(self, *args, **kwargs)


class CheckpointableTask(submitit.helpers.Checkpointable, Generic[R]):
    """`task(run_dir)` as a pre-emptible job.

    The task owns its checkpoints: it writes one every N steps and when it exits, and starts from
    the newest one it finds in `run_dir`. On USR2 (pre-emption, or `signal_delay_s` before the
    time limit) submitit calls `checkpoint()`, pickles the returned submission (this same object)
    in place of the job's, runs `scontrol requeue` and raises SystemExit in the task, which lets
    the task's `finally` write a last checkpoint. The requeued job calls the task again, which
    resumes from there. `attempt` counts the starts (1 for an uninterrupted run).
    """

    def __init__(self, task: Callable[[Path], R], run_dir: Path | str) -> None:
        self.task = task
        self.run_dir = Path(run_dir)
        self.attempt = 0

    def __call__(self) -> R:
        self.attempt += 1
        configure_job_logging()
        export_distributed_env()
        if self.attempt > 1:
            log.info("attempt %d: resuming from the latest checkpoint in %s", self.attempt, self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.task(self.run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Requeue this same callable; its state is on disk in `run_dir`, not in `self`.

        Right after this returns, submitit runs `scontrol requeue JOBID` as a child of this
        process. The requeue makes slurmd SIGTERM every process of the job, that `scontrol` among
        them: if it has not exited yet it dies, submitit raises CalledProcessError, and the job
        writes a *failed* result although SLURM did requeue it (seen in CI). So SIGTERM is ignored
        from here on: `scontrol` inherits the ignore across exec and finishes; this process
        already treated SIGTERM as a no-op (submitit's `bypass`), and SLURM's SIGKILL after
        KillWait still ends it if the SystemExit that follows does not.
        """
        log.warning("pre-empted or near the time limit after attempt %d: requeueing %s",
                    self.attempt, getattr(self.task, "__name__", type(self.task).__name__))
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return DelayedSubmission(self, *args, **kwargs)
