"""Schedule values, linear lr scaling, step resolution and the weight-decay split."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from cocu.config import tiny_model_config
from cocu.models.factory import build_model
from cocu.schedule import CosineSchedule
from cocu.training.optim import build_optimizer, build_schedule, param_groups, resolve_steps, scale_lr
from tests.conftest import BASE_TRAIN


def test_schedule_at_warmup_start_end_and_last_step() -> None:
    sched = CosineSchedule(base_lr=1e-3, warmup_lr=1e-6, min_lr=1e-5, warmup_steps=10, total_steps=110)
    assert sched(0) == pytest.approx(1e-6)
    assert sched(5) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    assert sched(10) == pytest.approx(1e-3)
    assert sched(60) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))  # half-way down the cosine
    assert sched(110) == pytest.approx(1e-5)
    lrs = [sched(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_lr_scaling_and_paper_numbers() -> None:
    assert scale_lr(1.6e-3, 1024) == pytest.approx(4e-4)
    cfg = replace(BASE_TRAIN, batch_size=256, epochs=30, warmup_epochs=2)
    sched = build_schedule(cfg, world_size=4, samples_per_epoch=12_000_000)
    assert sched.base_lr == pytest.approx(4e-4)
    assert sched.warmup_lr == pytest.approx(1e-6) and sched.min_lr == pytest.approx(1e-5)
    assert sched.total_steps == math.ceil(30 * 12_000_000 / 1024)
    assert sched.warmup_steps == math.ceil(2 * 12_000_000 / 1024)


def test_explicit_steps_win_and_epochs_need_a_size() -> None:
    cfg = replace(BASE_TRAIN, batch_size=8, epochs=3, warmup_epochs=1, steps=50, warmup_steps=5, accum_steps=2)
    assert resolve_steps(cfg, world_size=2, samples_per_epoch=None) == (50, 5)
    with pytest.raises(ValueError, match="samples_per_epoch"):
        resolve_steps(replace(BASE_TRAIN, batch_size=8, epochs=3, warmup_epochs=1), 1, None)


def test_no_weight_decay_on_1d_params_embeddings_and_group_tokens() -> None:
    model = build_model(tiny_model_config())
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    names = {n: id(p) in decayed for n, p in model.named_parameters()}
    assert all(not d for n, d in names.items() if model.get_parameter(n).ndim < 2)
    for n in ("image_encoder.pos_embed", "image_encoder.stages.0.group_tokens",
              "text_encoder.positional_embedding", "logit_scale", "multi_label_logit_scale",
              "image_projector.net.1.weight"):  # BatchNorm weight
        assert not names[n], n
    for n in ("image_encoder.patch_embed.weight", "text_encoder.token_embedding.weight",
              "image_encoder.stages.0.grouping.assign.q.weight", "text_projector.net.0.weight"):
        assert names[n], n
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    opt = build_optimizer(model, replace(BASE_TRAIN, batch_size=8, epochs=1, warmup_epochs=0), lr=1e-3)
    assert opt.defaults["betas"] == (0.9, 0.999)
