"""Shared fixtures: CPU only, small sizes, every path under a temporary folder."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU unless a test opts in
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
import yaml

from cocu.config import TrainConfig, load_params

REPO = Path(__file__).resolve().parents[1]

# Configs that tests vary with `dataclasses.replace`. Configs have no defaults, so every value is
# stated here: the paper's optimiser settings (lrs at a reference batch of 4096); the launcher is the
# repo's params.yaml section, run locally.
BASE_TRAIN = TrainConfig(batch_size=256, epochs=30, warmup_epochs=2, steps=None, warmup_steps=None, accum_steps=1,
                         base_lr=1.6e-3, warmup_lr=4e-6, min_lr=4e-5, lr_reference_batch=4096, weight_decay=0.05,
                         betas=(0.9, 0.999), clip_grad=5.0, amp=True, amp_dtype="bf16", num_prompts=3,
                         mlc_weight=1.0, checkpoint_every=1000, keep_checkpoints=2, log_every=10, seed=0)
LOCAL_LAUNCHER = dataclasses.replace(load_params(REPO / "params.yaml").launcher, cluster="local", folder="logs/submitit")


def section(cls: type, name: str, **overrides: object) -> object:
    """The `name` section of the repo's params.yaml as `cls`, with `overrides` (configs have no
    defaults: tests state only what they vary)."""
    from cocu.config import from_dict

    raw = yaml.safe_load((REPO / "params.yaml").read_text())[name]
    return from_dict(cls, {**raw, **overrides}, source=f"params.yaml section {name} (test)")


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


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar of (member name, bytes), in order, exactly as given (no validation: tests write bad shards)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
