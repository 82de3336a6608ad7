"""One training loop for CPU, one GPU and DDP (the switches are no-ops where they do not apply).

Per optimizer step: set the scheduled lr, run `accum_steps` micro-batches (forward under autocast,
loss in fp32, `backward` once each; DDP synchronises gradients on the last one only), unscale,
clip, step. Checkpoints every `checkpoint_every` steps and at the end; a run directory that
already holds a checkpoint is resumed from its latest one (as rank 0 sees the folder, on every rank).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn
from tqdm import tqdm

from cocu.launch.device import autocast_context, grad_scaler, synchronize
from cocu.launch.distributed import DistInfo, all_gather_object, all_reduce_mean, barrier, unwrap, wrap_ddp
from cocu.training.batches import Batch, BatchFactory
from cocu.training.checkpoint import (
    capture_rng, checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, restore_rng,
    save_checkpoint, seed_everything, sha256_file,
)
from cocu.config import TrainConfig
from cocu.training.losses import GroupViTLoss
from cocu.training.optim import build_optimizer, build_schedule, set_lr, total_batch
from cocu.tracking.mlflow_tracker import NullTracker, Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    step: int  # optimizer steps done
    total_steps: int
    finished: bool  # step == total_steps (False when stopped early by stop_at_step)
    checkpoint: Optional[Path]  # the last checkpoint written
    checkpoint_sha256: Optional[str]  # of `checkpoint` (rank 0 only; None elsewhere)
    resumed_from: Optional[int]  # step of the checkpoint this run resumed from
    metrics: dict[str, float] = field(default_factory=dict)  # last logged metrics


def train(model: nn.Module, cfg: TrainConfig, make_batches: BatchFactory, run_dir: Path | str,
          dist: DistInfo = DistInfo(), device: torch.device = torch.device("cpu"),
          tracker: Optional[Tracker] = None, *, samples_per_epoch: Optional[int] = None,
          stop_at_step: Optional[int] = None) -> TrainResult:
    """Train `model` (a ContrastiveModel, already built and seeded identically on every rank).

    Args:
        make_batches: the data stream, see `cocu.training.batches` for the contract.
        run_dir: checkpoints go here; an existing checkpoint is resumed (same dir on every rank).
        samples_per_epoch: samples all ranks together consume per epoch; needed when `cfg` gives
            epochs rather than steps.
        stop_at_step: stop (after writing a checkpoint) once this step is reached, e.g. to split a
            run across jobs; the next call with the same run_dir continues.
    """
    tracker = tracker or NullTracker()
    run_dir = Path(run_dir)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    schedule = build_schedule(cfg, dist.world_size, samples_per_epoch)
    amp_dtype = cfg.amp_dtype if cfg.amp else None
    unused = cfg.num_prompts == 0 or cfg.mlc_weight == 0  # the multi-label logit scale gets no gradient
    ddp = wrap_ddp(model.to(device), dist, device, find_unused_parameters=unused)
    net = unwrap(ddp)
    optimizer = build_optimizer(net, cfg, schedule(0))
    scaler = grad_scaler(device, amp_dtype)
    loss_fn = GroupViTLoss(dist.rank, dist.world_size, cfg.mlc_weight)
    per_step = total_batch(cfg, dist.world_size)

    step, resumed_from = 0, None
    metrics: dict[str, float] = {}  # the last logged window (restored on resume)
    found = _agreed_checkpoint(run_dir, dist)
    if found is not None:
        step, metrics = _resume(found, net, optimizer, scaler, cfg, dist)
        resumed_from = step
        log.info("resumed from %s at step %d", found, step)
    else:
        seed_everything(cfg.seed + dist.rank)
    if dist.is_main:
        tracker.log_params({**{f"train.{k}": v for k, v in dataclasses.asdict(cfg).items()},
                            "train.total_batch": per_step, "train.total_steps": schedule.total_steps,
                            "train.warmup_steps_resolved": schedule.warmup_steps,
                            "train.lr_scaled": schedule.base_lr, "world_size": dist.world_size})
    end = schedule.total_steps if stop_at_step is None else min(stop_at_step, schedule.total_steps)
    batches = make_batches(step * cfg.accum_steps)
    ddp.train()
    last_ckpt = found
    bar = tqdm(total=schedule.total_steps, initial=step, disable=not dist.is_main, desc="train",
               dynamic_ncols=True)
    sums, window_steps, window_start = torch.zeros(3, device=device), 0, time.perf_counter()
    while step < end:
        lr = schedule(step)
        set_lr(optimizer, lr)
        for micro in range(cfg.accum_steps):
            batch = _to_device(_next(batches, step), device)
            last = micro == cfg.accum_steps - 1
            with contextlib.nullcontext() if last or not dist.distributed else ddp.no_sync():
                with autocast_context(device, amp_dtype):
                    outputs = ddp(batch["image"], batch["text"], batch.get("prompts"))
                losses = loss_fn(outputs)
                scaler.scale(losses["loss"] / cfg.accum_steps).backward()
            sums += torch.stack([losses[k].detach() for k in ("loss", "itc", "mlc")]) / cfg.accum_steps
        scaler.unscale_(optimizer)
        grad_norm = nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad or float("inf"))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_steps += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == end:
            synchronize(device)
            elapsed = time.perf_counter() - window_start
            mean = all_reduce_mean(sums / window_steps, dist).tolist()
            if not math.isfinite(mean[0]):
                raise FloatingPointError(f"non-finite loss {mean[0]} at step {step}")
            metrics = {"loss": mean[0], "itc": mean[1], "mlc": mean[2], "lr": lr,
                       "grad_norm": float(grad_norm), "images_per_s": window_steps * per_step / elapsed,
                       **_scales(net),
                       "samples_seen": float(step * per_step)}
            if dist.is_main:
                tracker.log_metrics(metrics, step=step)
                bar.set_postfix(loss=f"{mean[0]:.3f}", lr=f"{lr:.2e}")
            sums.zero_()
            window_steps, window_start = 0, time.perf_counter()
        if step % cfg.checkpoint_every == 0 or step == end:
            last_ckpt = _save(run_dir, step, net, optimizer, scaler, cfg, dist, schedule.total_steps, metrics)
            if window_steps == 0:  # keep the checkpoint's write time out of the next throughput window
                window_start = time.perf_counter()
    bar.close()
    sha = None
    if dist.is_main and last_ckpt is not None:
        sha = sha256_file(last_ckpt)
        tracker.set_tags({"checkpoint": str(last_ckpt), "checkpoint_sha256": sha})
    return TrainResult(step, schedule.total_steps, step == schedule.total_steps, last_ckpt, sha,
                       resumed_from, metrics)


def _agreed_checkpoint(run_dir: Path, dist: DistInfo) -> Optional[Path]:
    """The checkpoint to resume from, as rank 0 sees the run folder, on every rank: on a shared
    filesystem another node's listing may lag (cached), and ranks resuming from different steps
    would hang in their first collective."""
    found = latest_checkpoint(run_dir) if dist.is_main else None
    found = all_gather_object(None if found is None else found.name, dist)[0]
    return None if found is None else run_dir / found


def _scales(net: nn.Module) -> dict[str, float]:
    """Both clamped logit scales (the temperatures' inverses), for the curves."""
    out = {}
    for name in ("logit_scale", "multi_label_logit_scale"):
        param = getattr(net, name, None)
        if isinstance(param, Tensor):
            out[name] = float(param.detach().exp().clamp(max=getattr(net.cfg, "max_logit_scale", 100.0)))
    return out


def _next(batches: Iterator[Batch], step: int) -> Batch:
    try:
        return next(batches)
    except StopIteration:
        raise RuntimeError(f"the batch stream ended at step {step}; it must repeat epochs") from None


def _to_device(batch: Batch, device: torch.device) -> Batch:
    """Tensors to `device`; other entries (e.g. sample keys) are left as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _save(run_dir: Path, step: int, net: nn.Module, optimizer: torch.optim.Optimizer,
          scaler: torch.amp.GradScaler, cfg: TrainConfig, dist: DistInfo, total_steps: int,
          metrics: dict[str, float]) -> Path:
    """Every rank contributes its RNG state; rank 0 writes; all wait for the file. `metrics` (the
    last logged window) travel with it, so that resuming a finished run still reports them."""
    rngs = all_gather_object(capture_rng(), dist)
    path = checkpoint_path(run_dir, step)
    if dist.is_main:
        model_cfg = getattr(net, "cfg", None)
        save_checkpoint({
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "total_steps": total_steps,
            "batches_consumed": step * cfg.accum_steps,  # per process: the data stream position
            "samples_seen": step * total_batch(cfg, dist.world_size),
            "world_size": dist.world_size,
            "rng": rngs,  # one entry per rank
            "metrics": dict(metrics),
            "train_config": dataclasses.asdict(cfg),
            "model_config": dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else None,
        }, path)
        prune_checkpoints(run_dir, cfg.keep_checkpoints)
    barrier(dist)
    return path


def _resume(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            cfg: TrainConfig, dist: DistInfo) -> tuple[int, dict[str, float]]:
    """Load everything into place; (step, the metrics last logged before it)."""
    state = load_checkpoint(path)
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    step = int(state["step"])
    if state["batches_consumed"] != step * cfg.accum_steps or state["world_size"] != dist.world_size:
        raise RuntimeError(f"{path}: written with world_size={state['world_size']} and "
                           f"{state['batches_consumed']} micro-batches per rank at step {step}; this run "
                           f"has world_size={dist.world_size}, accum_steps={cfg.accum_steps}")
    restore_rng(state["rng"][dist.rank])
    return step, dict(state.get("metrics", {}))
