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


def overrides(name: str, folder: Path | str = "profiles") -> list[str]:
    """The overlay as `dvc exp run -S` arguments (values in YAML/JSON flow syntax)."""
    flat = flatten(read_yaml(profile_path(name, folder)))
    return [f"{key}={_flow(value)}" for key, value in flat.items()]


def _flow(value: Any) -> str:
    """`value` as text that DVC's YAML reads back as `value`: a plain string where it reads as
    itself, JSON (a quoted string, a list, a number) otherwise."""
    if isinstance(value, str):
        try:
            if parse_yaml(f"v: {value}") == {"v": value}:
                return value
        except ConfigError:
            pass
    return json.dumps(value)


def write(params_file: Path | str, name: str, folder: Path | str = "profiles") -> None:
    merged = compose(params_file, name, folder)
    Path(params_file).write_text(dump_yaml(merged))


def run_experiment(params_file: Path | str, name: str, folder: Path | str = "profiles", queue: bool = False) -> int:
    compose(params_file, name, folder)  # fail early, naming the key
    cmd = ["dvc", "exp", "run", "-n", name, *(["--queue"] if queue else [])]
    for item in overrides(name, folder):
        cmd += ["-S", item]
    return subprocess.call(cmd)
