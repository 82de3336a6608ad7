"""Config strictness and the wiring between params.yaml, dvc.yaml and pipelines/.

Every key of params.yaml is required (a parametrised test deletes each one in turn), ranges and
references are checked next to the fields, the YAML is read as DVC reads it, and a bad params
file stops a stage (and `dvc repro`) before anything heavy is imported or any output is touched.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from cocu import check_params
from cocu.config import (
    ConfigError,
    Params,
    ReportConfig,
    WorldConfig,
    flatten,
    from_dict,
    load_params,
    load_section,
    paper_model_config,
    parse_yaml,
    read_yaml,
    tiny_model_config,
    to_dict,
)
from cocu.profiles import compose

from .conftest import REPO, write_params

RAW = read_yaml(REPO / "params.yaml")  # the repo's params as plain data (parsed once)


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
        ("world", "image_size", "64", "world.image_size must be an integer, got '64' (a quoted string"),
        ("world", "image_size", True, "world.image_size must be an integer"),
        ("pairs", "source", "laion", "pairs.source must be one of"),
        ("world", "benchmarks", "synth_all", "world.benchmarks must be a list"),
        ("launcher", "nodes", 1.5, "launcher.nodes must be an integer"),
        ("train", "amp", "yes", "train.amp must be true or false, got 'yes' (YAML 1.2 reads yes/no/on/off as strings"),
    ],
)
def test_bad_values_name_the_key_and_file(tmp_path, section, key, value, message):
    path = write_params(tmp_path, **{section: {key: value}})
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_nested_and_top_level_keys(tmp_path):
    raw = copy.deepcopy(RAW)
    raw["world"]["sizes"]["smoke"]["pair"] = 3
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"world\.sizes\.smoke\.pair"):
        load_params(tmp_path / "a.yaml")
    raw = copy.deepcopy(RAW)
    raw["opt"] = []
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) opt"):
        load_params(tmp_path / "b.yaml")


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


# ---- every key is required -------------------------------------------------------------------


def _config_classes(cls: type, seen: set[type] | None = None) -> set[type]:
    """`cls` and every dataclass reachable through its field types."""
    seen = set() if seen is None else seen
    if cls in seen:
        return seen
    seen.add(cls)
    for tp in typing.get_type_hints(cls).values():
        stack = [tp]
        while stack:
            t = stack.pop()
            if dataclasses.is_dataclass(t):
                _config_classes(t, seen)
            stack.extend(typing.get_args(t))
    return seen


def test_no_config_field_has_a_default():
    """A default would be a value the params file does not show (and DVC does not track)."""
    classes = _config_classes(Params) | _config_classes(ReportConfig)
    assert len(classes) >= 25
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (
                f"{cls.__name__}.{f.name} has a default")


def _key_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every mapping key of the YAML tree, as a path from the top."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, str(key)))
            out += _key_paths(value, (*prefix, str(key)))
    return out


ALL_KEYS = _key_paths(RAW)
ACTIVE = set(RAW["eval"]["active"])
# Entries of mappings that users extend may go when nothing names them (cocu/config.py):
# a world size other than `world.size`, a protocol card that `eval.active` does not run, a
# report paper method (nothing refers to one). Removing one is valid; everything else is an error.
REMOVABLE = {("world", "sizes", s) for s in RAW["world"]["sizes"] if s != RAW["world"]["size"]}
REMOVABLE |= {("eval", "benchmarks", b) for b in RAW["eval"]["benchmarks"] if b not in ACTIVE}
REMOVABLE |= {("report", "paper_methods", m) for m in RAW["report"]["paper_methods"]}
# Entries that something names: removing one is an error that names the referring key.
REFERENCED = {("world", "sizes", RAW["world"]["size"]): "world.size",
              **{("eval", "benchmarks", b): "eval.active" for b in ACTIVE}}


def test_the_walk_covers_every_key():
    assert len(ALL_KEYS) > 350 and ("eval", "benchmarks", "voc", "num_images") in ALL_KEYS
    assert len({k for k in ALL_KEYS if len(k) == 1}) == len(dataclasses.fields(Params))
    assert REMOVABLE and REMOVABLE.isdisjoint(REFERENCED)


@pytest.mark.parametrize("path", ALL_KEYS, ids=".".join)
def test_deleting_any_key_is_an_error_naming_it(path):
    raw = copy.deepcopy(RAW)
    node = raw
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    dotted = ".".join(path)
    if path in REMOVABLE:
        from_dict(Params, raw, "params.yaml")  # nothing names it: a valid file without it
        return
    with pytest.raises(ConfigError) as err:
        from_dict(Params, raw, "params.yaml")
    message = str(err.value)
    assert message.startswith("params.yaml: "), message
    if path in REFERENCED:
        assert REFERENCED[path] in message and ".".join(path[:-1]) in message and repr(path[-1]) in message, message
        assert "valid:" in message, message
    else:
        assert f"missing required key {dotted}" in message, message


def test_missing_key_names_the_file(tmp_path):
    raw = copy.deepcopy(RAW)
    del raw["train"]["lr_reference_batch"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=f"{tmp_path / 'p.yaml'}: missing required key train.lr_reference_batch"):
        load_params(tmp_path / "p.yaml")


def test_named_model_configs_are_the_files():
    """`tiny_model_config()` is params.yaml's model; `paper_model_config()` the paper profiles'."""
    assert tiny_model_config() == load_params(REPO / "params.yaml").model
    for name in ("paper-cc3m", "paper-cc3m-cc12m-yfcc14m"):
        paper = from_dict(Params, compose(REPO / "params.yaml", name, REPO / "profiles")).model
        assert paper_model_config() == paper


# ---- ranges and references --------------------------------------------------------------------


def _set(raw: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value


RANGE_CASES = [
    # (dotted key, bad value, the error after "<file>: ": the key it is about, its value, the rule)
    ("index.num_neighbours", 0, "index.num_neighbours = 0: must be >= 1"),
    ("index.num_neighbours", -3, "index.num_neighbours = -3: must be >= 1"),
    ("train.batch_size", 0, "train.batch_size = 0: must be >= 1"),
    ("train.epochs", 0, "train.epochs = 0.0: must be > 0"),
    ("train.base_lr", 0.0, "train.base_lr = 0.0: must be > 0"),
    ("train.base_lr", float("nan"), "train.base_lr = nan: must be a finite number"),
    ("train.min_lr", 0.1, "train.min_lr = 0.1: must be <= train.base_lr (0.002)"),
    ("train.betas", [0.9, 1.0], "train.betas[1] = 1.0: must be in [0, 1)"),
    ("train.clip_grad", 0.0, "train.clip_grad = 0.0: must be > 0"),
    ("train.steps", 0, "train.steps = 0: must be >= 1"),
    ("teacher.hflip", 1.5, "teacher.hflip = 1.5: must be in [0, 1]"),
    ("teacher.lr", -1e-3, "teacher.lr = -0.001: must be > 0"),
    ("world.mention_rate", 1.5, "world.mention_rate = 1.5: must be in (0, 1)"),
    ("world.mention_rate", 0.0, "world.mention_rate = 0.0: must be in (0, 1)"),
    ("world.jpeg_quality", 101, "world.jpeg_quality = 101: must be in [1, 100]"),
    ("world.max_concepts", 1, "world.max_concepts = 1: must be >= world.min_concepts (2)"),
    ("world.size", "huge", "world.size = 'huge': names no entry of world.sizes (valid: default, smoke)"),
    ("data.crop_scale", [1.0, 0.5], "data.crop_scale = (1.0, 0.5): must be ordered [low, high]"),
    ("data.crop_scale", [0.0, 1.0], "data.crop_scale[0] = 0.0: must be in (0, 1]"),
    ("data.workers", -1, "data.workers = -1: must be >= 0"),
    ("data.random_erasing", 2.0, "data.random_erasing = 2.0: must be in [0, 1]"),
    ("curation.cluster_ratio", 0.0, "curation.cluster_ratio = 0.0: must be in (0, 1]"),
    ("curation.top_k", 0, "curation.top_k = 0: must be >= 1"),
    ("index.nprobe", 2048, "index.nprobe = 2048: must be <= index.nlist (1024)"),
    ("model.image.depths", [2, 0, 1], "model.image.depths[1] = 0: must be >= 1"),
    ("model.image.num_heads", [2, 2],
     "model.image.num_heads = (2, 2): needs 3 entries (one per stage: model.image.depths has 3)"),
    ("model.image.num_heads", [2, 3, 2], "model.image.num_heads[1] = 3: must divide model.image.width (64)"),
    ("model.image.num_group_tokens", [8, 4, 2],
     "model.image.num_group_tokens[2] = 2: must be 0 (the last stage has no grouping)"),
    ("model.image.num_output_groups", [8],
     "model.image.num_output_groups = (8,): needs 2 entries (one per stage but the last: model.image.depths has 3)"),
    ("model.image.patch_size", 7, "model.image.img_size = 64: must be a multiple of model.image.patch_size (7)"),
    ("model.text.heads", 3, "model.text.heads = 3: must divide model.text.width (64)"),
    ("launcher.nodes", 0, "launcher.nodes = 0: must be >= 1"),
    ("pretrain.seeds", [0, 0], "pretrain.seeds = (0, 0): lists 0 twice"),
    ("pretrain.variants", [], "pretrain.variants = (): must not be empty"),
    ("embed.prompt", "a photo", "embed.prompt = 'a photo': must contain `{}` exactly once (where the concept goes)"),
    ("clip.expected_sha256", "abc", "clip.expected_sha256 = 'abc': must be 64 hex digits (a sha256) or null"),
    ("clip.source", "pretrained", "clip.weights_file = None: required when clip.source is pretrained"),
    ("eval.active", ["synth_things", "vocc"], "eval.active[1] = 'vocc': names no entry of eval.benchmarks (valid: ade20k, "),
    ("eval.benchmarks.voc.stride", 500, "eval.benchmarks.voc.stride = 500: must be <= eval.benchmarks.voc.crop (448)"),
    ("eval.benchmarks.voc.bg_thresh", None,
     "eval.benchmarks.voc.bg_thresh = None: required when eval.benchmarks.voc.has_background is true"),
    ("eval.benchmarks.cityscapes.bg_thresh", 0.5,
     "eval.benchmarks.cityscapes.bg_thresh = 0.5: must be null when eval.benchmarks.cityscapes.has_background is false"),
    ("eval.benchmarks.synth_things.bg_thresh", 1.5, "eval.benchmarks.synth_things.bg_thresh = 1.5: must be in [0, 1]"),
    ("world.benchmarks", ["synth_all"], "eval.benchmarks.synth_things.root = 'synth_things': a synthetic benchmark "
                                        "that world.benchmarks does not write (eval.active[0] runs it"),
    ("report.decimals", -1, "report.decimals = -1: must be in [0, 6]"),
]


@pytest.mark.parametrize("dotted, value, error", RANGE_CASES, ids=[f"{k}={v}" for k, v, _ in RANGE_CASES])
def test_range_and_reference_errors_name_the_key_value_and_range(tmp_path, dotted, value, error):
    raw = copy.deepcopy(RAW)
    _set(raw, dotted, value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {error}"), message
    assert "\n" not in message  # one line


def test_world_size_huge_lists_the_valid_sizes(tmp_path):
    path = write_params(tmp_path, world={"size": "huge"})
    with pytest.raises(ConfigError, match=r"world\.size = 'huge': names no entry of world\.sizes \(valid: default, smoke\)"):
        load_params(path)


def test_programmatic_configs_are_checked_too():
    with pytest.raises(ConfigError, match=r"TrainConfig\.batch_size = 0: must be >= 1"):
        dataclasses.replace(load_params(REPO / "params.yaml").train, batch_size=0)
    with pytest.raises(ConfigError, match=r"ImageEncoderConfig\.num_heads\[0\] = 3: must divide"):
        dataclasses.replace(tiny_model_config().image, num_heads=(3, 2, 2))


# ---- YAML as DVC reads it ---------------------------------------------------------------------


def test_duplicate_keys_are_errors_naming_key_and_lines(tmp_path):
    text = (REPO / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    first = re.search(r"^  base_lr: .*$", text, re.M).group(0)
    path.write_text(text.replace(first, first + "\n  base_lr: 1.0e-3", 1))
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("  base_lr:"))
    with pytest.raises(ConfigError, match=rf"{path}: duplicate key train\.base_lr at line {line + 1} \(first at line {line}\)"):
        load_params(path)
    path.write_text(text + "run:\n  profile: again\n")
    with pytest.raises(ConfigError, match=r"duplicate key run at line \d+ \(first at line 5\)"):
        load_params(path)
    with pytest.raises(ConfigError, match=r"duplicate key voc\.crop at line 1"):  # inside a flow mapping
        parse_yaml("voc: {crop: 448, stride: 224, crop: 224}", "card")


def test_yaml_1_2_numbers(tmp_path):
    text = (REPO / "params.yaml").read_text()
    text = text.replace(re.search(r"^  base_lr: .*$", text, re.M).group(0), "  base_lr: 4e-3", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).train.base_lr == 0.004
    assert parse_yaml("a: 1e5\nb: -1E-3\nc: .5\nd: 017\ne: 0o17\nf: yes\ng: 1_000\nh: .inf") == {
        "a": 100000.0, "b": -0.001, "c": 0.5, "d": 17, "e": 15, "f": "yes", "g": 1000, "h": float("inf")}


SCALARS = ["4e-3", "1e5", "1.0e-3", ".5", "5.", "+.5", "-1e-3", "1e+5", "12e03", "1_000", "017", "0o17", "0x1F",
           "0b101", "yes", "no", "on", "off", "y", "True", "TRUE", "tRue", "false", "~", "null", "Null", "", "1:30",
           ".inf", "-.inf", "+1", "-0", "2001-01-01", "1.", "685.230_15e+03", "190:20:30.15", "a photo of a {}",
           "'4e-3'", "[1, 2.5e-1]", "{a: 1e3}"]


@pytest.mark.parametrize("scalar", SCALARS)
def test_scalars_mean_what_dvc_reads(scalar):
    """cocu's reading of every scalar equals DVC's own (ruamel, YAML 1.2)."""
    dvc_yaml = pytest.importorskip("dvc.utils.serialize._yaml")
    text = f"key: {scalar}\n"
    assert parse_yaml(text) == dvc_yaml.parse_yaml(text, "params.yaml")


def test_nan_reads_as_nan():
    value = parse_yaml("a: .nan")["a"]
    assert value != value


# ---- a low layer that fails fast --------------------------------------------------------------

HEAVY = ("torch", "numpy", "pandas", "pyarrow", "faiss", "mlflow", "PIL", "open_clip", "sklearn", "submitit",
         "webdataset", "matplotlib", "scipy")


def test_config_is_a_low_layer():
    """cocu/config.py imports only the standard library and PyYAML; loading it pulls in no other
    cocu module and nothing heavy."""
    tree = ast.parse((REPO / "cocu" / "config.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m.split(".")[0] for m in modules} <= set(sys.stdlib_module_names) | {"yaml"}, modules
    code = ("import sys, json, cocu.check_params, cocu.stage; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cocu') or m.split('.')[0] in %r)))"
            % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(out.stdout) == ["cocu", "cocu.check_params", "cocu.config", "cocu.stage"]


def test_no_subpackage_config_modules_remain():
    leftovers = sorted(str(p.relative_to(REPO)) for p in (REPO / "cocu").glob("*/*config*.py"))
    assert leftovers == []


STAGE_FLAGS: dict[str, list[str]] = {}  # extra command-line flags a stage script needs (none today)
STAGES = sorted(p.stem for p in (REPO / "pipelines").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_script_rejects_bad_params_before_heavy_imports(tmp_path, stage):
    """`python pipelines/X.py --params bad.yaml`: status 2, one line naming the key, and none of
    torch & co imported (so it fails in a fraction of a second)."""
    path = write_params(tmp_path, index={"num_neighbours": 0})
    script = REPO / "pipelines" / f"{stage}.py"
    runner = ("import json, runpy, sys\n"
              f"sys.argv = [{str(script)!r}, '--params', {str(path)!r}, *{STAGE_FLAGS.get(stage, [])!r}]\n"
              "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
              "except SystemExit as e:\n    code = e.code\n"
              f"print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n")
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, cwd=tmp_path)
    code, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert code == 2 and heavy == [], (code, heavy, out.stderr)
    errors = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "index.num_neighbours = 0: must be >= 1" in errors[0] and str(path) in errors[0]


def test_stage_cli_rejects_unknown_key(tmp_path):
    path = write_params(tmp_path, world={"colour_jitter": 0.1})
    out = subprocess.run([sys.executable, str(REPO / "pipelines" / "pairs.py"), "--params", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert "world.colour_jitter" in out.stderr
    assert str(path) in out.stderr


def test_check_params_writes_a_constant_stamp_only_when_valid(tmp_path, capsys):
    stamp = tmp_path / "out" / "params.ok"
    good = write_params(tmp_path)
    assert check_params.main(["--params", str(good), "--stamp", str(stamp)]) == 0
    first = stamp.read_bytes()
    assert first == check_params.STAMP_TEXT.encode()
    raw = yaml.safe_load(good.read_text())
    raw["world"]["sizes"]["default"]["pairs"] += 1  # a valid change: the same stamp
    good.write_text(yaml.safe_dump(raw))
    assert check_params.main(["--params", str(good), "--stamp", str(stamp)]) == 0
    assert stamp.read_bytes() == first
    (tmp_path / "bad").mkdir()
    bad = write_params(tmp_path / "bad", train={"batch_size": 0})
    stamp.write_text("left as it was")
    assert check_params.main(["--params", str(bad), "--stamp", str(stamp)]) == 2
    assert stamp.read_text() == "left as it was"
    assert "train.batch_size = 0: must be >= 1" in capsys.readouterr().err


# ---- dvc.yaml wiring -------------------------------------------------------------------------

STAMP_STAGE = "params"


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _stage_body(stage: dict) -> dict:
    return stage.get("do", stage)


def _stamp() -> str:
    outs = _stages()[STAMP_STAGE]["outs"]
    assert len(outs) == 1
    return next(iter(outs[0]))


def test_dvc_params_exist():
    for name, stage in _stages().items():
        for key in _stage_body(stage).get("params", []):
            node = RAW
            for part in str(key).split("."):
                if "${" in part:
                    break
                assert part in node, f"dvc.yaml stage {name}: params key {key} not in params.yaml"
                node = node[part]


def test_params_stage_comes_first_and_every_stage_depends_on_its_stamp():
    stages = _stages()
    assert next(iter(stages)) == STAMP_STAGE
    check = stages[STAMP_STAGE]
    stamp = _stamp()
    assert check["cmd"].split()[:3] == ["python", "-m", "cocu.check_params"]
    assert f"--stamp {stamp}" in check["cmd"] and "--params params.yaml" in check["cmd"]
    assert {"params.yaml", "cocu/config.py", "cocu/check_params.py"} <= set(check["deps"])
    assert check["outs"][0][stamp] == {"cache": False, "persist": True}  # a failed check leaves it as it was
    assert (REPO / stamp).read_text() == check_params.STAMP_TEXT  # committed, constant
    for name, stage in stages.items():
        if name != STAMP_STAGE:
            assert stamp in _stage_body(stage)["deps"], f"stage {name} does not depend on {stamp}"


def _cocu_imports(path: Path) -> set[str]:
    """Modules of `cocu` that a file imports anywhere (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cocu"):
            if node.module == "cocu":
                found |= {f"cocu.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cocu")}
    return found


def test_dvc_cmds_exist_and_deps_cover_imports():
    for name, stage in _stages().items():
        body = _stage_body(stage)
        words = body["cmd"].split()
        if words[1] == "-m":  # python -m package.module
            script = str(Path(*words[2].split("."))) + ".py"
        else:
            script = words[1]
        assert (REPO / script).is_file(), f"stage {name}: {script} missing"
        deps = set(body["deps"])
        assert script in deps
        for module in _cocu_imports(REPO / script):
            parts = module.split(".")
            candidates = {f"{Path(*parts)}.py", str(Path(*parts)), str(Path(*parts[:2]))}
            assert candidates & deps, f"stage {name}: imports {module} but deps lack {candidates}"


# ---- DVC end to end: a bad params file touches nothing -----------------------------------------


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**__import__("os").environ,
                                                                          "DVC_NO_ANALYTICS": "1"})


@pytest.mark.slow
def test_dvc_repro_with_bad_params_leaves_every_output_byte_identical(tmp_path):
    """A temporary repo with the real `params` stage and two stand-in stages (one committed
    metric, one cached output each) that track `index` params: after a good `dvc repro`, a bad
    params file (which also changes what those stages track) makes `dvc repro` fail at `params`
    and leaves every output byte-identical."""
    dvc = shutil.which("dvc") or pytest.skip("dvc not installed")
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "cocu", repo / "cocu", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    stamp = _stamp()
    (repo / stamp).parent.mkdir(parents=True)
    write = ("python -c \"import sys, time; from pathlib import Path; p = Path(sys.argv[1]); "
             "p.parent.mkdir(parents=True, exist_ok=True); p.write_text(sys.argv[2] + ' ' + str(time.time_ns()))\"")
    stand_ins = {
        name: {"cmd": f"{write} metrics/{name}.json {name} && {write} data/{name}/out.bin {name}",
               "deps": [stamp], "params": ["index"],
               "outs": [f"data/{name}/out.bin"], "metrics": [{f"metrics/{name}.json": {"cache": False}}]}
        for name in ("index", "concepts")
    }
    stand_ins["concepts"]["deps"].append("data/index/out.bin")
    # the stand-ins come first in the file: only their dependency on the stamp makes `params` run first
    pipeline = {"stages": {**stand_ins, STAMP_STAGE: _stages()[STAMP_STAGE]}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "repro"]):
        done = _run(cmd, repo)
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    outputs = [repo / stamp] + [repo / p for n in stand_ins for p in (f"metrics/{n}.json", f"data/{n}/out.bin")]
    before = {p: p.read_bytes() for p in outputs}
    assert all(before.values())

    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("  num_neighbours: 8", "  num_neighbours: 0", 1))
    done = _run([dvc, "repro"], repo)
    assert done.returncode != 0
    assert "index.num_neighbours = 0: must be >= 1" in done.stdout + done.stderr
    assert {p: p.read_bytes() for p in outputs} == before

    (repo / "params.yaml").write_text(text.replace("  num_neighbours: 8", "  num_neighbours: 4", 1))
    done = _run([dvc, "repro"], repo)  # a valid change re-runs what tracks it; the stamp stays the same
    assert done.returncode == 0, done.stdout + done.stderr
    assert (repo / stamp).read_bytes() == before[repo / stamp]
    assert (repo / "metrics/index.json").read_bytes() != before[repo / "metrics/index.json"]
