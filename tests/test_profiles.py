"""Profiles: overlays on params.yaml, validated, turned into `dvc exp run -S` overrides."""

from __future__ import annotations

import pytest
import yaml

from cocu import profiles
from cocu.__main__ import main as cli
from cocu.config import ConfigError, Params, from_dict, read_yaml

from .conftest import REPO


def test_every_shipped_profile_composes():
    names = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))
    assert "smoke" in names
    for name in names:
        merged = profiles.compose(REPO / "params.yaml", name, REPO / "profiles")
        assert from_dict(Params, merged).run.profile == name


def test_overrides_flatten_the_overlay(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"run": {"profile": "p"}, "world": {"size": "smoke",
                                                     "benchmarks": ["synth_all"]}}))
    assert sorted(profiles.overrides("p", tmp_path)) == ["run.profile=p", 'world.benchmarks=["synth_all"]', "world.size=smoke"]


def test_bad_profile_names_the_key(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"world": {"sise": "smoke"}}))
    with pytest.raises(ConfigError, match="world.sise"):
        profiles.compose(REPO / "params.yaml", "bad", tmp_path)
    with pytest.raises(ConfigError, match="no such profile"):
        profiles.profile_path("nope", tmp_path)


def test_write_applies_in_place(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    assert cli(["profile", "smoke", "--params", str(params), "--folder", str(REPO / "profiles"), "--write"]) == 0
    raw = yaml.safe_load(params.read_text())
    assert raw["world"]["size"] == "smoke" and raw["run"]["profile"] == "smoke"
    assert raw["world"]["mention_rate"] == 0.4  # untouched keys kept


@pytest.mark.parametrize("name", ["paper-cc3m", "paper-cc3m-cc12m-yfcc14m"])
def test_paper_profiles_train_at_global_batch_4096(name):
    params = from_dict(Params, profiles.compose(REPO / "params.yaml", name, REPO / "profiles"))
    launcher, train = params.launcher, params.train
    assert launcher.nodes * launcher.gpus_per_node * train.batch_size * train.accum_steps == 4096
    assert train.lr_reference_batch == 4096 and train.base_lr == pytest.approx(1.6e-3)
    assert params.model.image.img_size == 224 and params.clip.source == "pretrained"
    assert launcher.cluster == "slurm" and params.pairs.source == "webdataset"


def test_write_keeps_strings_that_look_like_numbers(tmp_path):
    """`--write` dumps YAML that reads back (as cocu and DVC read it) exactly as merged."""
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    (tmp_path / "odd.yaml").write_text('run:\n  profile: "4e-3"\ntracking:\n  experiment: "yes"\ntrain:\n  base_lr: 2e-3\n')
    profiles.write(params, "odd", tmp_path)
    loaded = from_dict(Params, read_yaml(params))
    assert loaded.run.profile == "4e-3" and loaded.tracking.experiment == "yes" and loaded.train.base_lr == 0.002
    dvc_yaml = pytest.importorskip("dvc.utils.serialize._yaml")
    assert dvc_yaml.parse_yaml(params.read_text(), str(params)) == read_yaml(params)


def test_overrides_quote_what_would_read_as_another_type(tmp_path):
    (tmp_path / "q.yaml").write_text('run:\n  profile: "1e5"\ntracking:\n  experiment: "yes"\n')
    assert profiles.overrides("q", tmp_path) == ['run.profile="1e5"', "tracking.experiment=yes"]


def test_profile_with_a_duplicate_key_is_an_error(tmp_path):
    (tmp_path / "dup.yaml").write_text("world:\n  size: smoke\n  size: default\n")
    with pytest.raises(ConfigError, match=r"duplicate key world\.size at line 3 \(first at line 2\)"):
        profiles.compose(REPO / "params.yaml", "dup", tmp_path)
