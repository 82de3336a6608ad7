"""MLflow tracking: the store's address, tags, and the repo root seen from DVC temp experiments."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import subprocess
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from cocu.config import load_params
from cocu.tracking import start_run, tracking_uri
from cocu.tracking.mlflow_tracker import git_commit, is_server, repo_root

from .conftest import REPO


def test_repo_root_from_dvc_temp_experiment(tmp_path):
    temp = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    temp.mkdir(parents=True)
    assert repo_root(temp) == tmp_path / "proj"
    assert repo_root(REPO / "cocu") == REPO


def test_default_uri_is_absolute_sqlite_at_repo_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(REPO / "params.yaml")
    uri = tracking_uri(params, root=tmp_path)
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert uri.startswith("sqlite:////")  # absolute
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(params) == "http://127.0.0.1:5999"


def test_run_is_tagged_and_logged(mlflow_store):
    params = load_params(REPO / "params.yaml")
    with start_run(params, stage="unit", tags={"variant": "baseline"}) as run:
        run.log_metrics({"loss": 1.5}, step=0)
        run.log_metrics({"loss": 0.5}, step=1)
        run_id = run.run_id
    got = MlflowClient(tracking_uri=mlflow_store).get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.tags["stage"] == "unit"
    assert got.data.tags["profile"] == "synthetic"
    assert got.data.tags["variant"] == "baseline"
    assert len(got.data.tags["git_commit"]) >= 7
    assert got.data.params["world.mention_rate"] == "0.4"
    history = MlflowClient(tracking_uri=mlflow_store).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.5), (1, 0.5)]
    assert mlflow.get_experiment(got.info.experiment_id).name == params.tracking.experiment


def _start_one(args: tuple[str, int]) -> str:
    uri, i = args
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        with start_run(load_params(REPO / "params.yaml"), stage=f"concurrent-{i}", log_params=False) as run:
            run.log_metrics({"x": float(i)})
        return "ok"
    except Exception as e:  # reported, so the assertion names the error
        return f"{type(e).__name__}: {e}"[:300]


def test_runs_starting_at_once_on_a_new_store_all_succeed(tmp_path):
    # without the store lock every try of this failed: each process created the new store's tables
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_start_one, [(uri, i) for i in range(3)])
    assert results == ["ok"] * 3
    runs = MlflowClient(tracking_uri=uri).search_runs(
        [MlflowClient(tracking_uri=uri).get_experiment_by_name(load_params(REPO / "params.yaml").tracking.experiment).experiment_id])
    assert sorted(r.data.tags["stage"] for r in runs) == ["concurrent-0", "concurrent-1", "concurrent-2"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=cocu", "-c", "user.email=cocu@example.invalid", *args],
                          cwd=root, capture_output=True, text=True, check=True).stdout


DVC_LOCK = """schema: '2.0'
stages:
  pairs:
    cmd: python pipelines/pairs.py
    outs:
    - path: metrics/pairs.json
      hash: md5
      md5: 0
    - path: results/cocu/s0
      hash: md5
      md5: 0
"""


def test_dirty_means_code_or_config_not_pipeline_outputs(tmp_path):
    """`-dirty` flags a changed tracked file that is not an output `dvc.lock` records."""
    git(tmp_path, "init", "-q")
    for name, text in {"dvc.lock": DVC_LOCK, "metrics/pairs.json": "{}\n", "results/cocu/s0/voc.json": "{}\n",
                       "results/cocu/s0.json": "{}\n", "params.yaml": "a: 1\n", "cocu/x.py": "x = 1\n",
                       "metrics/pairs.json.md": "notes\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "init")
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "metrics/pairs.json").write_text('{"pairs": 2}\n')  # a stage rewrote its metrics
    (tmp_path / "results/cocu/s0/voc.json").write_text('{"mIoU": 3}\n')  # a file inside an output folder
    (tmp_path / "dvc.lock").write_text(DVC_LOCK + "# changed\n")
    (tmp_path / "untracked.txt").write_text("new\n")
    assert git_commit(tmp_path) == head
    for name in ("params.yaml", "cocu/x.py", "results/cocu/s0.json", "metrics/pairs.json.md"):  # not outputs
        before = (tmp_path / name).read_text()
        (tmp_path / name).write_text(before + "# edit\n")
        assert git_commit(tmp_path) == head + "-dirty", name
        (tmp_path / name).write_text(before)
    git(tmp_path, "mv", "results/cocu/s0/voc.json", "results/cocu/s0/voc20.json")  # renamed inside an output
    assert git_commit(tmp_path) == head
    git(tmp_path, "mv", "cocu/x.py", "cocu/y.py")  # a staged rename of code
    assert git_commit(tmp_path) == head + "-dirty"


def test_dirty_without_dvc_lock_counts_every_tracked_change(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "metrics.json").write_text("{}\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "init")
    (tmp_path / "metrics.json").write_text('{"a": 1}\n')
    assert git_commit(tmp_path).endswith("-dirty")
    assert git_commit(Path("/")) == "unknown"


def test_tracking_uri_from_params_names_a_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(REPO / "params.yaml")
    server = dataclasses.replace(params, tracking=dataclasses.replace(params.tracking, uri="http://login01:5000"))
    assert tracking_uri(server) == "http://login01:5000" and is_server(tracking_uri(server))
    assert not is_server(tracking_uri(params)) and tracking_uri(params).startswith("sqlite:///")
    assert is_server("HTTPS://mlflow.example.org")
