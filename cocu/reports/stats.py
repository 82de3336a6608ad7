"""Statistics of variant comparisons: paired by training seed, with intervals (docs/statistics.md).

A comparison of two variants is the per-seed difference of a score (the same seed gives both runs
the same initial weights and the same data order), summarised by its mean and:

- a 95% t-interval over seeds (`t_interval`): training noise, the interval that decides;
- a paired percentile bootstrap over evaluation images (`paired_bootstrap`): the same image
  resample for both variants and every seed, so it shows evaluation noise only;
- for a ratio of two paired means (gap closure = (variant - baseline) / (oracle - baseline)), the
  Fieller interval (`fieller_interval`), which is unbounded when the denominator is not clearly
  above zero (then the ratio is not defined by the data).

With fewer than two seeds an interval over seeds is undefined: NaN bounds, never a number.
All functions are pure; scores are mIoU x 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from cocu.eval.metrics import class_iou

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; `lo`/`hi` are NaN when undefined, +-inf when unbounded."""

    estimate: float
    lo: float
    hi: float
    n: int  # seeds (or pairs) behind the estimate

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely above or below 0 (False when undefined)."""
        return self.defined and (self.lo > 0 or self.hi < 0)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of `values` with its Student-t interval (n - 1 degrees of freedom); undefined for n < 2."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def paired_differences(a: dict[int, float], b: dict[int, float]) -> tuple[list[int], np.ndarray]:
    """Seeds present in both, and a[seed] - b[seed] for each (seed order)."""
    seeds = sorted(set(a) & set(b))
    return seeds, np.array([a[s] - b[s] for s in seeds], dtype=np.float64)


def fieller_interval(num: Sequence[float], den: Sequence[float], level: float = LEVEL) -> Interval:
    """mean(num) / mean(den) for paired samples (one pair per seed) with Fieller's interval.

    The interval is exact under normality of the paired means; it is (-inf, inf) when the
    denominator's mean is not significantly different from 0 at `level` (g >= 1), and undefined
    (NaN) with fewer than two pairs.
    """
    x, y = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} vs {len(y)}")
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m1, m2 = float(x.mean()), float(y.mean())
    ratio = m1 / m2 if m2 != 0 else math.nan
    if n < 2:
        return Interval(ratio, math.nan, math.nan, n)
    cov = np.cov(np.stack([x, y]), ddof=1) / n  # covariance of the two means
    v11, v22, v12 = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    if v22 == 0.0:  # a denominator without spread: the plain t-interval of num, scaled
        if m2 == 0:
            return Interval(ratio, -math.inf, math.inf, n)
        half = t * math.sqrt(v11) / abs(m2)
        return Interval(ratio, ratio - half, ratio + half, n)
    g = t * t * v22 / (m2 * m2) if m2 != 0 else math.inf
    if g >= 1.0:
        return Interval(ratio, -math.inf, math.inf, n)
    disc = v11 - 2 * ratio * v12 + ratio * ratio * v22 - g * (v11 - v12 * v12 / v22)
    half = t / abs(m2) * math.sqrt(max(disc, 0.0))
    centre = ratio - g * v12 / v22
    return Interval(ratio, (centre - half) / (1 - g), (centre + half) / (1 - g), n)


def miou_of_counts(counts: np.ndarray) -> np.ndarray:
    """mIoU x 100 of summed per-image counts: counts [..., 3, K] (tp, labelled, predicted) -> [...]."""
    iou, union = class_iou(counts[..., 0, :], counts[..., 1, :], counts[..., 2, :])
    has = np.any(union > 0, axis=-1)
    with np.errstate(invalid="ignore"):
        out = 100.0 * np.nanmean(np.where(has[..., None], iou, 0.0), axis=-1)
    return np.where(has, out, np.nan)


def bootstrap_draws(counts_a: np.ndarray, counts_b: np.ndarray, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """[draws] bootstrap replicates of the mean over seeds of mIoU(a) - mIoU(b), images resampled.

    Args:
        counts_a, counts_b: [S, N, 3, K] per seed and image: true positives, labelled and predicted
            pixels per class, for the same N images in the same order (the benchmark's).
    Each draw resamples the N images once (multiplicities [N]) and applies that resample to both
    variants and every seed, so the replicates hold the evaluation noise and none of the training
    noise.
    """
    a, b = np.asarray(counts_a, dtype=np.float64), np.asarray(counts_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4 or a.shape[2] != 3:
        raise ValueError(f"counts must both be [S, N, 3, K]; got {a.shape} and {b.shape}")
    s, n = a.shape[:2]
    if n == 0:
        return np.full(draws, np.nan)
    picks = np.random.default_rng(seed).integers(0, n, size=(draws, n))  # [D, N]
    weights = np.zeros((draws, n))
    np.add.at(weights, (np.arange(draws)[:, None], picks), 1.0)  # [D, N] multiplicities

    def resampled(c: np.ndarray) -> np.ndarray:  # [S, N, 3, K] -> [D, S] mIoU per draw and seed
        sums = np.einsum("dn,snk->dsk", weights, c.reshape(s, n, -1)).reshape(draws, s, 3, -1)
        return miou_of_counts(sums)

    return np.nanmean(resampled(a) - resampled(b), axis=1)


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap replicates (NaN when there are none)."""
    finite = np.asarray(draws, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_bootstrap(counts_a: np.ndarray, counts_b: np.ndarray, draws: int = 2000, seed: int = 0,
                     level: float = LEVEL) -> Interval:
    """Mean over seeds of mIoU(a) - mIoU(b) (from the counts summed over images), with the
    percentile interval of `bootstrap_draws`. One seed is fine: the interval is over images."""
    reps = bootstrap_draws(counts_a, counts_b, draws, seed)
    a, b = np.asarray(counts_a, dtype=np.float64), np.asarray(counts_b, dtype=np.float64)
    estimate = float(np.mean(miou_of_counts(a.sum(1)) - miou_of_counts(b.sum(1))))
    lo, hi = percentile_interval(reps, level)
    return Interval(estimate, lo, hi, a.shape[0])
