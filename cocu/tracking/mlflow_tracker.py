"""MLflow behind a small protocol: `log_params`, `log_metrics(step=)`, `log_artifact`, `set_tags`.

The embedded default store is a SQLite file at the repository root, addressed by an absolute
URI so that `dvc exp run --temp/--queue` (which run in `.dvc/tmp/exps/...` copies of the repo)
log into the same store as `dvc repro`. `MLFLOW_TRACKING_URI` overrides everything.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from cocu.config import Params, flatten, to_dict

log = logging.getLogger(__name__)

_EXP_TMP = "/.dvc/tmp/exps/"


class Tracker(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...


class NullTracker:
    """Logs nothing: non-main ranks and unit tests."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass


class MlflowTracker:
    """The active MLflow run, as a Tracker."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        items = list(flatten(to_dict(dict(params))).items())  # tuples as lists: one spelling per value
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            mlflow.log_params({k: _short(v) for k, v in items[i : i + 100]})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items() if v is not None}, step=step)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def metric_name(key: str) -> str:
    """MLflow allows alphanumerics, `_-. :/` in names: `caption+top3` -> `caption_plus_top3`."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("+", "_plus_"))


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def repo_root(start: Path | str | None = None) -> Path:
    """The main repository root, also from inside a `dvc exp run --temp/--queue` copy."""
    here = Path(start or Path.cwd()).resolve()
    text = here.as_posix() + "/"
    if _EXP_TMP in text:
        return Path(text[: text.index(_EXP_TMP)])
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists() or (candidate / ".dvc").is_dir():
            return candidate
    return here


def tracking_uri(params: Params, root: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else `tracking.uri`, else sqlite at `<repo root>/<paths.mlflow_db>`."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if params.tracking.uri:
        return params.tracking.uri
    root = root or repo_root()
    return f"sqlite:///{(root / params.paths.mlflow_db).resolve().as_posix()}"


def git_commit(root: Path | None = None) -> str:
    """HEAD's sha (with `-dirty` when the work tree has changes), or `unknown` outside git."""
    root = root or repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@contextmanager
def start_run(
    params: Params,
    stage: str,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    log_params: bool = True,
) -> Iterator[MlflowTracker]:
    """An MLflow run tagged with stage, profile, git commit (and DVC experiment name, if any)."""
    import mlflow

    root = repo_root()
    mlflow.set_tracking_uri(tracking_uri(params, root))
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    if experiment is None:
        # an absolute artifact location, so runs from temp experiment copies keep their artifacts
        artifacts = (root / "mlruns").resolve().as_uri()
        try:
            mlflow.create_experiment(params.tracking.experiment, artifact_location=artifacts)
        except mlflow.exceptions.MlflowException:  # created concurrently by another stage
            pass
    mlflow.set_experiment(params.tracking.experiment)
    all_tags = {
        "stage": stage,
        "profile": params.run.profile,
        "git_commit": git_commit(root),
        **({"dvc_exp_name": os.environ["DVC_EXP_NAME"]} if "DVC_EXP_NAME" in os.environ else {}),
        **(tags or {}),
    }
    with mlflow.start_run(run_name=run_name or stage) as run:
        tracker = MlflowTracker(run.info.run_id)
        tracker.set_tags(all_tags)
        if log_params:
            tracker.log_params(to_dict(params))
        log.info("MLflow run %s (%s) in %s", run.info.run_id, run_name or stage, mlflow.get_tracking_uri())
        yield tracker
