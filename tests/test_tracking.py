"""MLflow tracking: the store's address, tags, and the repo root seen from DVC temp experiments."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from cocu.config import load_params
from cocu.tracking import start_run, tracking_uri
from cocu.tracking.mlflow_tracker import repo_root

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
