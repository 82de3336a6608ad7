"""The learning-rate schedule of both trainings (the teacher CLIP's and GroupViT's): a linear
warm-up, then half a cosine. Pure arithmetic, no torch."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CosineSchedule:
    """lr(step) for optimizer steps 0..total_steps: linear warmup_lr -> base_lr over warmup_steps,
    then half a cosine from base_lr down to min_lr at step total_steps.

    `warmup_offset` counts the step being taken into the warm-up: 0 (timm's, GroupViT's) starts at
    warmup_lr; 1 (open_clip's, `warmup_lr` 0) runs step s of the warm-up at base_lr (s + 1) /
    warmup_steps, so that no step has lr 0.
    """

    base_lr: float
    warmup_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    warmup_offset: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            done = step + self.warmup_offset
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * done / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
