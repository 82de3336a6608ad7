"""The pre-training step of this repo's GroupViT, timed side by side with the official GroupViT.

    python benchmarks/train_step.py --threads 2                           # ours only (params.yaml)
    python benchmarks/train_step.py --threads 2 --official /path/to/GroupViT
    python benchmarks/train_step.py --threads 2 --official /path/to/GroupViT \
        --profile paper-cc3m --batch 8                                     # the paper config, small batch
    python benchmarks/train_step.py --threads 2 --parts                   # where our step's time goes
    python benchmarks/train_step.py --threads 2 --data                    # the data path per batch

Both models are built from the `model:` and `train:` sections of one params file (`--params`,
optionally overlaid with `--profile NAME` from profiles/, `--batch` overriding train.batch_size):
image size, patch, width, depths, heads, group tokens, output groups, text width/layers/heads/
context, projector hidden/out, K prompts, batch. One step is forward + both losses + backward
("fwd+bwd"), then gradient clipping + AdamW + zero_grad ("opt"), as each code base trains:
ours with `cocu.training.optim.build_optimizer` (fused AdamW), the official one with
`torch.optim.AdamW` over its two weight-decay groups, as its `utils/optimizer.py` builds it.
Both run on the same random batch (images, a caption of about `--caption-tokens` BPE tokens and
K prompts of about `--prompt-tokens`), at a fixed thread count, with repetitions interleaved
(ours, official, ours, official, ...) so that a change of machine load hits both; the table
gives medians, the quartiles and the speed-up official / ours (> 1: ours is faster).

The official code (NVlabs/GroupViT, NVIDIA Source Code License, non-commercial) is not part of
this repo: `--official` points at a checkout of it, which is imported like an installed library.
It imports `mmcv.utils.Registry` and `diffdist`, which are heavy or unmaintained; for one process
the benchmark provides stand-ins (a registry that builds a class from its `type` name; an
all-gather that returns its input), and `torch.distributed.get_rank/get_world_size` answer 0 and
1 inside its loss module. It also needs `einops` (`pip install einops`; not a dependency of this
repo), `timm` and `omegaconf`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from cocu.config import ModelConfig, Params, from_dict, load_params
from cocu.launch.device import autocast_context, peak_memory_gib, reset_peak_memory, synchronize
from cocu.models.factory import build_model, parameter_counts
from cocu.models.layers import count_parameters
from cocu.training.losses import GroupViTLoss
from cocu.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class Inputs:
    images: Tensor  # [B, 3, S, S]
    captions: Tensor  # int64 [B, T]
    prompts: Optional[Tensor]  # int64 [B, K, T] or None (K = 0)


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   clip: float) -> Callable[[], None]:
    """The optimizer half of a training step, the same for both models: clip, step, zero the grads."""

    def opt() -> None:
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return opt


def random_texts(n: int, context: int, mean_tokens: int, vocab: int, g: torch.Generator) -> Tensor:
    """n CLIP-BPE-shaped texts [n, context]: start token, L ids, end-of-text (the largest id),
    zero padding; L uniform in [mean/2, 3 mean/2], at most context - 2."""
    lo = max(1, round(mean_tokens / 2))
    hi = max(lo, min(context - 2, round(1.5 * mean_tokens)))
    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    out = torch.zeros(n, context, dtype=torch.long)
    pos = torch.arange(context)
    ids = torch.randint(1, vocab - 2, (n, context), generator=g)
    body = (pos >= 1) & (pos <= lengths[:, None])
    out[body] = ids[body]
    out[:, 0] = vocab - 2  # start of text
    out[torch.arange(n), lengths + 1] = vocab - 1  # end of text
    return out


def make_inputs(cfg: ModelConfig, batch: int, k: int, caption_tokens: int, prompt_tokens: int,
                device: torch.device, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    s, t, v = cfg.image.img_size, cfg.text.context_length, cfg.text.vocab_size
    images = torch.randn(batch, cfg.image.in_chans, s, s, generator=g)
    captions = random_texts(batch, t, caption_tokens, v, g)
    prompts = random_texts(batch * k, t, prompt_tokens, v, g).view(batch, k, t) if k else None
    return Inputs(images.to(device), captions.to(device), prompts.to(device) if prompts is not None else None)


# --------------------------------------------------------------------------------------------
# the two training steps


@dataclass
class Step:
    """One code base's model, its training step split into fwd+bwd and opt, and its parameter counts."""

    name: str
    model: nn.Module
    fwd_bwd: Callable[[], Tensor]  # forward, losses, backward; returns the loss
    opt: Callable[[], None]  # clip, optimizer step, zero_grad
    counts: dict[str, int]
    peak_gib: Optional[float] = None  # peak CUDA memory of a step (None on CPU)


def our_step(params: Params, inputs: Inputs, device: torch.device, amp: Optional[str]) -> Step:
    torch.manual_seed(0)
    model = build_model(params.model).to(device).train()
    loss_fn = GroupViTLoss(mlc_weight=params.train.mlc_weight)
    optimizer = build_optimizer(model, params.train, lr=1e-4)
    clip = params.train.clip_grad

    def fwd_bwd() -> Tensor:
        with autocast_context(device, amp):
            out = model(inputs.images, inputs.captions, inputs.prompts)
        loss = loss_fn(out)["loss"]
        loss.backward()
        return loss.detach()

    return Step("ours", model, fwd_bwd, optimizer_step(model, optimizer, clip), parameter_counts(model))


def install_official_standins() -> None:
    """Single-process stand-ins for the two modules the official code imports but cannot get here:
    `mmcv.utils.Registry` (register classes by name, build one from a dict with a `type` key) and
    `diffdist.functional.all_gather` (differentiable all-gather: with one process, the input)."""

    class Registry:
        def __init__(self, name: str) -> None:
            self.name = name
            self.classes: dict[str, type] = {}

        def register_module(self, name: Optional[str] = None) -> Callable[[type], type]:
            def register(cls: type) -> type:
                self.classes[name or cls.__name__] = cls
                return cls
            return register

        def build(self, cfg: dict[str, Any]) -> Any:
            cfg = dict(cfg)
            kind = cfg.pop("type")
            if kind not in self.classes:
                raise KeyError(f"{kind!r} is not registered in {self.name} ({sorted(self.classes)})")
            return self.classes[kind](**cfg)

    def all_gather(out_list: list[Tensor], x: Tensor) -> list[Tensor]:
        if len(out_list) != 1:
            raise RuntimeError("the diffdist stand-in serves one process only")
        return [x]

    mmcv, mmcv_utils = types.ModuleType("mmcv"), types.ModuleType("mmcv.utils")
    mmcv_utils.Registry = Registry  # type: ignore[attr-defined]
    mmcv.utils = mmcv_utils  # type: ignore[attr-defined]
    diffdist, functional = types.ModuleType("diffdist"), types.ModuleType("diffdist.functional")
    functional.all_gather = all_gather  # type: ignore[attr-defined]
    diffdist.functional = functional  # type: ignore[attr-defined]
    for name, module in [("mmcv", mmcv), ("mmcv.utils", mmcv_utils), ("diffdist", diffdist),
                         ("diffdist.functional", functional)]:
        sys.modules.setdefault(name, module)


def import_official(path: Path) -> types.ModuleType:
    """The official `models` package from a GroupViT checkout at `path`."""
    if not (path / "models" / "group_vit.py").is_file():
        raise SystemExit(f"--official {path}: no models/group_vit.py there (expected a GroupViT checkout)")
    try:
        importlib.import_module("einops")
    except ImportError:
        raise SystemExit("the official GroupViT needs einops: pip install einops") from None
    install_official_standins()
    sys.path.insert(0, str(path))
    try:
        import warnings

        with warnings.catch_warnings():  # timm.models.layers is a deprecated alias in timm >= 0.9
            warnings.simplefilter("ignore", FutureWarning)
            models = importlib.import_module("models")
            mlc = importlib.import_module("models.multi_label_contrastive")
    finally:
        sys.path.remove(str(path))
    if not Path(models.__file__).resolve().is_relative_to(path.resolve()):
        raise SystemExit(f"imported 'models' from {models.__file__}, not from {path}")
    # its losses ask torch.distributed for the rank and world size: one process
    one = types.SimpleNamespace(get_rank=lambda: 0, get_world_size=lambda: 1)
    mlc.dist = one  # type: ignore[attr-defined]
    return models


def official_config(cfg: ModelConfig, k: int, mlc_weight: float) -> dict[str, Any]:
    """The official `model:` config dict for our ModelConfig (what the official yml would say).

    The official code fixes some values that our config exposes: those must be at the official
    values, or the two models would differ (an error says which)."""
    img, txt = cfg.image, cfg.text
    fixed = {"model.image.mlp_ratio": (img.mlp_ratio, 4.0),
             "model.image.token_mlp_ratio": (img.token_mlp_ratio, 0.5),
             "model.text.mlp_ratio": (txt.mlp_ratio, 4.0),
             "model.max_logit_scale": (cfg.max_logit_scale, 100.0)}
    for key, (ours, theirs) in fixed.items():
        if ours != theirs:
            raise SystemExit(f"{key} = {ours}: the official code fixes it at {theirs}")
    return {
        "type": "MultiLabelContrastive",
        "img_encoder": {
            "type": "GroupViT", "img_size": img.img_size, "patch_size": img.patch_size,
            "in_chans": img.in_chans,
            "embed_dim": img.width, "depths": list(img.depths), "num_heads": list(img.num_heads),
            "num_group_tokens": list(img.num_group_tokens), "num_output_groups": list(img.num_output_groups),
            "drop_rate": 0.0, "drop_path_rate": img.drop_path, "hard_assignment": True},
        "text_encoder": {"type": "TextTransformer", "context_length": txt.context_length, "width": txt.width,
                         "layers": txt.layers, "vocab_size": txt.vocab_size},
        "contrast_temperature": cfg.temperature, "proj_num_layers": 2, "output_dim": cfg.projector.out_dim,
        "multi_label": k, "share_temperature": False, "multi_label_loss_weight": mlc_weight,
    }


def build_official(models: types.ModuleType, params: Params) -> nn.Module:
    """The official MultiLabelContrastive at our config, with the three knobs its constructor does
    not take set on the built modules: text heads (it uses width // 64), projector hidden width
    (it uses 4096) and the Gumbel noise / temperature of the assignment."""
    cfg, k = params.model, params.train.num_prompts
    model = models.builder.MODELS.build(official_config(cfg, k, params.train.mlc_weight))
    heads = cfg.text.heads
    for block in model.text_encoder.transformer.resblocks:
        block.attn.num_heads, block.attn.head_dim = heads, cfg.text.width // heads
    mlc = sys.modules["models.multi_label_contrastive"]
    for attr, width in (("img_projector", cfg.image.width), ("text_projector", cfg.text.width)):
        head = mlc.ProjectMLP(in_dim=width, inner_dim=cfg.projector.hidden_dim, out_dim=cfg.projector.out_dim,
                              num_layers=2)
        setattr(model, attr, nn.SyncBatchNorm.convert_sync_batchnorm(head))  # as its constructor does
    for layer in model.img_encoder.layers:
        if layer.downsample is not None:
            layer.downsample.assign.gumbel = cfg.image.gumbel_noise
            layer.downsample.assign.gumbel_tau = cfg.image.gumbel_tau
    return model


def official_counts(model: nn.Module) -> dict[str, int]:
    parts = {"image_encoder": "img_encoder", "text_encoder": "text_encoder",
             "image_projector": "img_projector", "text_projector": "text_projector"}
    counts = {ours: count_parameters(getattr(model, theirs)) for ours, theirs in parts.items()}
    counts["total"] = count_parameters(model)
    return counts


def official_step(models: types.ModuleType, params: Params, inputs: Inputs, device: torch.device,
                  amp: Optional[str]) -> Step:
    torch.manual_seed(0)
    model = build_official(models, params).to(device).train()
    decay, no_decay = [], []  # utils/optimizer.py: set_weight_decay(model, {}, {})
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4,
                                  eps=1e-8, betas=params.train.betas, weight_decay=params.train.weight_decay)
    clip = params.train.clip_grad
    text = inputs.captions  # [B, T], or [B, 1 + K, T]: the caption first, as its data pipeline stacks them
    if inputs.prompts is not None:
        text = torch.cat([inputs.captions[:, None], inputs.prompts], 1)

    def fwd_bwd() -> Tensor:
        with autocast_context(device, amp):
            losses = model(inputs.images, text)  # dict(loss=..., multi_label_loss=...)
        loss = sum(losses.values())
        loss.backward()
        return loss.detach()

    return Step("official", model, fwd_bwd, optimizer_step(model, optimizer, clip), official_counts(model))


# --------------------------------------------------------------------------------------------
# timing


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleave(steps: list[Step], reps: int, warmup: int, device: torch.device
               ) -> dict[str, dict[str, list[float]]]:
    """Per step name: lists of fwd+bwd, opt and whole-step seconds, one per repetition; the steps
    take turns within each repetition (A, B, A, B, ...), the first `warmup` repetitions dropped."""
    times: dict[str, dict[str, list[float]]] = {s.name: {"fwd_bwd": [], "opt": [], "step": []} for s in steps}
    for rep in range(warmup + reps):
        for s in steps:
            reset_peak_memory(device)
            a = timed(s.fwd_bwd, device)
            b = timed(s.opt, device)
            peak = peak_memory_gib(device)
            if peak is not None:
                s.peak_gib = max(s.peak_gib or 0.0, peak)
            if rep >= warmup:
                times[s.name]["fwd_bwd"].append(a)
                times[s.name]["opt"].append(b)
                times[s.name]["step"].append(a + b)
    return times


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def keep_heap(top_pad_mib: int = 256) -> bool:
    """glibc malloc: serve allocations up to 32 MiB from the heap and never give freed heap back to
    the OS (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD). By default every large
    activation or gradient is a fresh mmap whose pages fault in on first touch, each step again
    (~10-17k minor faults per step of the default model). Process-wide: both models profit.
    False where there is no glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(libc.mallopt(option, value) == 1 for option, value in (
        (m_mmap_threshold, 32 * 2**20), (m_trim_threshold, 2**31 - 1), (m_top_pad, top_pad_mib * 2**20)))


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def report(times: dict[str, dict[str, list[float]]], batch: int) -> None:
    print("| step | part | median s | quartiles s | images/s (median) |")
    print("|---|---|---:|---|---:|")
    for name, parts in times.items():
        for part, xs in parts.items():
            q1, q2, q3 = quartiles(xs)
            print(f"| {name} | {part} | {q2:.4f} | {q1:.4f}-{q3:.4f} | {batch / q2:.1f} |")
    if "official" in times:
        print()
        print("speed-up, official / ours (median of the per-repetition ratios, and ratio of medians):")
        for part in ("fwd_bwd", "opt", "step"):
            ours, theirs = times["ours"][part], times["official"][part]
            paired = statistics.median(t / o for o, t in zip(ours, theirs))
            print(f"  {part:8s} {paired:5.2f}x  ({statistics.median(theirs) / statistics.median(ours):.2f}x)")


def print_counts(steps: list[Step]) -> None:
    names = list(steps[0].counts)
    print("| parameters | " + " | ".join(s.name for s in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    for key in names:
        print(f"| {key} | " + " | ".join(f"{s.counts[key]:,}" for s in steps) + " |")
    if len(steps) == 2 and steps[0].counts != steps[1].counts:
        diff = {k: steps[0].counts[k] - steps[1].counts[k] for k in names
                if steps[0].counts[k] != steps[1].counts[k]}
        print(f"parameter counts differ (ours - official): {diff}")


# --------------------------------------------------------------------------------------------
# our step, part by part


def parts_breakdown(params: Params, inputs: Inputs, device: torch.device, reps: int, warmup: int) -> None:
    """Median seconds of each part of our step, each timed on its own (forward, then backward from
    a fixed random cotangent): image tower + projector, text tower + projector, the two losses,
    clip + AdamW; then the whole step for comparison with their sum."""
    torch.manual_seed(0)
    model = build_model(params.model).to(device).train()
    loss_fn = GroupViTLoss(mlc_weight=params.train.mlc_weight)
    optimizer = build_optimizer(model, params.train, lr=1e-4)
    b, k = inputs.captions.shape[0], 0 if inputs.prompts is None else inputs.prompts.shape[1]
    texts = inputs.captions
    if inputs.prompts is not None:
        texts = torch.cat([inputs.captions, inputs.prompts.flatten(0, 1)])
    with torch.no_grad():
        ref = model(inputs.images, inputs.captions, inputs.prompts)
    leaves = {key: v.detach().clone().requires_grad_() for key, v in ref.items()}
    g_image = torch.randn_like(ref["image_features"])
    g_text = torch.randn(texts.shape[0], ref["text_features"].shape[1], device=device)
    out: dict[str, Tensor] = {}

    def image_fwd() -> None:
        out["image"] = model.encode_image(inputs.images)

    def image_bwd() -> None:
        out.pop("image").backward(g_image)

    def text_fwd() -> None:
        out["text"] = model.encode_text(texts)

    def text_bwd() -> None:
        out.pop("text").backward(g_text)

    def loss_fwd() -> None:
        out["loss"] = loss_fn(leaves)["loss"]

    def loss_bwd() -> None:
        out.pop("loss").backward()

    def opt() -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.train.clip_grad or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def whole() -> None:
        loss_fn(model(inputs.images, inputs.captions, inputs.prompts))["loss"].backward()
        opt()

    parts = [("image tower + projector, forward", image_fwd),
             ("image tower + projector, backward", image_bwd),
             (f"text tower + projector ({b}x(1+{k}) texts), forward", text_fwd),
             ("text tower + projector, backward", text_bwd),
             ("losses (itc + mlc), forward", loss_fwd), ("losses, backward", loss_bwd),
             ("clip + AdamW + zero_grad", opt), ("whole step", whole)]
    times: dict[str, list[float]] = {name: [] for name, _ in parts}
    for rep in range(warmup + reps):
        for name, fn in parts:
            t = timed(fn, device)
            if rep >= warmup:
                times[name].append(t)
        model.zero_grad(set_to_none=True)
    total = statistics.median(times["whole step"])
    print("| part of our step | median ms | share of the whole step |")
    print("|---|---:|---:|")
    summed = 0.0
    for name, _ in parts:
        m = statistics.median(times[name])
        if name != "whole step":
            summed += m
        print(f"| {name} | {1000 * m:.1f} | {100 * m / total:.0f}% |")
    print(f"| sum of the parts | {1000 * summed:.1f} | {100 * summed / total:.0f}% |")


def op_profile(step: Step, device: torch.device, warmup: int, rows: int) -> None:
    """torch.profiler over 3 of our steps: the operators taking the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step.fwd_bwd()
        step.opt()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step.fwd_bwd()
            step.opt()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# --------------------------------------------------------------------------------------------
# the data path


def data_path(params: Params, params_file: Path, reps: int, warmup: int) -> None:
    """The real input pipeline (read + decode + augment + prompts + tokenise) on the pairs of
    `params_file`'s paths (relative to its folder), first variant of `pretrain.variants`:

    1. seconds per batch in this process (data.workers = 0);
    2. whether it takes CPU from training: our step on a real batch, timed alone and fed by a
       DataLoader with `data.workers` (>= 1) worker processes, interleaved. While the loader's
       prefetch queue is full its workers idle, so "alone" steps run without them; "fed" steps
       run while a worker prepares the next batch (plus any wait for it, reported apart)."""
    from cocu.launch.distributed import DistInfo
    from cocu.training.pretrain import build_data

    os.chdir(params_file.resolve().parent)
    variant = params.pretrain.variants[0]
    inline = build_data(replace(params, data=replace(params.data, workers=0)), variant, 0, DistInfo())
    it = inline.make_batches(0)
    fixed = next(it)  # tokenizer, token cache, first shard
    ts = [timed(lambda: next(it), torch.device("cpu")) for _ in range(reps)]
    q1, q2, q3 = quartiles(ts)
    print(f"data path ({variant}, batch {params.train.batch_size}, in this process, "
          f"{torch.get_num_threads()} threads): median {1000 * q2:.1f} ms per batch "
          f"(quartiles {1000 * q1:.1f}-{1000 * q3:.1f}), {params.train.batch_size / q2:.0f} images/s")

    workers = max(1, params.data.workers)
    fed_data = build_data(replace(params, data=replace(params.data, workers=workers)), variant, 0, DistInfo())
    loader = fed_data.make_batches(0)
    torch.manual_seed(0)
    model = build_model(params.model).train()
    loss_fn = GroupViTLoss(mlc_weight=params.train.mlc_weight)
    optimizer = build_optimizer(model, params.train, lr=1e-4)

    def step(batch: dict) -> None:
        loss_fn(model(batch["image"], batch["text"], batch.get("prompts")))["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.train.clip_grad or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    alone, fed, wait = [], [], []
    for rep in range(warmup + reps):
        a = timed(lambda: step(fixed), torch.device("cpu"))
        start = time.perf_counter()
        batch = next(loader)
        w = time.perf_counter() - start
        f = timed(lambda: step(batch), torch.device("cpu"))
        if rep >= warmup:
            alone.append(a)
            fed.append(f)
            wait.append(w)
    slowdown = statistics.median(f / a for a, f in zip(alone, fed))
    print(f"our step on real batches, {workers} loader worker(s), medians: alone "
          f"{1000 * statistics.median(alone):.1f} ms, while the loader works "
          f"{1000 * statistics.median(fed):.1f} ms "
          f"(x{slowdown:.2f} paired); waiting for a batch {1000 * statistics.median(wait):.1f} ms")


# --------------------------------------------------------------------------------------------


def load_config(params_file: Path, profile: Optional[str], batch: Optional[int]) -> Params:
    if profile:
        from cocu.profiles import compose

        params = from_dict(Params, compose(params_file, profile, params_file.resolve().parent / "profiles"),
                           source=f"{params_file} + profile {profile}")
    else:
        params = load_params(params_file)
    if batch:
        params = replace(params, train=replace(params.train, batch_size=batch))
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--profile", default=None, help="overlay profiles/NAME.yaml (e.g. paper-cc3m)")
    parser.add_argument("--batch", type=int, default=None, help="override train.batch_size")
    parser.add_argument("--official", type=Path, default=None, help="a checkout of NVlabs/GroupViT")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions of each step")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument("--caption-tokens", type=int, default=20, help="mean caption length (BPE tokens)")
    parser.add_argument("--prompt-tokens", type=int, default=10, help="mean prompt length (BPE tokens)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: train.amp autocast for both)")
    parser.add_argument("--parts", action="store_true", help="time our step part by part")
    parser.add_argument("--ops", type=int, default=0, help="torch.profiler table of our step, this many rows")
    parser.add_argument("--data", action="store_true", help="time the real data path per batch")
    parser.add_argument("--keep-heap", action="store_true",
                        help="glibc malloc keeps freed memory (no page faults per step; see keep_heap)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.keep_heap and not keep_heap():
        raise SystemExit("--keep-heap needs glibc")
    device = torch.device(args.device)
    params = load_config(args.params, args.profile, args.batch)
    amp = params.train.amp_dtype if params.train.amp and device.type == "cuda" else None
    batch, k = params.train.batch_size, params.train.num_prompts
    inputs = make_inputs(params.model, batch, k, args.caption_tokens, args.prompt_tokens, device)
    img, txt = params.model.image, params.model.text
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}"
          + (", malloc keeps its heap" if args.keep_heap else "")
          + (f" ({torch.cuda.get_device_name()}, {amp} autocast)" if device.type == "cuda" else "")
          + f"; {load()} at the start")
    print(f"config: {args.params}{' + ' + args.profile if args.profile else ''}: image {img.img_size} px / "
          f"patch {img.patch_size}, width {img.width}, depths {list(img.depths)}, "
          f"heads {list(img.num_heads)}, group tokens {list(img.num_group_tokens)} -> "
          f"{list(img.num_output_groups)}; text width {txt.width}, "
          f"{txt.layers} layers, {txt.heads} heads, context {txt.context_length}; projector "
          f"{params.model.projector.hidden_dim} -> {params.model.projector.out_dim}; batch {batch}, K = {k}; "
          f"captions ~{args.caption_tokens} tokens, prompts ~{args.prompt_tokens}")

    if args.data:
        data_path(params, args.params, args.reps, args.warmup)
        return
    if args.parts:
        parts_breakdown(params, inputs, device, args.reps, args.warmup)
        print(f"{load()} at the end")
        return

    steps = [our_step(params, inputs, device, amp)]
    if args.official is not None:
        steps.append(official_step(import_official(args.official), params, inputs, device, amp))
    print_counts(steps)
    if args.ops:
        op_profile(steps[0], device, args.warmup, args.ops)
        return
    times = interleave(steps, args.reps, args.warmup, device)
    print()
    report(times, batch)
    for s in steps:
        if s.peak_gib is not None:
            print(f"peak CUDA memory of a step, {s.name}: {s.peak_gib:.2f} GiB")
    if args.official is None:
        print("\n(no comparison: pass --official /path/to/GroupViT, a checkout of NVlabs/GroupViT)")
    print(f"{load()} at the end")


if __name__ == "__main__":
    main()
