"""cocu.clip.teacher: batched augmentation, schedule, held-out retrieval, and a training smoke run."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cocu.config import TeacherConfig
from cocu.clip.model import load_clip
from cocu.clip.teacher import (
    QualityProbe,
    augment,
    decode_corpus,
    retrieval_accuracy,
    run_teacher,
    split_holdout,
    teacher_schedule,
)
from cocu.data.shards import iter_samples
from tests.test_clip_model import TINY, make_shards

CFG = TeacherConfig(epochs=2, batch_size=32, lr=1e-3, weight_decay=0.1, warmup_steps=1, beta2=0.98, crop_scale_min=0.7,
                    crop_ratio_max=1.25, hflip=0.5, color_jitter=0.0, holdout_fraction=0.1, eval_batch_size=256, seed=0,
                    threads=1, log_every=1)


def _images(b: int = 4, s: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (b, s, s, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_augment_identity_flip_and_determinism() -> None:
    x = _images()
    unit = x.permute(0, 3, 1, 2).float() / 255
    ident = replace(CFG, epochs=1, batch_size=1, lr=1.0, crop_scale_min=1.0, crop_ratio_max=1.0, hflip=0.0)
    torch.testing.assert_close(augment(x, ident, torch.Generator().manual_seed(0)), unit, atol=1e-5, rtol=0)
    flip = replace(ident, hflip=1.0)
    torch.testing.assert_close(augment(x, flip, torch.Generator().manual_seed(0)), unit.flip(-1), atol=1e-5, rtol=0)
    a = augment(x, CFG, torch.Generator().manual_seed(3))
    b = augment(x, CFG, torch.Generator().manual_seed(3))
    assert a.shape == (4, 3, 8, 8) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.allclose(a, unit)  # crops differ from the input
    jit = replace(CFG, epochs=1, batch_size=1, lr=1.0, color_jitter=0.3)
    j = augment(x, jit, torch.Generator().manual_seed(0))
    assert float(j.min()) >= 0 and float(j.max()) <= 1


def test_lr_schedule() -> None:
    """open_clip's warm-up (step s at lr (s + 1) / warmup) and cosine to 0, bit for bit."""
    sched = teacher_schedule(replace(CFG, lr=1.0, warmup_steps=10), 100)
    assert sched(0) == pytest.approx(0.1)
    assert sched(9) == pytest.approx(1.0)
    assert sched(10) == pytest.approx(1.0)
    assert sched(55) == pytest.approx(0.5)
    assert sched(100) == pytest.approx(0.0, abs=1e-12)
    peak, warmup, total = 3e-4, 7, 50

    def open_clip_lr(step: int) -> float:  # open_clip's `cosine_lr` (the teacher's former own copy)
        if step < warmup:
            return peak * (step + 1) / warmup
        return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    sched = teacher_schedule(replace(CFG, lr=peak, warmup_steps=warmup), total)
    assert [sched(s) for s in range(total + 3)] == [open_clip_lr(s) for s in range(total + 3)]


def test_retrieval_accuracy_hand_built() -> None:
    eye = torch.eye(4)
    assert retrieval_accuracy(eye, eye, chunk=4) == {"i2t_top1": 1.0, "i2t_top5": 1.0, "t2i_top1": 1.0, "t2i_top5": 1.0}
    swapped = eye[[1, 0, 2, 3]]  # images 0 and 1 match each other's text
    r = retrieval_accuracy(eye, swapped, chunk=4)
    assert r["i2t_top1"] == 0.5 and r["t2i_top1"] == 0.5 and r["i2t_top5"] == 1.0
    # within chunks of 2, the swap is still a miss for items 0, 1 and a hit for 2, 3
    assert retrieval_accuracy(eye, swapped, chunk=2)["i2t_top1"] == 0.5
    # chunks of 3: the partial chunk (item 3) is left out -> 1 hit of 3
    assert retrieval_accuracy(eye, swapped, chunk=3)["i2t_top1"] == pytest.approx(1 / 3)


def test_split_holdout() -> None:
    assert split_holdout(100, 0.05) == (slice(0, 95), slice(95, 100))
    assert split_holdout(10, 0.0) == (slice(0, 10), slice(10, 10))
    assert split_holdout(3, 0.9) == (slice(0, 1), slice(1, 3))


def test_decode_corpus_resizes_with_open_clip_preprocessing(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, 5, size=24)
    corpus = decode_corpus(iter_samples(shards), image_size=16)
    assert corpus.images.shape == (5, 16, 16, 3) and corpus.images.dtype == torch.uint8
    assert corpus.keys == [f"s{i:05d}" for i in range(5)]


def test_teacher_smoke_run(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, 64)
    colours = ["red", "green", "blue", "yellow"]
    probe = QualityProbe.from_ground_truth(
        [f"s{i:05d}" for i in range(64)], [(colours[i % 4], "noise") for i in range(64)], colours, k=2
    )
    assert probe.salient["s00001"] == "green" and probe.present["s00001"] == ("green", "noise")
    weights, metrics = tmp_path / "teacher" / "clip.pt", tmp_path / "teacher" / "metrics.json"
    result = run_teacher(iter_samples(shards), TINY, CFG, weights, metrics, probe)
    assert len(result.losses) == 2 and all(math.isfinite(v) for v in result.losses)  # 57 train pairs: 1 step/epoch
    assert weights.is_file() and metrics.is_file()
    saved = json.loads(metrics.read_text())
    assert {"train_seconds", "decode_seconds", "total_seconds"} <= set(result.timings)
    assert not any("second" in key for key in saved["metrics"])  # the wall clock is not in the committed file
    for key in ("final_loss", "holdout_i2t_top1", "holdout_t2i_top5", "weights_sha256",
                "holdout_zeroshot_top1_present", "holdout_zeroshot_top1_salient", "holdout_neighbour_jaccard",
                "holdout_neighbour_random_jaccard"):
        assert key in saved["metrics"], key
    assert saved["metrics"]["holdout_pairs"] == 6 and len(saved["losses"]) == 2
    model, *_, digest = load_clip(TINY, weights)
    assert digest == saved["metrics"]["weights_sha256"]
