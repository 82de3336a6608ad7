"""Shared fixtures: CPU only, small sizes, every path under a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU unless a test opts in
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def repo() -> Path:
    return REPO


def write_params(tmp_path: Path, **overrides: dict) -> Path:
    """A copy of the repo's params.yaml at smoke size with every path under `tmp_path`.

    `overrides` are section -> {key: value} updates applied on top (one level deep).
    """
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in raw["paths"].items():
        if value is None:
            continue
        if key in ("vocabulary", "synonyms", "paper_numbers"):  # committed inputs: the repo's copies
            raw["paths"][key] = str(REPO / value)
        else:
            raw["paths"][key] = str(tmp_path / value)
    raw["world"]["size"] = "smoke"
    raw["launcher"]["folder"] = str(tmp_path / "logs" / "submitit")
    for section, values in overrides.items():
        if isinstance(raw.get(section), dict) and isinstance(values, dict):
            raw[section].update(values)
        else:
            raw[section] = values
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def smoke_params(tmp_path: Path) -> Path:
    return write_params(tmp_path)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private MLflow store for one test (MLFLOW_TRACKING_URI wins over params)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    import mlflow

    mlflow.set_tracking_uri(None)
