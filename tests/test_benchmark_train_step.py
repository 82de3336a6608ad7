"""benchmarks/train_step.py: its inputs, the single-process stand-ins for the official code's
imports, and (with a checkout of the official GroupViT) that both models match in size.

Timings are never checked. The comparison test needs COCU_OFFICIAL_GROUPVIT=/path/to/GroupViT
and einops installed; without them it is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "train_step.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_random_texts_are_shaped_like_clip_tokens(bench) -> None:
    g = torch.Generator().manual_seed(0)
    texts = bench.random_texts(200, 32, 10, 49408, g)
    assert texts.shape == (200, 32) and texts.dtype == torch.long
    assert (texts[:, 0] == 49406).all()
    eot = texts.argmax(-1)
    assert (texts[torch.arange(200), eot] == 49407).all() and ((texts == 49407).sum(-1) == 1).all()
    lengths = eot - 1  # ids between the start and the end-of-text token
    assert lengths.min() >= 5 and lengths.max() <= 15 and abs(lengths.float().mean() - 10) < 1
    assert ((texts[:, 1:] > 0).sum(-1) == lengths + 1).all()  # zero padding after the end-of-text token
    long = bench.random_texts(50, 32, 40, 49408, g)  # capped at the context
    assert 21 <= int(long.argmax(-1).min()) and int(long.argmax(-1).max()) <= 31


def test_official_standins_build_by_type_and_gather_one_process(bench, monkeypatch) -> None:
    for name in ("mmcv", "mmcv.utils", "diffdist", "diffdist.functional"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    bench.install_official_standins()
    registry = sys.modules["mmcv.utils"].Registry("model")

    @registry.register_module()
    class Thing:
        def __init__(self, width: int) -> None:
            self.width = width

    cfg = {"type": "Thing", "width": 3}
    assert registry.build(cfg).width == 3 and cfg == {"type": "Thing", "width": 3}  # cfg left as it was
    with pytest.raises(KeyError, match="Other"):
        registry.build({"type": "Other"})
    x = torch.randn(2, 3, requires_grad=True)
    gather = sys.modules["diffdist.functional"].all_gather
    out = gather([torch.zeros_like(x)], x)
    assert len(out) == 1 and out[0] is x
    with pytest.raises(RuntimeError, match="one process"):
        gather([torch.zeros_like(x)] * 2, x)


def test_official_config_refuses_values_the_official_code_fixes(bench) -> None:
    from dataclasses import replace

    from cocu.config import tiny_model_config

    cfg = tiny_model_config()
    spec = bench.official_config(cfg, 3, 1.0)
    assert spec["img_encoder"]["embed_dim"] == cfg.image.width and spec["multi_label"] == 3
    assert spec["img_encoder"]["num_group_tokens"] == list(cfg.image.num_group_tokens)
    with pytest.raises(SystemExit, match="token_mlp_ratio"):
        bench.official_config(replace(cfg, image=replace(cfg.image, token_mlp_ratio=0.25)), 3, 1.0)


@pytest.mark.slow
def test_without_a_checkout_it_times_ours_and_says_what_is_missing(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--batch", "4", "--reps", "1", "--warmup", "0",
                           "--threads", "1"], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| ours | step |" in done.stdout and "pass --official" in done.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--official", str(tmp_path)], capture_output=True,
                         text=True, timeout=300, cwd=REPO, env=ENV)
    assert bad.returncode != 0 and "no models/group_vit.py" in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("COCU_OFFICIAL_GROUPVIT")
                    or importlib.util.find_spec("einops") is None,
                    reason="needs COCU_OFFICIAL_GROUPVIT=/path/to/GroupViT and einops")
def test_official_model_has_our_parameter_counts_and_steps() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--official", os.environ["COCU_OFFICIAL_GROUPVIT"],
                           "--batch", "8", "--reps", "1", "--warmup", "0", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    total = next(line for line in done.stdout.splitlines() if line.startswith("| total |"))
    ours, theirs = total.strip("| ").split(" | ")[1:]
    assert ours == theirs and "differ" not in done.stdout
    assert "| official | step |" in done.stdout and "speed-up" in done.stdout
