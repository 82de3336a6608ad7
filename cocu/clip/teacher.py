"""The `teacher` stage library: contrastive training of the tiny CLIP on the teacher corpus.

The corpus is decoded once into a uint8 tensor (open_clip's validation preprocessing, before
normalisation); augmentation runs batched on tensors: a random resized crop and horizontal flip
per image (one `grid_sample` for the whole batch), and an optional mild brightness/contrast/
saturation jitter (off by default: in the synthetic world colour is part of class identity).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from cocu.config import ClipConfig, TeacherConfig
from cocu.clip.model import image_norm, load_clip, save_weights
from cocu.clip.quality import teacher_quality
from cocu.schedule import CosineSchedule
from cocu.tracking.run_info import write_json

log = logging.getLogger(__name__)


class SampleLike(Protocol):  # cocu.data.shards.Sample
    key: str
    image: Any  # PIL.Image.Image, RGB
    caption: str


@dataclass
class TeacherCorpus:
    keys: list[str]
    images: torch.Tensor  # [N, S, S, 3] uint8
    captions: list[str]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class TeacherResult:
    losses: list[float]  # per step
    metrics: dict[str, float]  # what the run measured (the same for the same inputs and seed)
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch
    timings: dict[str, float] = field(default_factory=dict)  # wall clock (`*_seconds`): MLflow only


def decode_corpus(samples: Iterable[SampleLike], image_size: int) -> TeacherCorpus:
    """Decode every sample once: open_clip's val resize/crop, kept as uint8 [N, S, S, 3]."""
    to_unit = open_clip.image_transform(image_size, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3)
    keys, captions, images = [], [], []
    for s in samples:
        if s.image.size == (image_size, image_size):  # the transform is the identity here
            arr = torch.from_numpy(np.asarray(s.image.convert("RGB"), dtype=np.uint8).copy())
        else:
            arr = (to_unit(s.image) * 255.0).round().to(torch.uint8).permute(1, 2, 0)
        keys.append(s.key)
        captions.append(s.caption)
        images.append(arr)
    if not images:
        raise ValueError("teacher corpus is empty")
    return TeacherCorpus(keys, torch.stack(images), captions)


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[B, S, S, 3] uint8 -> [B, 3, S, S] float32, normalised like open_clip's preprocessing."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def augment(images: torch.Tensor, cfg: TeacherConfig, g: torch.Generator) -> torch.Tensor:
    """[B, S, S, 3] uint8 -> [B, 3, S, S] float in [0, 1]: per-image random resized crop + flip
    (+ optional colour jitter). The crop is the batched form of torchvision's RandomResizedCrop."""
    b = images.shape[0]
    x = images.permute(0, 3, 1, 2).float().div_(255.0)  # [B, 3, S, S]
    area = torch.empty(b).uniform_(cfg.crop_scale_min, 1.0, generator=g)
    log_r = torch.empty(b).uniform_(-math.log(cfg.crop_ratio_max), math.log(cfg.crop_ratio_max), generator=g)
    ratio = log_r.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # crop size as a fraction of the side
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - w)  # crop centre in [-1, 1] coordinates
    cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=g) < cfg.hflip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        bri, con, sat = (torch.empty(3, b, 1, 1, 1).uniform_(1 - j, 1 + j, generator=g)).unbind(0)
        x = x * bri
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * con + mean
        grey = x.mean(dim=1, keepdim=True)
        x = ((x - grey) * sat + grey).clamp_(0.0, 1.0)
    return x


def _normalize_float(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's split: no weight decay on gains, biases, embeddings and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        exclude = exclude or "embedding" in name or "class_embedding" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def teacher_schedule(cfg: TeacherConfig, total_steps: int) -> CosineSchedule:
    """open_clip's schedule: linear warm-up to `cfg.lr` (step s of the warm-up at lr (s + 1) /
    warmup_steps), then cosine to 0 at `total_steps`."""
    return CosineSchedule(base_lr=cfg.lr, warmup_lr=0.0, min_lr=0.0, warmup_steps=cfg.warmup_steps,
                          total_steps=total_steps, warmup_offset=1)


@torch.inference_mode()
def encode_images(
    model: torch.nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float], batch_size: int = 512
) -> torch.Tensor:
    """[N, S, S, 3] uint8 -> [N, D] unit-norm float32 image features (no augmentation)."""
    out = [model.encode_image(normalize_uint8(images[i : i + batch_size], mean, std), normalize=True)
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.inference_mode()
def encode_texts(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """[N, C] int64 tokens -> [N, D] unit-norm float32 text features."""
    return torch.cat([model.encode_text(tokens[i : i + batch_size], normalize=True)
                      for i in range(0, len(tokens), batch_size)])


def retrieval_accuracy(image_feat: torch.Tensor, text_feat: torch.Tensor, chunk: int) -> dict[str, float]:
    """Image->text and text->image top-1/top-5 of the paired item, within consecutive chunks of
    `chunk` pairs (the size of a training batch), averaged over their items; a last partial
    chunk is left out (it would be an easier task) unless there is no full chunk."""
    hits = {"i2t_top1": 0.0, "i2t_top5": 0.0, "t2i_top1": 0.0, "t2i_top5": 0.0}
    n = len(image_feat) if len(image_feat) < chunk else len(image_feat) // chunk * chunk
    for lo in range(0, n, chunk):
        im, tx = image_feat[lo : lo + chunk], text_feat[lo : lo + chunk]
        sims = im @ tx.T  # [c, c]
        target = torch.arange(len(im))
        for name, s in (("i2t", sims), ("t2i", sims.T)):
            # rank of the true pair = number of candidates scoring strictly higher
            rank = (s > s[target, target][:, None]).sum(1)
            hits[f"{name}_top1"] += float((rank < 1).sum())
            hits[f"{name}_top5"] += float((rank < 5).sum())
    return {k: v / max(1, n) for k, v in hits.items()}


def split_holdout(n: int, fraction: float) -> tuple[slice, slice]:
    """(train, held-out) row slices: the held-out split is the last `fraction` of the corpus."""
    n_hold = min(n - 1, max(1, int(round(n * fraction)))) if fraction > 0 else 0
    return slice(0, n - n_hold), slice(n - n_hold, n)


def train_teacher(
    model: torch.nn.Module,
    corpus: TeacherCorpus,
    tokenizer: Callable[[list[str]], torch.Tensor],
    cfg: TeacherConfig,
    mean: Sequence[float],
    std: Sequence[float],
    max_steps: Optional[int] = None,
    on_epoch: Optional[Callable[[int, torch.nn.Module], dict[str, float]]] = None,
) -> TeacherResult:
    """Train `model` in place with open_clip's ClipLoss, AdamW and a cosine schedule; measure
    held-out retrieval at the end. `max_steps` truncates the run (smoke tests); `on_epoch(epoch,
    model)` may return extra metrics to record per epoch (model is in eval mode during the call)."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(cfg.seed)
    tokens = tokenizer(corpus.captions)  # [N, C]
    train_rows, hold_rows = split_holdout(len(corpus), cfg.holdout_fraction)
    train_idx = torch.arange(len(corpus))[train_rows]
    bs = min(cfg.batch_size, len(train_idx))
    steps_per_epoch = len(train_idx) // bs
    total = steps_per_epoch * cfg.epochs if max_steps is None else min(max_steps, steps_per_epoch * cfg.epochs)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-6)
    schedule = teacher_schedule(cfg, total)
    loss_fn = open_clip.ClipLoss()
    losses: list[float] = []
    history: list[dict[str, float]] = []
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        perm = train_idx[torch.randperm(len(train_idx), generator=g)]
        for b in range(steps_per_epoch):
            if step >= total:
                break
            rows = perm[b * bs : (b + 1) * bs]
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            x = _normalize_float(augment(corpus.images[rows], cfg, g), mean, std)
            img_f, txt_f, scale = model(x, tokens[rows])[:3]
            loss = loss_fn(img_f, txt_f, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"teacher loss is {losses[-1]} at step {step}")
            if cfg.log_every and step % cfg.log_every == 0:
                log.info("teacher step %d/%d loss %.4f lr %.2e", step, total, losses[-1], opt.param_groups[0]["lr"])
            step += 1
        row = {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses[-max(1, steps_per_epoch):]))}
        if on_epoch is not None:
            model.eval()
            row.update(on_epoch(epoch + 1, model))
            model.train()
        history.append(row)
        log.info("teacher epoch %d: %s (%.0f s)", epoch + 1, row, time.perf_counter() - t0)
        if step >= total:
            break
    model.eval()
    train_s = time.perf_counter() - t0
    metrics: dict[str, float] = {"steps": step, "final_loss": losses[-1] if losses else float("nan"),
                                 "train_pairs": len(train_idx), "holdout_pairs": hold_rows.stop - hold_rows.start}
    if hold_rows.stop > hold_rows.start:
        img_f = encode_images(model, corpus.images[hold_rows], mean, std)
        txt_f = encode_texts(model, tokens[hold_rows])
        metrics.update({f"holdout_{k}": v for k, v in retrieval_accuracy(img_f, txt_f, cfg.eval_batch_size).items()})
    return TeacherResult(losses=losses, metrics=metrics, seconds=time.perf_counter() - t0, history=history,
                         timings={"train_seconds": train_s})


def headline(metrics: Mapping[str, Any], skipped: int) -> dict[str, float]:
    """The teacher stage's DVC metrics: pairs it trained on, samples skipped reading the corpus,
    final loss and zero-shot top-1 concept accuracy on the held-out split (when probed)."""
    out = {"pairs": metrics["train_pairs"], "skipped": skipped, "loss": metrics["final_loss"]}
    if "holdout_zeroshot_top1_present" in metrics:
        out["zeroshot_top1"] = metrics["holdout_zeroshot_top1_present"]
    return out


@dataclass(frozen=True)
class QualityProbe:
    """Hidden ground truth for measuring the teacher on its held-out split (synthetic world only)."""

    concept_names: Sequence[str]  # the world's concepts, prompted with `prompt`
    present: Mapping[str, Sequence[str]]  # sample key -> ground-truth present concepts
    salient: Optional[Mapping[str, str]] = None  # sample key -> the most salient present concept
    prompt: str = "a photo of a {}"
    k: int = 8  # neighbours for precision@k

    @classmethod
    def from_ground_truth(
        cls, keys: Sequence[str], present: Sequence[Sequence[str]], concept_names: Sequence[str],
        prompt: str = "a photo of a {}", k: int = 8,
    ) -> "QualityProbe":
        """From the manifest's `gt_present` lists (most salient first, as the world writes them)."""
        present_map = {key: tuple(p) for key, p in zip(keys, present)}
        salient = {key: p[0] for key, p in present_map.items() if p}
        return cls(tuple(concept_names), present_map, salient, prompt, k)


def probe_quality(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    images: torch.Tensor,  # [N, S, S, 3] uint8
    keys: Sequence[str],
    probe: QualityProbe,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 0,
) -> dict[str, float]:
    """Zero-shot concept accuracy and neighbour precision of `model` on the given images."""
    img = encode_images(model, images, mean, std).numpy()
    txt = encode_texts(model, tokenizer([probe.prompt.format(c) for c in probe.concept_names])).numpy()
    salient = [probe.salient.get(k, "") for k in keys] if probe.salient is not None else None
    return teacher_quality(img, txt, probe.concept_names, [probe.present[k] for k in keys], salient, probe.k, seed)


def run_teacher(
    samples: Iterable[SampleLike],
    clip_cfg: ClipConfig,
    cfg: TeacherConfig,
    weights_out: Path,
    metrics_out: Path,
    probe: Optional[QualityProbe] = None,
) -> TeacherResult:
    """The whole `teacher` stage: decode the corpus, train a fresh tiny CLIP, measure it on the
    held-out split, write the weights (state_dict, atomically) and a json of its metrics, epoch
    history and per-step losses to `metrics_out`. Wall-clock times are in `result.timings` only, so
    the json is byte-identical for the same corpus and settings."""
    if clip_cfg.source != "synthetic":
        raise ValueError("the teacher stage trains the synthetic profile's tiny CLIP only")
    t0 = time.perf_counter()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    corpus = decode_corpus(samples, clip_cfg.image_size)
    decode_s = time.perf_counter() - t0
    log.info("teacher corpus: %d pairs decoded in %.1f s", len(corpus), decode_s)
    torch.manual_seed(cfg.seed)
    model, _, _, tokenizer, _ = load_clip(clip_cfg, None)
    mean, std = image_norm(model)
    result = train_teacher(model, corpus, tokenizer, cfg, mean, std)
    result.timings["decode_seconds"] = decode_s
    _, hold = split_holdout(len(corpus), cfg.holdout_fraction)
    if probe is not None and hold.stop > hold.start:
        q = probe_quality(model, tokenizer, corpus.images[hold], corpus.keys[hold], probe, mean, std, cfg.seed)
        result.metrics.update({f"holdout_{k}": v for k, v in q.items()})
    result.metrics["weights_sha256"] = save_weights(model, weights_out)
    result.timings["total_seconds"] = time.perf_counter() - t0
    write_json(metrics_out, {"metrics": result.metrics, "history": result.history, "losses": result.losses})
    return result
