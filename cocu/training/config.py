"""Frozen config of GroupViT pre-training (the `train` section of params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class TrainConfig:
    """Learning rates are given for a total batch of `lr_reference_batch` and scaled linearly by
    the actual total batch (batch_size x accum_steps x world_size)."""

    batch_size: int  # images per micro-batch per process (the paper: 256 per GPU)
    epochs: float  # passes over the pairs; the step count is derived from samples_per_epoch
    warmup_epochs: float
    steps: Optional[int] = None  # total optimizer steps; overrides epochs when set
    warmup_steps: Optional[int] = None  # overrides warmup_epochs when set
    accum_steps: int = 1  # micro-batches per optimizer step (each one is its own contrastive batch)
    base_lr: float = 1.6e-3  # peak lr at lr_reference_batch
    warmup_lr: float = 4e-6  # lr at step 0, at lr_reference_batch
    min_lr: float = 4e-5  # lr at the last step, at lr_reference_batch
    lr_reference_batch: int = 4096
    weight_decay: float = 0.05  # on >= 2-D weights only (see cocu.training.optim.param_groups)
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: Optional[float] = 5.0  # max global gradient norm; None: no clipping
    amp: bool = True  # mixed precision on cuda (always off on CPU)
    amp_dtype: Literal["bf16", "fp16"] = "bf16"  # fp16 also enables the GradScaler
    num_prompts: int = 3  # K prompts per image for the multi-label loss (0: image-text loss only)
    mlc_weight: float = 1.0
    checkpoint_every: int = 1000  # optimizer steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # most recent checkpoints kept in the run directory
    log_every: int = 10  # optimizer steps between metric logs
    seed: int = 0
