"""Config strictness and the wiring between params.yaml, dvc.yaml and pipelines/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cocu.config import ConfigError, Params, WorldConfig, flatten, from_dict, load_params, load_section, to_dict

from .conftest import REPO, write_params


def test_repo_params_load():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.run.profile == "synthetic"
    assert params.world.counts.pairs > params.world.sizes["smoke"].pairs
    assert isinstance(params.world.benchmarks, tuple)


def test_load_section_returns_the_dataclass():
    world = load_section(WorldConfig, "world", REPO / "params.yaml")
    assert world.image_size == 64


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("world", "mention_rat", 0.4, "unknown key(s) world.mention_rat"),
        ("world", "image_size", "64", "world.image_size must be an integer"),
        ("world", "image_size", True, "world.image_size must be an integer"),
        ("pairs", "source", "laion", "pairs.source must be one of"),
        ("world", "benchmarks", "synth_all", "world.benchmarks must be a list"),
        ("launcher", "nodes", 1.5, "launcher.nodes must be an integer"),
    ],
)
def test_bad_values_name_the_key_and_file(tmp_path, section, key, value, message):
    path = write_params(tmp_path, **{section: {key: value}})
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_nested_and_top_level_keys(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["world"]["sizes"]["smoke"]["pair"] = 3
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"world\.sizes\.smoke\.pair"):
        load_params(tmp_path / "a.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["opt"] = []
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) opt"):
        load_params(tmp_path / "b.yaml")


def test_missing_required_key(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["world"]["mention_rate"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="missing required key world.mention_rate"):
        load_params(tmp_path / "p.yaml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("world: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_round_trip_and_flatten():
    params = load_params(REPO / "params.yaml")
    raw = to_dict(params)
    assert from_dict(Params, raw) == params
    flat = flatten(raw)
    assert flat["world.sizes.default.pairs"] == params.world.counts.pairs


def test_configs_are_frozen():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(AttributeError):
        params.world.image_size = 32  # type: ignore[misc]


def test_stage_cli_rejects_unknown_key(tmp_path):
    path = write_params(tmp_path, world={"colour_jitter": 0.1})
    out = subprocess.run([sys.executable, str(REPO / "pipelines" / "pairs.py"), "--params", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0
    assert "world.colour_jitter" in out.stderr
    assert str(path) in out.stderr


# ---- dvc.yaml wiring -------------------------------------------------------------------------


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _stage_body(stage: dict) -> dict:
    return stage.get("do", stage)


def test_dvc_params_exist():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in _stages().items():
        for key in _stage_body(stage).get("params", []):
            node = raw
            for part in str(key).split("."):
                if "${" in part:
                    break
                assert part in node, f"dvc.yaml stage {name}: params key {key} not in params.yaml"
                node = node[part]


def test_dvc_cmds_exist_and_deps_cover_imports():
    for name, stage in _stages().items():
        body = _stage_body(stage)
        script = body["cmd"].split()[1]
        path = REPO / script
        assert path.is_file(), f"stage {name}: {script} missing"
        deps = set(body["deps"])
        assert script in deps
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cocu"):
                parts = node.module.split(".")
                module = Path(*parts)
                candidates = {f"{module}.py", str(module), str(Path(*parts[:2]))}
                if len(parts) == 1:  # `from cocu import x`: x is a subpackage or module
                    candidates = {f"cocu/{a.name}" for a in node.names} | {f"cocu/{a.name}.py" for a in node.names}
                assert candidates & deps, f"stage {name}: imports {node.module} but deps lack {candidates}"
