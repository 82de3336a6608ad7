"""Profiles: named overlays on params.yaml (`profiles/<name>.yaml`), validated like params.yaml.

params.yaml is the synthetic default. A profile lists only what differs. Two ways to use one,
both leaving DVC with the params actually used:

- `python -m cocu profile NAME --exp`: `dvc exp run -n NAME -S key=value ...` with the overlay
  flattened into `-S` overrides (DVC writes them into the experiment's params.yaml);
- `python -m cocu profile NAME --write`: merge the overlay into params.yaml in place, to commit
  it on a branch for a long cluster campaign (`git diff params.yaml` shows what changed).
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

from cocu.config import ConfigError, Params, dump_yaml, flatten, from_dict, parse_yaml, read_yaml


def profile_path(name: str, folder: Path | str = "profiles") -> Path:
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(folder).glob("*.yaml"))
        raise ConfigError(f"{path}: no such profile (known: {', '.join(known) or 'none'})")
    return path


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, everything else (lists included) is replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def compose(params_file: Path | str, name: str, folder: Path | str = "profiles") -> dict[str, Any]:
    """params.yaml with the profile applied, validated against the schema (errors name the key)."""
    path = profile_path(name, folder)
    merged = merge(read_yaml(params_file), read_yaml(path))
    from_dict(Params, merged, source=f"{params_file} + {path}")
    return merged


def overrides(name: str, folder: Path | str = "profiles", params_file: Path | str | None = None) -> list[str]:
    """The overlay as `dvc exp run -S` arguments (values in YAML/JSON flow syntax, which DVC's
    Hydra override grammar reads). With `params_file`, a mapping is split into one override per key
    only where params.yaml holds a mapping too; where it holds a scalar or null (a mapping-valued
    `pairs.shards_glob`), the mapping is one value, since Hydra cannot add keys to a null."""
    overlay = read_yaml(profile_path(name, folder))
    if params_file is None:
        return [f"{key}={_value(value)}" for key, value in flatten(overlay).items()]
    out: list[str] = []

    def walk(node: dict[str, Any], base: Any, prefix: str) -> None:
        for key, value in node.items():
            inner = base.get(key) if isinstance(base, dict) else None
            if isinstance(value, dict) and value and isinstance(inner, dict):
                walk(value, inner, f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}={_value(value)}")

    walk(overlay, read_yaml(params_file), "")
    return out


_HYDRA_SPECIAL = set("{}[](),:=' \"\\")


def _value(value: Any) -> str:
    """One override value that DVC (Hydra's override grammar, then YAML 1.2) reads back as `value`:
    a string bare where it reads as itself, JSON-quoted where YAML would read another type (`1e5`,
    `yes`), single-quoted where Hydra would parse it (braces, quotes, ...); mappings as Hydra dicts;
    everything else as JSON."""
    if isinstance(value, str):
        if _HYDRA_SPECIAL & set(value) or not value:
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        try:
            if parse_yaml(f"v: {value}") == {"v": value}:
                return value
        except ConfigError:
            pass
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def write(params_file: Path | str, name: str, folder: Path | str = "profiles") -> None:
    merged = compose(params_file, name, folder)
    Path(params_file).write_text(dump_yaml(merged))


def run_experiment(params_file: Path | str, name: str, folder: Path | str = "profiles", queue: bool = False) -> int:
    compose(params_file, name, folder)  # fail early, naming the key
    cmd = ["dvc", "exp", "run", "-n", name, *(["--queue"] if queue else [])]
    for item in overrides(name, folder, params_file):
        cmd += ["-S", item]
    return subprocess.call(cmd)
