"""Semantic-segmentation metrics with detectron2's evaluator contract (reset/process/evaluate).

One process evaluates a whole benchmark (work is split by checkpoint and benchmark, never by
rank), so unlike detectron2's evaluator this one reduces nothing across processes. Conventions
follow mmseg's `total_area_to_metrics`, which the official GroupViT numbers use:
IoU_k = TP / (TP + FP + FN), and mIoU is the mean over the classes whose union is not empty
(present in the labels OR predicted somewhere), x 100.

Beside the point estimate, `evaluate()` gives a percentile-bootstrap 95% interval of the mIoU over
images (resampling whole images, recomputing the dataset-level mIoU from their per-image
true-positive, label and prediction counts): the evaluation noise of a benchmark of this size,
which a single training seed cannot show.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """[K, K] int64 counts, rows = ground-truth class, columns = predicted class.

    Args:
        pred: [H, W] ints in [0, num_classes); anything else is an error.
        label: [H, W] ints in [0, num_classes) or `ignore_index` (those pixels are skipped).
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} != label shape {label.shape}")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predictions must lie in [0, {num_classes}), "
                         f"got range [{pred.min()}, {pred.max()}]")
    keep = label != ignore_index
    gt = label[keep].astype(np.int64)  # [N]
    pr = pred[keep].astype(np.int64)  # [N]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        bad = np.unique(gt[(gt < 0) | (gt >= num_classes)])[:10]
        raise ValueError(f"label values {bad.tolist()} are neither in [0, {num_classes}) "
                         f"nor ignore={ignore_index}")
    counts = np.bincount(gt * num_classes + pr, minlength=num_classes * num_classes)  # the bincount trick
    return counts.reshape(num_classes, num_classes)


BOOTSTRAP_DRAWS = 1000


def class_iou(tp: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU = TP / (TP + FP + FN) from true positives, labelled and predicted pixel counts
    (any leading shape, classes last), NaN where the union is empty; and the union."""
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan), union


def bootstrap_miou(counts: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mIoU (x 100) over images.

    Args:
        counts: [N, 3, K] per image: true positives, labelled pixels and predicted pixels per class.
    Returns (lo, hi); (nan, nan) without images. Vectorised: each draw is a multiplicity vector
    over the images, and the per-draw class sums are one matrix product.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.shape[0]
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(draws, n))  # [B, N]
    weights = np.bincount((np.arange(draws)[:, None] * n + picks).ravel(),
                          minlength=draws * n).reshape(draws, n).astype(np.float64)  # [B, N] multiplicities
    sums = (weights @ counts.reshape(n, -1)).reshape(draws, 3, -1)  # [B, 3, K]
    iou, union = class_iou(sums[:, 0], sums[:, 1], sums[:, 2])  # [B, K] each
    has = np.any(union > 0, axis=1)
    miou = np.full(draws, np.nan)
    miou[has] = 100.0 * np.nanmean(iou[has], axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.nanquantile(miou, [alpha, 1.0 - alpha]) if has.any() else (math.nan, math.nan)
    return float(lo), float(hi)


def scores_from_confusion(conf: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """mIoU, mAcc, aAcc and per-class IoU (all x 100) from a [K, K] confusion matrix.

    `IoU/<name>` is NaN for a class that occurs neither in the labels nor in the predictions (its
    union is empty); such classes are left out of the mIoU, as mmseg's nanmean does. mAcc averages
    the per-class recall over the classes present in the labels.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)  # [K]
    gt = conf.sum(axis=1)  # [K] labelled pixels per class
    predicted = conf.sum(axis=0)  # [K]
    iou, union = class_iou(tp, gt, predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(gt > 0, tp / gt, np.nan)
    out = {
        "mIoU": 100.0 * float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "mAcc": 100.0 * float(np.nanmean(acc)) if np.any(gt > 0) else float("nan"),
        "aAcc": 100.0 * float(tp.sum() / gt.sum()) if gt.sum() > 0 else float("nan"),
    }
    out.update({f"IoU/{name}": 100.0 * float(v) for name, v in zip(class_names, iou)})
    return out


class SegEvaluator:
    """Accumulates a confusion matrix over (prediction, label) pairs; mIoU at the end."""

    def __init__(self, num_classes: int, ignore_index: int = 255,
                 class_names: Optional[Sequence[str]] = None) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = [str(k) for k in range(num_classes)] if class_names is None else list(class_names)
        self.reset()

    def reset(self) -> None:
        self.conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)  # [K, K] gt x pred
        self.per_image: list[np.ndarray] = []  # [3, K] per image: tp, labelled, predicted (bootstrap)

    @property
    def num_images(self) -> int:
        return len(self.per_image)

    def process(self, pred: np.ndarray, label: np.ndarray) -> None:  # [H, W] ints each
        conf = confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        self.conf += conf
        self.per_image.append(np.stack([np.diag(conf), conf.sum(axis=1), conf.sum(axis=0)]))

    def evaluate(self) -> dict[str, float]:
        """Scores over the processed images, with `mIoU_ci_lo`/`mIoU_ci_hi`: the bootstrap 95%
        interval over images."""
        if self.conf.sum() == 0:
            log.warning("SegEvaluator.evaluate: no labelled pixels were processed")
        scores = scores_from_confusion(self.conf, self.class_names)
        # [N, 3, K]: the paired bootstrap's input
        self.image_counts = np.stack(self.per_image) if self.per_image else np.zeros((0, 3, self.num_classes), np.int64)
        lo, hi = bootstrap_miou(self.image_counts)
        scores.update({"mIoU_ci_lo": lo, "mIoU_ci_hi": hi})
        return scores
