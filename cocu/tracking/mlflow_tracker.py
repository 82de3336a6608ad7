"""MLflow behind a small protocol: `log_params`, `log_metrics(step=)`, `log_artifact`, `set_tags`.

The embedded default store is a SQLite file at the repository root, addressed by an absolute
URI so that `dvc exp run --temp/--queue` (which run in `.dvc/tmp/exps/...` copies of the repo)
log into the same store as `dvc repro`. On a cluster, `tracking.uri: http://host:port` names an
MLflow tracking server instead: every process, SLURM jobs included (they re-read the params
file), logs through it, and artifacts go to the server's artifact store. `MLFLOW_TRACKING_URI`
overrides everything.

A new SQLite store creates its tables on first use; processes that start at once (the parallel
pre-training runs, SLURM array tasks) would each try to, and all but one fail ("table ... already
exists"). `start_run` therefore opens the store under an exclusive lock on `<store>.lock`.
"""

from __future__ import annotations

import fcntl
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


def dvc_outputs(root: Path) -> list[str]:
    """What the pipeline itself writes, relative to `root`: `dvc.lock` and every output it records
    (files and folders, metrics and plots included). Empty without a `dvc.lock`."""
    import yaml

    lock = root / "dvc.lock"
    try:
        data = yaml.safe_load(lock.read_text()) if lock.is_file() else None
    except (OSError, yaml.YAMLError):
        return ["dvc.lock"]
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return ["dvc.lock"] if lock.is_file() else []
    outs = {o["path"] for st in stages.values() if isinstance(st, dict) for o in st.get("outs") or []
            if isinstance(o, dict) and isinstance(o.get("path"), str)}
    return ["dvc.lock", *sorted(p.rstrip("/") for p in outs)]


def changed_files(root: Path) -> list[str]:
    """Tracked files whose work-tree or index state differs from HEAD, relative to `root`."""
    done = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=no"], cwd=root,
                          capture_output=True, check=True)
    entries = done.stdout.decode("utf-8", "surrogateescape").split("\0")
    out, i = [], 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        out.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy: the next entry is its source path
            out.append(entries[i])
            i += 1
    return out


def is_server(uri: str) -> bool:
    """True for an MLflow tracking server (`http://host:port`, `https://...`), not a local store."""
    return uri.lower().startswith(("http://", "https://"))


def git_commit(root: Path | None = None) -> str:
    """HEAD's sha, with `-dirty` when the code or configuration the run uses differs from it; or
    `unknown` outside git.

    Dirty means a tracked file other than the pipeline's own outputs has changed (`dvc_outputs`:
    `dvc.lock` and the metrics, plots and results it records, which `dvc repro` rewrites stage by
    stage before later stages open their runs). A changed `params.yaml` (`dvc exp run -S ...`) or
    source file is dirty; a stage's rewritten metrics file is not.
    """
    root = root or repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        changed = changed_files(root)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    outputs = dvc_outputs(root)
    code = [p for p in changed if not any(p == o or p.startswith(o + "/") for o in outputs)]
    if code:
        log.info("git work tree differs from HEAD in %d tracked file(s), e.g. %s", len(code), code[0])
    return sha.stdout.strip() + ("-dirty" if code else "")


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///...` tracking URI; None for any other store."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on `<sqlite file>.lock` (no lock for a server or another store), so
    that one process at a time creates or migrates a new store's tables."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):  # the first call opens the store (and creates a new one's tables)
        experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
        if experiment is None:
            # a local store: an absolute artifact folder, so runs from temp experiment copies keep their
            # artifacts; a tracking server: its own artifact store (it serves artifacts over HTTP)
            where = {} if is_server(uri) else {"artifact_location": (root / "mlruns").resolve().as_uri()}
            try:
                mlflow.create_experiment(params.tracking.experiment, **where)
            except mlflow.exceptions.MlflowException:  # created concurrently by a server's other client
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
