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

import yaml

from cocu.config import ConfigError, Params, flatten, from_dict, read_yaml


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
    return [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in flat.items()]


def write(params_file: Path | str, name: str, folder: Path | str = "profiles") -> None:
    merged = compose(params_file, name, folder)
    Path(params_file).write_text(yaml.safe_dump(merged, sort_keys=False))


def run_experiment(params_file: Path | str, name: str, folder: Path | str = "profiles", queue: bool = False) -> int:
    compose(params_file, name, folder)  # fail early, naming the key
    cmd = ["dvc", "exp", "run", "-n", name, *(["--queue"] if queue else [])]
    for item in overrides(name, folder):
        cmd += ["-S", item]
    return subprocess.call(cmd)
