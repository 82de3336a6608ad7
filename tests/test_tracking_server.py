"""Tracking on a cluster: a SLURM job logs its MLflow run through a tracking server (`tracking.uri`).

Starts `mlflow server` on 127.0.0.1 (a free port) with a SQLite backend and an artifact folder on
local disk, in its own process group; submits a real submitit job to the local SLURM whose function
re-reads the params file on the compute node (as the pre-training job does) and logs a run through
`cocu.tracking.start_run`; then checks the run, its params, metrics and artifact in the server's
own store, and stops the server's whole process group. `MLFLOW_TRACKING_URI` is unset first, so
the address can only come from `tracking.uri` in the params file.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, write_params
from .test_mlflow_ui import HOST, free_port, group_members, kill_group, wait_healthy
from .test_slurm import SLURM, _controller_up, job_ids, sacct_states

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not _controller_up(), reason="no SLURM controller (`scontrol ping` failed; "
                       "start one with scripts/slurm_up.sh)"),
]


def _log_a_run(params_file: str) -> dict[str, str]:
    """The job: re-read the params on the compute node and log one run through `cocu.tracking`."""
    from cocu.config import load_params
    from cocu.tracking import start_run, tracking_uri

    params = load_params(params_file)
    note = Path(params_file).parent / "job-note.txt"
    note.write_text(f"written by SLURM job {os.environ['SLURM_JOB_ID']}\n")
    with start_run(params, stage="cluster-probe", tags={"slurm_job_id": os.environ["SLURM_JOB_ID"]}) as run:
        run.log_metrics({"probe/loss": 0.75}, step=0)
        run.log_metrics({"probe/loss": 0.25}, step=1)
        run.log_artifact(note)
        return {"run_id": run.run_id, "uri": tracking_uri(params), "job": os.environ["SLURM_JOB_ID"]}


def test_slurm_job_logs_through_the_tracking_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from cocu.launch.executor import run_job

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # sbatch exports our environment to the job
    server_dir = tmp_path / "server"  # on the server host's local disk: its database and artifacts
    server_dir.mkdir()
    db, artifacts = server_dir / "mlflow.db", server_dir / "artifacts"
    port = free_port()
    base = f"http://{HOST}:{port}"
    params_file = write_params(tmp_path, tracking={"experiment": "cocu-cluster-test", "uri": base})
    log = tmp_path / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
             "--artifacts-destination", str(artifacts), "--host", HOST, "--port", str(port), "--workers", "1"],
            cwd=server_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(base, proc, log, timeout=120.0)
        cfg = dataclasses.replace(SLURM, mem_gb=2)
        done = run_job(_log_a_run, str(params_file), cfg=cfg, name="mlflow-probe", folder=tmp_path / "jobs",
                       poll_s=0.5)
        (job_id,) = job_ids(tmp_path / "jobs")
        assert done["job"] == job_id and done["uri"] == base
        assert sacct_states(job_id) == ["COMPLETED"]

        client = MlflowClient(tracking_uri=base)
        run = client.get_run(done["run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["stage"] == "cluster-probe" and run.data.tags["slurm_job_id"] == job_id
        assert run.data.params["tracking.uri"] == base and run.data.params["world.size"] == "smoke"
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "probe/loss")] == \
            [(0, 0.75), (1, 0.25)]
        experiment = client.get_experiment(run.info.experiment_id)
        assert experiment.name == "cocu-cluster-test"
        assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server's store, not a local path
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["job-note.txt"]
    finally:
        kill_group(proc)
    assert group_members(proc.pid) == [], "processes of the mlflow server's group survived"
    # what the server wrote on its own disk: the run in its SQLite store, the artifact in its folder
    with sqlite3.connect(db) as con:
        params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (done["run_id"],)))
        metrics = con.execute("SELECT step, value FROM metrics WHERE run_uuid = ? AND key = 'probe/loss' "
                              "ORDER BY step", (done["run_id"],)).fetchall()
    assert params["tracking.uri"] == base and params["tracking.experiment"] == "cocu-cluster-test"
    assert metrics == [(0, 0.75), (1, 0.25)]
    (note,) = artifacts.rglob("job-note.txt")
    assert note.read_text() == f"written by SLURM job {job_id}\n"
    assert not (REPO / "mlruns" / done["run_id"]).exists()
