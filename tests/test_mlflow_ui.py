"""The documented way to compare runs, `mlflow server`/`mlflow ui`, serves our runs from a sqlite store.

Starts a real server on 127.0.0.1 in its own session (process group), checks runs, params and metric
histories through the REST API, then kills the whole group and checks that nothing of it is left
(MLflow 3.x spawns job-runner children that outlive a plain kill of the server).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the server's process group, wait, then SIGKILL whatever is left of it."""
    pgid = proc.pid  # start_new_session: the server leads its own group
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc.poll() is None or group_members(pgid)):
        time.sleep(0.2)
    if proc.poll() is None or group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and group_members(pgid):
        time.sleep(0.1)


def request(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                if resp.status == 200 and resp.read().strip() == b"OK":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def make_runs(uri: str, artifacts: Path) -> tuple[str, dict[str, dict]]:
    """Two runs (baseline, cocu) with params and stepped metrics, as the pipeline logs them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cocu-ui-test", artifact_location=artifacts.as_uri())
    runs = {}
    for variant, offset in (("baseline", 0.5), ("cocu", 0.0)):
        run = client.create_run(exp, run_name=variant, tags={"variant": variant, "dvc_exp_name": "ui-test"})
        rid = run.info.run_id
        client.log_param(rid, "variant", variant)
        client.log_param(rid, "index.num_neighbours", "8")
        losses = [3.0 - 0.5 * s + offset for s in range(4)]
        for step, loss in enumerate(losses):
            client.log_metric(rid, "train/loss", loss, step=step, timestamp=1_700_000_000_000 + step)
        client.log_metric(rid, "synth_all/mIoU", 30.0 + 10 * (variant == "cocu"), step=0)
        client.set_terminated(rid)
        runs[rid] = {"variant": variant, "losses": losses}
    return exp, runs


def test_mlflow_server_serves_runs_params_and_curves(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp, runs = make_runs(uri, tmp_path / "artifacts")
    port = free_port()
    base = f"http://{HOST}:{port}"
    log = tmp_path / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
             "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--host", HOST, "--port", str(port),
             "--workers", "1"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(base, proc, log)
        assert proc.pid in group_members(proc.pid)  # the group check below sees the server's processes
        found = request(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp], "max_results": 10})["runs"]
        assert {r["info"]["run_id"] for r in found} == set(runs)
        for r in found:
            rid = r["info"]["run_id"]
            params = {p["key"]: p["value"] for p in r["data"]["params"]}
            assert params == {"variant": runs[rid]["variant"], "index.num_neighbours": "8"}
            tags = {t["key"]: t["value"] for t in r["data"]["tags"]}
            assert tags["variant"] == runs[rid]["variant"] and tags["dvc_exp_name"] == "ui-test"
            history = request(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={rid}&metric_key=train/loss")
            points = sorted((m["step"], m["value"]) for m in history["metrics"])
            assert points == list(enumerate(runs[rid]["losses"]))
            latest = {m["key"]: m["value"] for m in r["data"]["metrics"]}
            assert latest["synth_all/mIoU"] == (40.0 if runs[rid]["variant"] == "cocu" else 30.0)
    finally:
        kill_group(proc)
    assert proc.returncode is not None
    assert group_members(proc.pid) == [], "processes of the mlflow server's group survived"
