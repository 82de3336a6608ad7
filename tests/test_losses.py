"""Both losses against a loop restatement of docs/method.md §8, and the rank bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import cocu.training.losses as losses
from cocu.training.losses import ContrastiveLoss, GroupViTLoss, MultiLabelContrastiveLoss


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def reference_itc(img: torch.Tensor, txt: torch.Tensor, s: float) -> float:
    b = len(img)
    image_side = text_side = 0.0
    for i in range(b):
        li = [s * float(img[i] @ txt[j]) for j in range(b)]
        image_side += -(li[i] - math.log(sum(math.exp(v) for v in li)))
        lt = [s * float(txt[i] @ img[j]) for j in range(b)]
        text_side += -(lt[i] - math.log(sum(math.exp(v) for v in lt)))
    return 0.5 * (image_side / b + text_side / b)


def reference_mlc(img: torch.Tensor, prompts: torch.Tensor, s: float) -> float:
    """img [B, C] (one feature per image) or [B, G, C] (segments: an image scores a prompt by its
    best segment)."""
    b, k, _ = prompts.shape

    def score(i: int, p: torch.Tensor) -> float:
        return float(img[i] @ p) if img.dim() == 2 else max(float(g @ p) for g in img[i])

    image_side = 0.0
    for i in range(b):
        logits = {(j, m): s * score(i, prompts[j, m]) for j in range(b) for m in range(k)}
        log_z = math.log(sum(math.exp(v) for v in logits.values()))
        image_side += -sum((1 / k) * (logits[(i, m)] - log_z) for m in range(k))
    prompt_side = 0.0
    for i in range(b):
        for m in range(k):
            logits = [s * score(j, prompts[i, m]) for j in range(b)]
            prompt_side += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    return 0.5 * (image_side / b + prompt_side / (b * k))


def test_contrastive_loss_matches_formula() -> None:
    img, txt = unit(5, 8, seed=0), unit(5, 8, seed=1)
    got = ContrastiveLoss()(img, txt, torch.tensor(7.0))
    assert float(got) == pytest.approx(reference_itc(img, txt, 7.0), rel=1e-5)


def test_multilabel_loss_matches_formula() -> None:
    img, prompts = unit(4, 8, seed=2), unit(4, 3, 8, seed=3)
    got = MultiLabelContrastiveLoss()(img, prompts, torch.tensor(5.0))
    assert float(got) == pytest.approx(reference_mlc(img, prompts, 5.0), rel=1e-5)


def test_multilabel_loss_with_segments_scores_the_best_segment() -> None:
    segments, prompts = unit(4, 3, 8, seed=9), unit(4, 2, 8, seed=10)
    got = MultiLabelContrastiveLoss()(segments, prompts, torch.tensor(5.0))
    assert float(got) == pytest.approx(reference_mlc(segments, prompts, 5.0), rel=1e-5)
    # not the pooled feature's loss
    pooled = F.normalize(segments.mean(dim=1), dim=-1)
    assert float(got) != pytest.approx(reference_mlc(pooled, prompts, 5.0), rel=1e-3)


def test_total_loss_uses_segments_for_the_prompts_only() -> None:
    img, txt, prompts = unit(4, 8, seed=11), unit(4, 8, seed=12), unit(4, 2, 8, seed=13)
    segments = unit(4, 3, 8, seed=14)
    out = {"image_features": img, "text_features": txt, "prompt_features": prompts,
           "logit_scale": torch.tensor(10.0), "multi_label_logit_scale": torch.tensor(3.0)}
    pooled = GroupViTLoss()(out)
    best = GroupViTLoss()({**out, "group_features": segments})
    torch.testing.assert_close(best["itc"], pooled["itc"])  # the caption loss keeps the pooled feature
    assert float(best["mlc"]) == pytest.approx(reference_mlc(segments, prompts, 3.0), rel=1e-5)


def test_total_loss_weights_and_fp32() -> None:
    img, txt, prompts = unit(4, 8, seed=4), unit(4, 8, seed=5), unit(4, 2, 8, seed=6)
    out = {"image_features": img.bfloat16(), "text_features": txt, "prompt_features": prompts,
           "logit_scale": torch.tensor(10.0), "multi_label_logit_scale": torch.tensor(3.0)}
    got = GroupViTLoss(mlc_weight=0.5)(out)
    assert got["loss"].dtype == torch.float32
    torch.testing.assert_close(got["loss"], got["itc"] + 0.5 * got["mlc"])
    no_prompts = GroupViTLoss()({k: v for k, v in out.items() if k != "prompt_features"})
    assert float(no_prompts["mlc"]) == 0.0


def test_perfect_alignment_gives_low_loss() -> None:
    img = unit(6, 16, seed=7)
    assert float(ContrastiveLoss()(img, img, torch.tensor(100.0))) < 1e-3
    assert float(ContrastiveLoss()(img, unit(6, 16, seed=8), torch.tensor(100.0))) > 1.0


@pytest.mark.parametrize("loss_cls", [ContrastiveLoss, MultiLabelContrastiveLoss])
def test_simulated_two_ranks_average_to_the_global_loss(loss_cls, monkeypatch: pytest.MonkeyPatch) -> None:
    """world_size=2 without a process group: the gather returns the global batch, and the mean of
    the two ranks' losses is the single-process loss on the whole batch."""
    img = unit(6, 8, seed=9)
    other = unit(6, 8, seed=10) if loss_cls is ContrastiveLoss else unit(6, 2, 8, seed=11)
    scale = torch.tensor(4.0)
    full = loss_cls()(img, other, scale)
    halves = []
    for rank in range(2):
        lo, hi = 3 * rank, 3 * rank + 3
        local_img, local_other = img[lo:hi], other[lo:hi]
        globals_ = {id(local_img): img, id(local_other): other}
        monkeypatch.setattr(losses, "gather_with_grad", lambda x, world_size, g=globals_: g[id(x)])
        halves.append(loss_cls(rank=rank, world_size=2)(local_img, local_other, scale))
    torch.testing.assert_close(0.5 * (halves[0] + halves[1]), full)
