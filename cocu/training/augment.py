"""Image augmentation of pre-training, pure and vectorised over a batch (docs/method.md §9).

RandomResizedCrop (torchvision's sampling), horizontal flip, colour jitter (brightness, contrast,
saturation, as timm's `color_jitter=0.4`), normalisation and timm's RandomErasing ("pixel" mode).
Randomness comes in as per-sample uniforms `u` [B, NUM_UNIFORMS] (columns: 0-19 crop tries, 20-21
crop offset, 22 flip, 23-25 jitter factors, 26-48 erasing), drawn by the caller from each sample's
own generator, so a sample's augmentation does not depend on its batch or on the global RNG.
Crop + resize + flip is one `grid_sample` per image size (bilinear, or bicubic as timm's default
for GroupViT; no antialiasing: crops are mostly upsampled). Differences from torchvision/timm:
the jitter order is fixed (torchvision permutes it), hue is not jittered (timm's default),
RandAugment is not implemented.

Shapes: B images, S output side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cocu.config import DataConfig

NUM_UNIFORMS = 64  # uniforms drawn per sample (fixed, so that later draws, e.g. prompts, never shift)




def crop_boxes(sizes: np.ndarray, u: np.ndarray, scale: tuple[float, float],
               ratio: tuple[float, float]) -> np.ndarray:
    """RandomResizedCrop boxes (top, left, height, width) [B, 4] for images of `sizes` [B, 2] (H, W).

    torchvision's algorithm: 10 tries of (area fraction ~ U(scale), log aspect ~ U(log ratio)),
    the first that fits wins, else a centre crop clamped to the ratio range.
    """
    h_img, w_img = sizes[:, :1].astype(np.float64), sizes[:, 1:].astype(np.float64)  # [B, 1]
    area = h_img * w_img * (scale[0] + (scale[1] - scale[0]) * u[:, 0:20:2])  # [B, 10]
    log_r = np.log(ratio[0]) + (np.log(ratio[1]) - np.log(ratio[0])) * u[:, 1:20:2]
    w = np.rint(np.sqrt(area * np.exp(log_r)))
    h = np.rint(np.sqrt(area / np.exp(log_r)))
    ok = (w > 0) & (h > 0) & (w <= w_img) & (h <= h_img)  # [B, 10]
    first = ok.argmax(axis=1)
    rows = np.arange(len(sizes))
    h, w = h[rows, first], w[rows, first]  # [B]
    h_img, w_img = h_img[:, 0], w_img[:, 0]
    top = np.floor(u[:, 20] * (h_img - h + 1))
    left = np.floor(u[:, 21] * (w_img - w + 1))
    # fallback: centre crop, aspect clamped to the ratio range
    in_ratio = w_img / h_img
    cw = np.where(in_ratio < ratio[0], w_img, np.where(in_ratio > ratio[1], np.rint(h_img * ratio[1]), w_img))
    ch = np.where(in_ratio < ratio[0], np.rint(w_img / ratio[0]), h_img)
    miss = ~ok.any(axis=1)
    h, w = np.where(miss, ch, h), np.where(miss, cw, w)
    top = np.where(miss, (h_img - h) // 2, top)
    left = np.where(miss, (w_img - w) // 2, left)
    return np.stack([top, left, h, w], axis=1).astype(np.int64)


def resized_crop(images: Sequence[Tensor], boxes: np.ndarray, flip: np.ndarray, size: int,
                 mode: str = "bilinear") -> Tensor:
    """Crop `boxes` [B, 4] out of uint8 images [3, H, W], resize to `size` (`mode`: bilinear or
    bicubic), flip where `flip` [B] -> float [B, 3, size, size] in [0, 1]. Images of one size are
    sampled together, in one `grid_sample`."""
    out = torch.empty(len(images), 3, size, size)
    shapes = [tuple(im.shape[1:]) for im in images]
    pix = (torch.arange(size, dtype=torch.float64) + 0.5) / size  # output pixel centres in [0, 1]
    for shape in dict.fromkeys(shapes):
        idx = [i for i, s in enumerate(shapes) if s == shape]
        batch = torch.stack([images[i] for i in idx]).float().div_(255)  # [b, 3, H, W]
        top, left, h, w = (torch.from_numpy(boxes[idx, c]).double()[:, None] for c in range(4))
        xs = (2 * (left + pix * w) / shape[1] - 1)  # [b, size] normalised input x (align_corners=False)
        ys = (2 * (top + pix * h) / shape[0] - 1)
        xs = torch.where(torch.from_numpy(flip[idx])[:, None], xs.flip(1), xs)
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)  # [b, S, S, 2]
        out[idx] = F.grid_sample(batch, grid.float(), mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0, 1) if mode == "bicubic" else out  # bicubic overshoots


def color_jitter(x: Tensor, factors: Tensor) -> Tensor:
    """Brightness, contrast, saturation (in this order) with factors [B, 3] on x [B, 3, H, W] in [0, 1]."""
    b, c, s = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
    x = (x * b).clamp_(0, 1)
    gray_w = torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)
    mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)  # [B, 1, 1, 1]
    x = (c * x + (1 - c) * mean).clamp_(0, 1)
    gray = (x * gray_w).sum(1, keepdim=True)  # [B, 1, H, W]
    return (s * x + (1 - s) * gray).clamp_(0, 1)


def erase_boxes(size: int, u: np.ndarray, p: float) -> np.ndarray:
    """timm RandomErasing boxes (top, left, h, w) [B, 4] on size x size images; h = 0: no erasing.
    Applied with probability p; area fraction ~ U(0.02, 1/3), log aspect ~ U(log 0.3, log 1/0.3)."""
    area = size * size * (0.02 + (1 / 3 - 0.02) * u[:, 27:47:2])  # [B, 10]
    aspect = np.exp(np.log(0.3) + (np.log(1 / 0.3) - np.log(0.3)) * u[:, 28:47:2])
    h, w = np.rint(np.sqrt(area * aspect)), np.rint(np.sqrt(area / aspect))
    ok = (h < size) & (w < size) & (h > 0) & (w > 0)
    first = ok.argmax(axis=1)
    rows = np.arange(len(u))
    use = (u[:, 26] < p) & ok.any(axis=1)
    h, w = np.where(use, h[rows, first], 0), np.where(use, w[rows, first], 0)
    top, left = np.floor(u[:, 47] * (size - h + 1)), np.floor(u[:, 48] * (size - w + 1))
    return np.stack([top, left, h, w], axis=1).astype(np.int64)


def augment(images: Sequence[Tensor], u: np.ndarray, cfg: DataConfig, size: int) -> Tensor:
    """uint8 images [3, H, W] + uniforms [B, NUM_UNIFORMS] -> normalised float [B, 3, size, size]
    (erasing noise is added by the caller: it needs each sample's generator)."""
    sizes = np.array([im.shape[1:] for im in images])  # [B, 2]
    boxes = crop_boxes(sizes, u, cfg.crop_scale, cfg.crop_ratio)
    flip = (u[:, 22] < 0.5) if cfg.flip else np.zeros(len(images), dtype=bool)
    x = resized_crop(images, boxes, flip, size, cfg.interpolation)
    if cfg.color_jitter > 0:
        lo = max(0.0, 1 - cfg.color_jitter)
        factors = lo + (1 + cfg.color_jitter - lo) * torch.from_numpy(u[:, 23:26]).float()
        x = color_jitter(x, factors)
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)
