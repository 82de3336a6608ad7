"""Do the conclusions hold on another machine and in other worlds? (the robustness study)

Each *setting* is a complete re-run of the pipeline (a DVC experiment): another machine emulated by
other float kernels (`ATEN_CPU_CAPABILITY`) and thread counts, or another synthetic world (another
world seed, another mention rate). Per setting this module computes the paired comparisons of the
report (variant - baseline per seed, mean over the benchmarks, 95% t-interval over seeds) and, for
machine settings, whether each committed seed mean is reproduced within its tolerance:

    a new mean of n seeds lies, with 95% probability, in  committed mean +- t(n-1) * s * sqrt(2 / n)

(s: the committed runs' standard deviation over seeds). This is the prediction interval for the mean
of n new runs when training noise is the only difference, the same width a fresh clone on another
CPU is held to. Byte-identical results are not expected: float kernels differ between CPUs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from cocu.reports import stats

Runs = Mapping[tuple[str, int], Mapping[str, float]]  # (variant, seed) -> benchmark -> mIoU
MEAN = "mean"


def run_scores(runs: Runs, variant: str, benchmark: str) -> dict[int, float]:
    """seed -> mIoU of `variant` on `benchmark`; MEAN: the mean over the benchmarks every run has."""
    out = {}
    for (v, s), scores in runs.items():
        if v != variant:
            continue
        if benchmark == MEAN:
            vals = [x for x in scores.values() if x is not None and math.isfinite(x)]
            if vals and len(vals) == len(scores):
                out[s] = float(np.mean(vals))
        elif benchmark in scores and scores[benchmark] is not None:
            out[s] = float(scores[benchmark])
    return out


def differences(runs: Runs, variant: str, benchmark: str = MEAN, baseline: str = "baseline") -> np.ndarray:
    """`variant` - `baseline` per seed both ran (seed order)."""
    return stats.paired_differences(run_scores(runs, variant, benchmark), run_scores(runs, baseline, benchmark))[1]


def paired(runs: Runs, variant: str, benchmark: str = MEAN, baseline: str = "baseline") -> stats.Interval:
    """`variant` - `baseline`, paired by seed, with the 95% t-interval over seeds."""
    return stats.t_interval(differences(runs, variant, benchmark, baseline))


def pooled_differences(settings: Sequence[Runs], variant: str, benchmark: str = MEAN,
                       baseline: str = "baseline") -> list[float]:
    """The paired `differences` of every setting, one list (settings are independent re-runs)."""
    return [float(d) for runs in settings for d in differences(runs, variant, benchmark, baseline)]


def pooled(settings: Sequence[Runs], variant: str, benchmark: str = MEAN, baseline: str = "baseline") -> stats.Interval:
    """`variant` - `baseline` paired by seed within each setting, the differences of every setting
    pooled into one 95% t-interval (settings are independent re-runs: other worlds)."""
    return stats.t_interval(pooled_differences(settings, variant, benchmark, baseline))


@dataclass(frozen=True)
class Reproduction:
    """One committed seed mean against the same mean in another setting."""

    variant: str
    benchmark: str
    committed: float
    tolerance: float  # half-width of the prediction interval (NaN with fewer than two committed seeds)
    new: float

    @property
    def within(self) -> bool:
        return math.isfinite(self.tolerance) and abs(self.new - self.committed) <= self.tolerance


def tolerance(values: Sequence[float], level: float = 0.95) -> float:
    """t(n-1) * s * sqrt(2 / n): the half-width within which a new n-seed mean should fall."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 2:
        return math.nan
    return float(sps.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) * math.sqrt(2.0 / n))


def reproduction(committed: Runs, new: Runs, variants: Sequence[str],
                 benchmarks: Sequence[str]) -> list[Reproduction]:
    """Every (variant, benchmark or MEAN) seed mean of `committed` against `new`."""
    out = []
    for v in variants:
        for b in [*benchmarks, MEAN]:
            old = list(run_scores(committed, v, b).values())
            now = list(run_scores(new, v, b).values())
            if old and now:
                out.append(Reproduction(v, b, float(np.mean(old)), tolerance(old), float(np.mean(now))))
    return out
