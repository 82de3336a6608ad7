"""Frozen config of the pre-training input pipeline (the `data` section of params.yaml).

The batch size, seed and K (num_prompts) are the `train` section's; the image size is the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # GroupViT normalises with the ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """Reading, splitting, shuffling and augmenting the pairs (method.md §6 "Augmentation", "Data")."""

    shuffle_buffer: int = 1000  # samples in each stream's shuffle buffer (paper: 10,000); 0: no shuffle
    streams: int = 1  # streams each rank's epoch is divided into (data.py); sets the batch order
    workers: int = 1  # DataLoader worker processes per rank (0: in the training process); must divide
    #                   `streams`; does not change the batches
    split: Literal["auto", "shards", "samples"] = "auto"  # how an epoch is divided among streams (data.py)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction (paper: 0.08-1)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333333333333)  # RandomResizedCrop aspect ratio range
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"  # crop resize (paper: timm's bicubic)
    flip: bool = True  # random horizontal flip, p = 0.5
    color_jitter: float = 0.4  # brightness, contrast and saturation factors in [1 - x, 1 + x] (0: off)
    random_erasing: float = 0.25  # probability of erasing one random rectangle with noise (0: off)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel normalisation (eval must match)
    std: tuple[float, float, float] = IMAGENET_STD
    token_cache: int = 200_000  # tokenised texts kept per worker (prompts and captions recur)
    prefetch: int = 2  # batches each worker prepares ahead
