"""Reading the tracked files the report is built from: results, training curves, flat metrics.

Layouts (written by the other stages):
- results: `<results_dir>/<variant>/s<seed>/<benchmark>.json`, one per checkpoint x benchmark;
- curves: `<curves_dir>/<variant>-s<seed>.csv` with at least `step` and the plotted column;
- metrics: flat JSON objects (nested objects are flattened with `/`, non-numbers are dropped).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Optional

import pandas as pd

REQUIRED_KEYS = ("variant", "seed", "benchmark", "mIoU")
RESULT_COLUMNS = ("variant", "seed", "benchmark", "mIoU", "ci_lo", "ci_hi", "aAcc", "mAcc", "num_images", "profile",
                  "protocol", "checkpoint_sha256", "path", "sha256")
_SEED_DIR = re.compile(r"^s(\d+)$")
_CURVE_FILE = re.compile(r"^(?P<variant>.+)-s(?P<seed>\d+)\.csv$")


class ReportInputError(ValueError):
    """A tracked input of the report is malformed; the message names the file."""


def find_result_files(results_dir: Path | str) -> list[Path]:
    """Every `<variant>/s<seed>/<benchmark>.json` under `results_dir`, sorted (none if it is missing)."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("*/s*/*.json") if _SEED_DIR.match(p.parent.name))


def load_results(results_dir: Path | str) -> pd.DataFrame:
    """One row per result file with the columns of RESULT_COLUMNS, sorted by variant, seed, benchmark.

    The path must agree with the file's own `variant`, `seed` and `benchmark`, so that a file copied
    to the wrong folder is an error and not a silently mislabelled number.
    """
    rows = [_read_result(p, Path(results_dir)) for p in find_result_files(results_dir)]
    df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return df.sort_values(["variant", "seed", "benchmark"], kind="stable").reset_index(drop=True)


def _read_result(path: Path, root: Path) -> dict[str, Any]:
    data = _read_json(path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ReportInputError(f"{path}: result file lacks key(s) {missing}")
    seed_dir = _SEED_DIR.match(path.parent.name)
    assert seed_dir is not None  # find_result_files only yields s<seed> folders
    expected = (path.parent.parent.name, int(seed_dir.group(1)), path.stem)
    found = (str(data["variant"]), _as_int(data["seed"], path, "seed"), str(data["benchmark"]))
    if found != expected:
        raise ReportInputError(f"{path}: file says (variant, seed, benchmark) = {found}, its path says {expected}")
    miou = _as_float(data["mIoU"], path, "mIoU")
    ci = data.get("mIoU_ci95") or [None, None]  # bootstrap 95% interval over images; older files lack it
    if not (isinstance(ci, list) and len(ci) == 2):
        raise ReportInputError(f"{path}: mIoU_ci95 must be a [lo, hi] list, got {ci!r}")
    return {
        "variant": found[0], "seed": found[1], "benchmark": found[2], "mIoU": miou,
        "ci_lo": _as_float(ci[0], path, "mIoU_ci95[0]"), "ci_hi": _as_float(ci[1], path, "mIoU_ci95[1]"),
        "aAcc": _as_float(data.get("aAcc"), path, "aAcc"), "mAcc": _as_float(data.get("mAcc"), path, "mAcc"),
        "num_images": data.get("num_images"), "profile": data.get("profile"), "protocol": data.get("protocol"),
        "checkpoint_sha256": data.get("checkpoint_sha256"), "path": path.relative_to(root).as_posix(),
        "sha256": file_digest(path),
    }


def load_curves(curves_dir: Path | str, column: str) -> pd.DataFrame:
    """Long table (variant, seed, step, value) of `column` from every `<variant>-s<seed>.csv`."""
    root = Path(curves_dir)
    frames = []
    for path in sorted(root.glob("*.csv")) if root.is_dir() else []:
        m = _CURVE_FILE.match(path.name)
        if m is None:
            continue
        df = pd.read_csv(path)
        if "step" not in df.columns or column not in df.columns:
            raise ReportInputError(f"{path}: curve file needs columns 'step' and {column!r}, "
                                   f"has {list(df.columns)}")
        frames.append(pd.DataFrame({"variant": m["variant"], "seed": int(m["seed"]),
                                    "step": df["step"].astype(int), "value": df[column].astype(float)}))
    if not frames:
        return pd.DataFrame({"variant": pd.Series(dtype=str), "seed": pd.Series(dtype=int),
                             "step": pd.Series(dtype=int), "value": pd.Series(dtype=float)})
    return pd.concat(frames, ignore_index=True).sort_values(["variant", "seed", "step"], kind="stable",
                                                            ignore_index=True)


def curve_files(curves_dir: Path | str) -> list[Path]:
    root = Path(curves_dir)
    return sorted(p for p in root.glob("*.csv") if _CURVE_FILE.match(p.name)) if root.is_dir() else []


def load_flat_metrics(path: Optional[Path | str]) -> Optional[dict[str, float]]:
    """A metrics JSON flattened to {'a/b': number}; None if the path is unset or the file is missing."""
    if path is None or not Path(path).is_file():
        return None
    data = _read_json(Path(path))
    return {k: v for k, v in _flatten(data).items()}


def file_digest(path: Path | str) -> str:
    """First 12 hex digits of the file's sha256 (provenance without git)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
        elif value is None:
            out[name] = math.nan
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _as_float(value: Any, path: Path, key: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportInputError(f"{path}: {key} must be a number or null, got {value!r}")
    return float(value)


def _as_int(value: Any, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportInputError(f"{path}: {key} must be an integer, got {value!r}")
    return value
