"""cocu.launch on a real SLURM cluster (scripts/slurm_up.sh; CI runs .ci/slurm.sh).

Skipped when there is no controller (`scontrol ping` fails at once; `sinfo` would take 9 s). The job
functions live in this module, which the jobs import (their working directory is the repo root).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from cocu.config import LauncherConfig
from cocu.launch.executor import CheckpointableTask, JobFailed, map_shards, run_job, submit_job, wait_for
from tests.conftest import BASE_TRAIN, LOCAL_LAUNCHER

REPO = Path(__file__).resolve().parents[1]


def _controller_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=10).returncode == 0


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not _controller_up(), reason="no SLURM controller (`scontrol ping` failed; "
                       "start one with scripts/slurm_up.sh)"),
]

# 1 CPU per task so two jobs fit on a 2-core CI node; timeout_min*60 > signal_delay_s + 30 (gotcha 1)
SLURM = replace(LOCAL_LAUNCHER, cluster="slurm", partition=os.environ.get("COCU_SLURM_PARTITION", "debug"),
                cpus_per_task=1, mem_gb=1, timeout_min=5, signal_delay_s=30, max_requeues=3)
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


def sacct_states(job_id: str, rows: int = 1, timeout_s: float = 30) -> list[str]:
    """States of every run or array element of `job_id` (-D: requeued runs too), once there are
    `rows` of them (slurmdbd records array elements and requeues with a lag) and all are final."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-D", "-n", "-P", "-o", "State"],
                             capture_output=True, text=True, check=True).stdout
        states = [s.split()[0] for s in out.split()]  # "CANCELLED by 0" -> "CANCELLED"
        done = len(states) >= rows and all(s in FINAL | {"REQUEUED"} for s in states)
        if done or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def job_ids(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name.isdigit())


def _hello(x: int) -> int:
    print(f"hello from job {os.environ['SLURM_JOB_ID']}", flush=True)
    return x * x


@dataclass
class Accumulate:
    """A deterministic stand-in for training: `steps` updates, one checkpoint file per step,
    resuming from the newest; appends one line to starts.txt per start."""

    steps: int = 8
    step_s: float = 0.0

    def __call__(self, run_dir: Path) -> list[float]:
        with (run_dir / "starts.txt").open("a") as f:
            f.write(f"{os.environ.get('SLURM_RESTART_COUNT', '-')}\n")
        ckpts = sorted(run_dir.glob("step_*.npy"))
        step = int(ckpts[-1].stem.split("_")[1]) if ckpts else 0
        x = np.load(ckpts[-1]) if ckpts else np.zeros(16)  # [16]
        w = np.random.default_rng(0).standard_normal((16, 16)) / 4  # [16, 16]
        while step < self.steps:
            x = np.tanh(w @ x + step)
            step += 1
            np.save(run_dir / "tmp.npy", x)
            os.replace(run_dir / "tmp.npy", run_dir / f"step_{step:03d}.npy")  # atomic
            time.sleep(self.step_s)
        return x.tolist()


def test_job_completes_in_sacct_and_streams_its_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    assert run_job(_hello, 7, cfg=SLURM, name="hello", folder=tmp_path, poll_s=0.2) == 49
    (job_id,) = job_ids(tmp_path)
    assert f"hello from job {job_id}" in caplog.text  # the job's stdout came through our log
    assert sacct_states(job_id) == ["COMPLETED"]


SLOW_SCONTROL = """#!/bin/bash
# scontrol, but `requeue` lingers 2 s after it is done: the SIGTERM that the requeue sends to the
# job's processes reaches it while it still runs (KillWait=5 in slurm_up.sh: SIGKILL comes later)
{real} "$@"; rc=$?
[ "$1" = requeue ] && sleep 2
exit $rc
"""


def test_requeue_survives_the_sigterm_it_triggers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pre-empted job requeues and resumes from its checkpoint to the uninterrupted result. The
    `scontrol requeue` that requeues it SIGTERMs the job, its own process included; a slow one must
    not die of it (in CI it once did: the job wrote a failed result although SLURM had requeued it)."""
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "scontrol").write_text(SLOW_SCONTROL.format(real=shutil.which("scontrol")))
    (shims / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")  # sbatch exports it to the job
    run_dir = tmp_path / "run"
    job = submit_job(CheckpointableTask(Accumulate(steps=6, step_s=0.5), run_dir), cfg=SLURM, name="ckpt",
                     folder=tmp_path / "jobs")
    deadline = time.monotonic() + 60
    while not list(run_dir.glob("step_*.npy")):
        assert time.monotonic() < deadline and not job.done(), "job wrote no checkpoint"
        time.sleep(0.2)
    job._interrupt()  # what SLURM does on pre-emption: SIGTERM, then USR2
    assert wait_for(job, "ckpt", poll_s=0.5) == Accumulate(steps=6)(tmp_path)  # as if uninterrupted
    assert (run_dir / "starts.txt").read_text().split() == ["-", "1"]  # two starts, the 2nd a restart
    assert sacct_states(job.job_id, rows=2) == ["REQUEUED", "COMPLETED"]

STAGE_FUNCTIONS = """
def train_step(x):
    raise ValueError(f"loss is NaN at step {x}")
"""
FAILING_STAGE = """
import logging, sys
from dataclasses import replace
from cocu.config import load_params
from cocu.launch.executor import run_job
from stagefns import train_step

logging.basicConfig(level=logging.INFO)
cfg = replace(load_params("params.yaml").launcher, cluster="slurm", partition=sys.argv[2], cpus_per_task=1, mem_gb=1,
              timeout_min=5, signal_delay_s=30)
run_job(train_step, 17, cfg=cfg, name="failing", folder=sys.argv[1], poll_s=0.2)
"""


def test_failed_job_shows_its_traceback_in_the_calling_process(tmp_path: Path) -> None:
    (tmp_path / "stagefns.py").write_text(STAGE_FUNCTIONS)  # importable by the job, like cocu/ is
    (tmp_path / "stage.py").write_text(FAILING_STAGE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    cmd = [sys.executable, str(tmp_path / "stage.py"), str(tmp_path / "jobs"), SLURM.partition or "debug"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ValueError: loss is NaN at step 17" in out
    assert 'raise ValueError(f"loss is NaN at step {x}")' in out  # the job's traceback, source line
    assert "JobFailed" in out and "_log.err" in out  # our exception, with the log path
    (job_id,) = job_ids(tmp_path / "jobs")
    assert sacct_states(job_id) == ["FAILED"]


def test_map_shards_is_one_job_array(tmp_path: Path) -> None:
    assert map_shards(_hello, [1, 2, 3], SLURM, "shards", tmp_path, poll_s=0.2) == [1, 4, 9]
    folders = sorted(d.name for d in tmp_path.iterdir() if d.is_dir() and "_" in d.name)
    (array_id,) = {name.split("_")[0] for name in folders}  # one array: folders <array id>_<index>
    assert folders == [f"{array_id}_{i}" for i in range(3)]
    assert sacct_states(array_id, rows=3) == ["COMPLETED"] * 3


def _torch_threads(_: int) -> int:
    import torch

    return torch.get_num_threads()


def test_array_task_uses_the_cpus_it_was_given(tmp_path: Path) -> None:
    """This cluster does not bind a job to its CPUs (TaskPlugin=task/none, as some real ones), so torch
    would size its pool by the node's cores; two 1-CPU tasks side by side then run 2 threads each.
    The job script's OMP_NUM_THREADS gives each task's torch its cpus_per_task."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("a 1-core node cannot tell the node's cores from the task's")
    assert map_shards(_torch_threads, [0, 1], SLURM, "threads", tmp_path, poll_s=0.2) == [1, 1]


def test_failing_array_element_is_named(tmp_path: Path) -> None:
    with pytest.raises(JobFailed, match=r"1/2 array elements failed \(\d+_1\)[\s\S]*intentional"):
        map_shards(_fail_on_odd, [2, 3], SLURM, "shards", tmp_path, poll_s=0.2)


def _fail_on_odd(x: int) -> int:
    if x % 2:
        raise RuntimeError(f"intentional failure on {x}")
    return x


def _all_reduce_rank() -> tuple[int, int, float, str]:
    import torch
    import torch.distributed as tdist

    from cocu.launch.distributed import destroy_process_group, init_process_group
    from cocu.launch.jobs import distributed_env

    dist = distributed_env()
    init_process_group(dist)
    total = torch.tensor([dist.rank + 1.0])
    tdist.all_reduce(total)
    destroy_process_group()
    return dist.rank, dist.world_size, total.item(), os.environ["MASTER_ADDR"]


def test_multi_task_job_forms_a_process_group(tmp_path: Path) -> None:
    cfg = dataclasses.replace(SLURM, tasks_per_node=2)  # 2 CPU ranks on one node
    job = submit_job(_all_reduce_rank, cfg=cfg, name="ddp", folder=tmp_path)
    assert job.num_tasks == 2
    rank0 = wait_for(job, "ddp", poll_s=0.5)
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert rank0 == (0, 2, 3.0, host)
    assert [r[:3] for r in job.results()] == [(0, 2, 3.0), (1, 2, 3.0)]


@dataclass
class TinyPretrain:
    """A few steps of tiny GroupViT pre-training on random pairs (cocu.training.loop.train)."""

    steps: int = 4
    checkpoint_every: int = 2

    def __call__(self, run_dir: Path):  # -> cocu.training.loop.TrainResult
        import torch

        from cocu.config import tiny_model_config
        from cocu.launch.device import resolve_device
        from cocu.launch.jobs import distributed_env
        from cocu.models.factory import build_model
        from cocu.training.batches import InMemoryBatches, random_pairs
        from cocu.training.loop import train

        torch.set_num_threads(1)
        cfg = replace(BASE_TRAIN, batch_size=4, epochs=1, warmup_epochs=0, steps=self.steps, warmup_steps=1,
                      checkpoint_every=self.checkpoint_every, log_every=2, num_prompts=2, amp=False)
        model_cfg = tiny_model_config()
        torch.manual_seed(0)
        model = build_model(model_cfg)
        images, texts, prompts = random_pairs(16, model_cfg.image.img_size, model_cfg.text.context_length, 2)
        dist = distributed_env()
        return train(model, cfg, InMemoryBatches(images, texts, prompts, cfg.batch_size), run_dir, dist,
                     resolve_device("auto", dist.local_rank))


def test_tiny_pretraining_runs_as_a_slurm_job(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_job(CheckpointableTask(TinyPretrain(steps=4), run_dir), cfg=SLURM, name="pretrain",
                     folder=tmp_path / "jobs", poll_s=0.5)
    assert result.finished and result.step == 4 and result.resumed_from is None
    assert result.checkpoint == run_dir / "ckpt_00000004.pt" and result.checkpoint.is_file()
    (job_id,) = job_ids(tmp_path / "jobs")
    assert sacct_states(job_id) == ["COMPLETED"]


def test_preempted_pretraining_resumes_to_the_same_weights(tmp_path: Path) -> None:
    import torch

    from cocu.training.checkpoint import load_checkpoint

    task = TinyPretrain(steps=8, checkpoint_every=2)
    local = LOCAL_LAUNCHER
    reference = run_job(CheckpointableTask(task, tmp_path / "ref"), cfg=local, name="ref")
    run_dir = tmp_path / "run"
    job = submit_job(CheckpointableTask(task, run_dir), cfg=SLURM, name="pretrain", folder=tmp_path / "jobs")
    deadline = time.monotonic() + 120
    while not list(run_dir.glob("ckpt_*.pt")):
        assert time.monotonic() < deadline and not job.done(), "job wrote no checkpoint"
        time.sleep(0.1)
    job._interrupt()
    result = wait_for(job, "pretrain", poll_s=0.5)
    assert result.finished and result.step == 8 and result.resumed_from is not None
    assert sacct_states(job.job_id, rows=2) == ["REQUEUED", "COMPLETED"]
    ours, theirs = (load_checkpoint(r.checkpoint)["model"] for r in (result, reference))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# ----------------------------------------------------------------------------------------------
# the N-sized stages as SLURM job arrays of 3 tasks write what one task in process writes
# (tests/test_scaleout.py has the inputs, and 1, 2, 4 tasks through submitit's debug executor;
# benchmarks/scaleout.py times 1, 2 and 4 tasks on SLURM). The two run side by side (threads).

SPLITS = (1, 3)  # 1: in process (the reference), 3: an array on SLURM (more tasks than cores)


def _stage_launcher(folder: Path, stage: str, tasks: int) -> LauncherConfig:
    from tests.test_scaleout import launcher

    base = launcher("slurm" if tasks > 1 else "local")
    one = dataclasses.replace(getattr(base.stages, stage), tasks=tasks, gpus=0, cpus_per_task=1, mem_gb=2,
                              timeout_min=10, partition=SLURM.partition)
    return dataclasses.replace(base, folder=str(folder), signal_delay_s=SLURM.signal_delay_s,
                               stages=dataclasses.replace(base.stages, **{stage: one}))


def _splits(run, tmp_path: Path, stage: str, splits=SPLITS) -> dict[int, object]:
    """{tasks: run(out_dir, launcher)} for each split, submitted side by side."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(splits)) as pool:
        futures = {t: pool.submit(run, tmp_path / f"t{t}", _stage_launcher(tmp_path / "jobs", stage, t))
                   for t in splits}
        return {t: f.result() for t, f in futures.items()}


def _bytes(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob(pattern)) if p.is_file()}


def test_pairs_validation_array_on_slurm(tmp_path: Path) -> None:
    from cocu.data import manifest
    from cocu.data.pairs import validate_shards
    from cocu.data.shards import SkipCounter
    from tests.test_scaleout import messy_shards

    shards = messy_shards(tmp_path / "shards")
    serial_counter = SkipCounter()
    serial = manifest.index_shards(shards, serial_counter)

    def run(out: Path, cfg: LauncherConfig):
        counter = SkipCounter()
        frame = validate_shards(shards, PAIRS, counter, cfg, "pairs", out / "m.parquet")
        manifest.write_manifest(frame, out / "m.parquet")
        return counter.as_dict()

    counts = _splits(run, tmp_path, "pairs")
    manifest.write_manifest(serial, tmp_path / "serial.parquet")
    for t in SPLITS:
        assert (tmp_path / f"t{t}" / "m.parquet").read_bytes() == (tmp_path / "serial.parquet").read_bytes()
        assert counts[t] == serial_counter.as_dict()
    assert len(job_ids(tmp_path / "jobs" / "pairs-pairs")) == 1  # the one SLURM array (1 task: in process)


def test_embed_array_on_slurm(tmp_path: Path, embed_corpus_inputs) -> None:
    from cocu.clip.jobs import embed_corpus

    _, _, inputs = embed_corpus_inputs
    stats = _splits(lambda out, cfg: embed_corpus(inputs(out), cfg), tmp_path, "embed")
    assert _bytes(tmp_path / "t1") == _bytes(tmp_path / "t3")
    assert [stats[t]["tasks"] for t in SPLITS] == [1, 3]
    assert stats[1]["duplicates_skipped"] == stats[3]["duplicates_skipped"] == 2


def test_index_array_on_slurm(tmp_path: Path, index_embeddings: Path) -> None:
    from tests.test_scaleout import index_cfg
    from cocu.concepts.retrieval import run_index

    for kind in ("flat",):  # the approximate kinds split the same way (tests/test_scaleout.py)
        cfg = index_cfg(type=kind, num_neighbours=6, nlist=16, nprobe=2, train_size=700, block_size=64,
                          batch_size=50, recall_sample=100)
        _splits(lambda out, lc: run_index(index_embeddings, cfg, lc, out / "trained", out / "nb.npy", out / "sims.npy"),
                tmp_path / kind, "index")
        results = {t: _bytes(tmp_path / kind / f"t{t}", "*.npy") for t in SPLITS}
        assert set(results[1]) == {"nb.npy", "sims.npy"} | ({"trained/order.npy"} if kind == "flat" else set())
        assert results[1] == results[3], kind


def test_curate_array_on_slurm(tmp_path: Path, curation_files) -> None:
    from cocu.concepts.archive import run_curation, run_curation_jobs
    from tests.test_scaleout import curation_cfg

    cfg = curation_cfg(batch_size=5, shard_size=12)
    one = curation_files(tmp_path / "one")
    run_curation(one.image_embeddings, one.neighbours, *one.load(), one.archives, cfg, progress=False)
    _splits(lambda out, lc: run_curation_jobs(curation_files(out), cfg, lc), tmp_path, "curate")
    for t in SPLITS:
        assert _bytes(tmp_path / f"t{t}", "archive-*") == _bytes(tmp_path / "one", "archive-*"), t


def test_evaluate_array_on_slurm(tmp_path: Path, eval_inputs) -> None:
    import json

    _, run = eval_inputs
    results = _splits(run, tmp_path, "evaluate")  # 3 tasks for 3 benchmarks
    assert json.dumps(results[1], sort_keys=True) == json.dumps(results[3], sort_keys=True)
    assert _bytes(tmp_path / "t1", "*.png") == _bytes(tmp_path / "t3", "*.png")


@dataclass
class SlowUnits:
    """A resumable array element: units 0..n-1 in order, each marked done on disk; appends its
    start to starts.txt and `<attempt> <unit>` to started.txt as it starts a unit."""

    folder: Path
    n: int = 6
    unit_s: float = 0.5

    def __call__(self, element: int) -> list[int]:
        base = self.folder / f"element{element}"
        base.mkdir(parents=True, exist_ok=True)
        with (base / "starts.txt").open("a") as f:
            f.write(f"{os.environ.get('SLURM_RESTART_COUNT', '-')}\n")
        for unit in range(self.n):
            if (base / f"unit-{unit}").exists():
                continue
            with (base / "started.txt").open("a") as f:
                f.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')} {unit}\n")
            time.sleep(self.unit_s)
            (base / f"unit-{unit}").touch()
        return sorted(int(p.name.split("-")[1]) for p in base.glob("unit-*"))


def test_timed_out_array_element_requeues_and_redoes_only_unfinished_units(tmp_path: Path) -> None:
    """A 2-minute limit: submitit counts any USR2 as a time-out (under 10 minutes, always), which
    requeues only a checkpointable call: ResumableCall. A plain JobCall would end FAILED."""
    from cocu.launch.executor import make_executor
    from cocu.launch.jobs import ResumableCall

    work = SlowUnits(tmp_path / "work")
    cfg = dataclasses.replace(SLURM, timeout_min=2, signal_delay_s=60)
    jobs = make_executor(cfg, "units", tmp_path / "jobs", shard=True).submit_array(
        [ResumableCall(work, e) for e in (0, 1)])  # what map_shards(..., resumable=True) submits
    element0 = tmp_path / "work" / "element0"
    deadline = time.monotonic() + 120
    while len(list(element0.glob("unit-*"))) < 2:
        assert time.monotonic() < deadline and not jobs[0].done(), "element 0 finished no unit"
        time.sleep(0.1)
    jobs[0]._interrupt(timeout=True)  # USR2 alone: the time limit is near
    assert [wait_for(job, "units", poll_s=0.5) for job in jobs] == [list(range(6))] * 2
    started = [line.split() for line in (element0 / "started.txt").read_text().splitlines()]
    first = [int(u) for a, u in started if a == "0"]
    again = [int(u) for a, u in started if a == "1"]
    assert len(first) >= 2 and again and sorted(set(first) | set(again)) == list(range(6))
    assert set(first) & set(again) <= {first[-1]}  # only the unit in progress at the pre-emption is redone
    assert (element0 / "starts.txt").read_text().split() == ["-", "1"]
    assert sacct_states(jobs[0].job_id, rows=2) == ["REQUEUED", "COMPLETED"]


from tests.test_scaleout import (  # noqa: E402,F401 (fixtures)
    PAIRS,
    curation_files,
    embed_corpus_inputs,
    eval_inputs,
    index_embeddings,
)
