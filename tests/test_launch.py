"""cocu.launch.executor / jobs without a cluster: in-process runs, the debug executor, the sbatch dry run."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
import submitit
import yaml
from submitit.helpers import DelayedSubmission

import cocu.launch.distributed  # noqa: F401  (imports torch at collection, not inside a timed test)
from cocu.config import ConfigError, LauncherConfig, from_dict
from cocu.launch import executor as ex
from cocu.launch.jobs import CheckpointableTask, JobCall, distributed_env, master_port
from tests.conftest import LOCAL_LAUNCHER, REPO, write_params

SLURM_2x4 = {  # the repo's launcher keys, a 2-node x 4-GPU pre-training job
    **yaml.safe_load((REPO / "params.yaml").read_text())["launcher"],
    "cluster": "slurm", "partition": "gpu", "nodes": 2, "gpus_per_node": 4, "cpus_per_task": 8, "mem_gb": 256,
    "timeout_min": 1440, "signal_delay_s": 120, "max_requeues": 3, "folder": "logs/submitit",
    "extra_sbatch": {"constraint": "a100", "qos": "high", "exclusive": ""},
}


def _square(x: int) -> int:
    return x * x


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def _boom(x: int) -> None:
    raise ValueError(f"intentional failure on {x}")


def _read_step(run_dir: Path) -> int:
    return len(list(run_dir.iterdir()))


def test_local_runs_in_this_process(tmp_path: Path) -> None:
    cfg = LOCAL_LAUNCHER
    pid, y = ex.run_job(_pid_and_square, 7, cfg=cfg, name="t", folder=tmp_path)
    assert (pid, y) == (os.getpid(), 49)
    assert isinstance(ex.make_executor(cfg, "t", tmp_path), ex.InProcessExecutor)
    assert not any(tmp_path.iterdir())  # no pickles, no logs


def test_local_failure_keeps_the_original_exception(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="intentional failure on 3") as info:
        ex.run_job(_boom, 3, cfg=LOCAL_LAUNCHER, name="t", folder=tmp_path)
    assert any(frame.name == "_boom" for frame in info.traceback)


def test_debug_executor(tmp_path: Path) -> None:
    cfg = replace(LOCAL_LAUNCHER, cluster="debug")
    assert isinstance(ex.make_executor(cfg, "t", tmp_path)._executor, submitit.DebugExecutor)
    assert ex.run_job(_square, 6, cfg=cfg, name="t", folder=tmp_path) == 36


def test_map_shards_keeps_order(tmp_path: Path) -> None:
    assert ex.map_shards(_square, range(5), LOCAL_LAUNCHER, "emb") == [0, 1, 4, 9, 16]
    assert ex.map_shards(_square, [3, 1], replace(LOCAL_LAUNCHER, cluster="debug"), "emb", tmp_path) == [9, 1]


def test_sbatch_dry_run_has_every_resource(tmp_path: Path) -> None:
    cfg = from_dict(LauncherConfig, SLURM_2x4)
    script = ex.sbatch_script(cfg, "pretrain", tmp_path)
    lines = set(script.splitlines())
    for expected in ("#SBATCH --partition=gpu", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4",
                     "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=256GB",
                     "#SBATCH --time=1440", "#SBATCH --signal=USR2@120", "#SBATCH --requeue",
                     "#SBATCH --constraint=a100", "#SBATCH --qos=high", "#SBATCH --exclusive",
                     "#SBATCH --job-name=pretrain", "export SUBMITIT_EXECUTOR=slurm", "export OMP_NUM_THREADS=8"):
        assert expected in lines, f"{expected!r} missing from\n{script}"
    assert f"--output={tmp_path}/%j/%j_0_log.out" in script
    assert "srun --unbuffered" in script and "-m submitit.core._submit" in script
    assert script.index("export OMP_NUM_THREADS=8") < script.index("srun --unbuffered")  # the tasks inherit it


def test_array_elements_get_their_stage_cpus_as_threads(tmp_path: Path) -> None:
    """Each array task's torch gets the CPUs of its stage, not the node's (a cluster that does not bind
    jobs to CPUs would let two 1-CPU tasks on a 2-core node run 2 threads each)."""
    cfg = from_dict(LauncherConfig, SLURM_2x4)
    stages = replace(cfg.stages, evaluate=replace(cfg.stages.evaluate, cpus_per_task=3))
    script = ex.sbatch_script(ex.stage_launcher(replace(cfg, stages=stages), "evaluate"), "evaluate", tmp_path,
                              shard=True, array=4)
    assert "#SBATCH --cpus-per-task=3" in script and "export OMP_NUM_THREADS=3" in script.splitlines()


def test_sbatch_dry_run_without_srun_and_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)  # a laptop: no srun on PATH
    cfg = replace(LOCAL_LAUNCHER, timeout_min=10, signal_delay_s=60)  # dry run shows slurm anyway
    script = ex.sbatch_script(cfg, "embed", tmp_path)
    assert "#SBATCH --ntasks-per-node=1" in script and "#SBATCH --signal=USR2@60" in script
    assert "gpus-per-node" not in script and "--partition" not in script


def test_array_elements_are_single_task(tmp_path: Path) -> None:
    script = ex.sbatch_script(from_dict(LauncherConfig, SLURM_2x4), "embed", tmp_path, shard=True)
    assert "#SBATCH --nodes=1" in script and "#SBATCH --ntasks-per-node=1" in script
    assert "#SBATCH --gpus-per-node=1" in script


def test_signal_delay_must_fit_in_the_time_limit() -> None:
    cfg = replace(LOCAL_LAUNCHER, cluster="slurm", timeout_min=2, signal_delay_s=90)  # gotcha 1: USR2 at start
    with pytest.raises(ConfigError, match="signal_delay_s"):
        ex.executor_parameters(cfg, "t")


def test_cli_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = write_params(tmp_path, launcher={**SLURM_2x4, "folder": str(tmp_path / "jobs")})
    assert ex.main(["--params", str(params), "--dry-run", "--stage", "pretrain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash") and "#SBATCH --nodes=2" in out
    assert f"{tmp_path}/jobs/pretrain/%j" in out


def test_cli_reports_a_bad_params_file(tmp_path: Path) -> None:
    assert ex.main(["--params", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2


def test_checkpoint_requeues_the_same_callable(tmp_path: Path) -> None:
    task = CheckpointableTask(_read_step, tmp_path / "run")
    assert task() == 0 and task.attempt == 1
    delayed = task.checkpoint()
    assert isinstance(delayed, DelayedSubmission)
    assert delayed.function is task and delayed.args == () and delayed.kwargs == {}
    (tmp_path / "run" / "ckpt_1").touch()
    assert delayed.result() == 1 and task.attempt == 2  # the requeued call resumes from run_dir


def test_distributed_env_from_a_slurm_job() -> None:
    env = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
           "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]",
           "RANK": "0", "WORLD_SIZE": "1"}  # stale values copied from the submitting shell
    dist = distributed_env(env)
    assert (dist.rank, dist.world_size, dist.local_rank) == (5, 8, 1)
    exported = tuple(env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"))
    assert exported == ("5", "8", "1", "4")
    assert env["MASTER_ADDR"] == "gpu07" and env["MASTER_PORT"] == str(master_port("4242"))
    assert 20000 <= master_port("4242") < 60000 and master_port("4242") != master_port("4243")


def test_distributed_env_leaves_other_runs_alone() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}  # torchrun
    assert distributed_env(env).rank == 1 and set(env) == {"RANK", "WORLD_SIZE", "LOCAL_RANK"}
    assert distributed_env({}).world_size == 1


def test_log_tail_follows_partial_lines(tmp_path: Path) -> None:
    path, seen = tmp_path / "log.out", []
    tail = ex.LogTail(path, seen.append)
    tail.poll()  # not there yet
    path.write_text("one\ntw")
    tail.poll()
    with path.open("a") as f:
        f.write("o\nthree")
    tail.poll()
    assert seen == ["one", "two"]
    tail.poll(final=True)
    assert seen == ["one", "two", "three"]


def test_job_call_is_a_plain_call_in_process(caplog: pytest.LogCaptureFixture) -> None:
    level = logging.getLogger().level
    assert JobCall(_square, 5)() == 25
    assert logging.getLogger().level == level  # in-process: the caller's logging is untouched


def test_resumable_array_element_requeues_itself(tmp_path: Path) -> None:
    """A resumable element (map_shards(..., resumable=True)) is checkpointable: on USR2 submitit
    requeues the same call, which finds its finished units on disk."""
    from cocu.launch.jobs import ResumableCall

    call = ResumableCall(_read_step, tmp_path)
    (tmp_path / "unit-0").touch()
    assert call() == 1
    delayed = call.checkpoint()
    assert isinstance(delayed, DelayedSubmission) and delayed.function is call
    (tmp_path / "unit-1").touch()
    assert delayed.result() == 2
    assert not hasattr(JobCall(_read_step, tmp_path), "checkpoint")  # plain elements are not requeued on timeout
    assert ex.map_shards(_square, [2, 3], replace(LOCAL_LAUNCHER, cluster="debug"), "r", tmp_path / "jobs",
                          resumable=True) \
        == [4, 9]


def test_cli_dry_run_of_an_array_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stages = {s: {"tasks": 1, "gpus": 0, "cpus_per_task": 2, "mem_gb": 8, "timeout_min": 60, "partition": None}
              for s in ("pairs", "embed", "index", "curate", "evaluate")}
    stages["embed"] = {"tasks": 16, "gpus": 1, "cpus_per_task": 10, "mem_gb": 64, "timeout_min": 720, "partition": None}
    params = write_params(tmp_path, launcher={**SLURM_2x4, "folder": str(tmp_path / "jobs"), "stages": stages,
                                              "array_parallelism": 8})
    assert ex.main(["--params", str(params), "--dry-run", "--stage", "embed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line in ("#SBATCH --array=0-15%8", "#SBATCH --nodes=1", "#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=10", "#SBATCH --mem=64GB", "#SBATCH --time=720", "#SBATCH --partition=gpu"):
        assert line in lines, line
    assert ex.main(["--params", str(params), "--stage", "embed"]) == 0
    assert '"array_tasks": 16' in capsys.readouterr().out


def test_held_signals_are_delivered_after_the_block_in_order() -> None:
    import signal

    from cocu.launch.signals import held_signals

    seen: list[int] = []

    def handler(signum, frame):
        seen.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        with held_signals() as pending:
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # Python runs handlers between bytecodes: give it the chance
                pass
            assert seen == [] and pending == [signal.SIGUSR2, signal.SIGTERM]
        assert seen == [signal.SIGUSR2, signal.SIGTERM]
        assert signal.getsignal(signal.SIGUSR2) is handler and signal.getsignal(signal.SIGTERM) is handler
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_a_preemption_during_a_checkpoint_write_exits_after_the_file_is_whole(tmp_path: Path, monkeypatch) -> None:
    """submitit's USR2 handler requeues and calls sys.exit; arriving inside torch.save it once turned
    into a RuntimeError of the zip writer (the job reported a failure although SLURM requeued it)."""
    import signal

    import torch

    from cocu.training import checkpoint

    def requeue_and_exit(signum, frame):
        raise SystemExit(-1)

    real_save = torch.save

    def save_hit_by_usr2(obj, f):  # the signal arrives while the file is being written
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(100):
            pass
        real_save(obj, f)

    old = signal.signal(signal.SIGUSR2, requeue_and_exit)
    monkeypatch.setattr(checkpoint.torch, "save", save_hit_by_usr2)
    try:
        with pytest.raises(SystemExit):
            checkpoint.save_checkpoint({"w": torch.arange(1000.0)}, tmp_path / "ckpt_00000002.pt")
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert torch.equal(checkpoint.load_checkpoint(tmp_path / "ckpt_00000002.pt")["w"], torch.arange(1000.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_00000002.pt"]  # no temporary file left
