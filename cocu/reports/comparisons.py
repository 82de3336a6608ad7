"""Paired comparisons of variants against the baseline: differences, gap closure, with intervals.

Every comparison pairs runs by training seed (the same seed = the same initial weights and data
order) and is reported per benchmark and for the mean over benchmarks:

- `paired_table`: variant - baseline, mean over seeds with the 95% t-interval over seeds (training
  noise; what decides), and in a second table the paired bootstrap over evaluation images
  (evaluation noise only; the same image resample for both variants and every seed);
- `gap_closure_table`: (variant - baseline) / (oracle - baseline) with Fieller's 95% interval over
  seeds; unbounded when the oracle does not clearly beat the baseline, n/a with one seed.

The statistics are `cocu.reports.stats`; this module only arranges them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from cocu.reports import stats
from cocu.reports.tables import MEAN, Table, _col, variant_label

BASELINE, ORACLE = "baseline", "oracle"
CountsLoader = Callable[[str, int, str], Optional[np.ndarray]]  # (variant, seed, benchmark) -> [N, 3, K]


@dataclass(frozen=True)
class Comparison:
    """One variant against the baseline on one benchmark (or MEAN)."""

    variant: str
    benchmark: str
    seeds: tuple[int, ...]  # seeds with both runs
    diff: stats.Interval  # t-interval over seeds of the per-seed differences
    images: stats.Interval  # paired bootstrap over images (NaN bounds when counts are missing)


def seed_scores(results: pd.DataFrame, variant: str, benchmark: str,
                benchmarks: Sequence[str]) -> dict[int, float]:
    """seed -> mIoU of one variant on one benchmark; for MEAN the mean over `benchmarks`, only for
    seeds evaluated on all of them."""
    rows = results[(results["variant"] == variant)].dropna(subset=["mIoU"])
    if benchmark != MEAN:
        rows = rows[rows["benchmark"] == benchmark]
        return {int(s): float(m) for s, m in zip(rows["seed"], rows["mIoU"])}
    wide = rows.pivot_table(index="seed", columns="benchmark", values="mIoU", aggfunc="first")
    wide = wide.reindex(columns=list(benchmarks)).dropna()
    return {int(s): float(v) for s, v in wide.mean(axis=1).items()}


def results_counts_loader(results_dir: Path | str) -> CountsLoader:
    """Reads `<results_dir>/<variant>/s<seed>/<benchmark>.counts.npz` (None when absent)."""
    from cocu.eval.runner import read_image_counts

    def load(variant: str, seed: int, benchmark: str) -> Optional[np.ndarray]:
        path = Path(results_dir) / variant / f"s{seed}" / f"{benchmark}.counts.npz"
        return read_image_counts(path)[0] if path.is_file() else None

    return load


def compare(results: pd.DataFrame, variant: str, benchmarks: Sequence[str], counts: Optional[CountsLoader],
            draws: int = 2000) -> list[Comparison]:
    """`variant` - baseline per benchmark and for MEAN (see the module docstring)."""
    out = []
    boot_draws: list[np.ndarray] = []  # per benchmark [D]: for the mean over benchmarks
    for b in [*benchmarks, MEAN]:
        seeds, d = stats.paired_differences(seed_scores(results, variant, b, benchmarks),
                                            seed_scores(results, BASELINE, b, benchmarks))
        diff = stats.t_interval(d)
        if b != MEAN:
            draws_b = _bootstrap_draws(counts, variant, b, seeds, draws) if counts else None
            boot = _interval(diff.estimate, draws_b, len(seeds))
            if draws_b is not None:
                boot_draws.append(draws_b)
        else:  # independent image resamples per benchmark, averaged
            complete = len(boot_draws) == len(benchmarks) and len(benchmarks) > 0
            boot = _interval(diff.estimate, np.mean(boot_draws, axis=0) if complete else None, len(seeds))
        out.append(Comparison(variant, b, tuple(seeds), diff, boot))
    return out


def _bootstrap_draws(counts: CountsLoader, variant: str, benchmark: str, seeds: Sequence[int],
                     draws: int) -> Optional[np.ndarray]:
    if not seeds:
        return None
    a = [counts(variant, s, benchmark) for s in seeds]
    b = [counts(BASELINE, s, benchmark) for s in seeds]
    if any(x is None for x in a + b) or len({x.shape for x in a + b}) != 1:
        return None
    seed = int(np.frombuffer(f"{variant}/{benchmark}".encode()[:8].ljust(8, b"\0"), np.uint64)[0] % 2**32)
    return stats.bootstrap_draws(np.stack(a), np.stack(b), draws=draws, seed=seed)


def _interval(estimate: float, draws: Optional[np.ndarray], n: int) -> stats.Interval:
    if draws is None:
        return stats.Interval(estimate, math.nan, math.nan, n)
    lo, hi = stats.percentile_interval(draws)
    return stats.Interval(estimate, lo, hi, n)


def fmt_interval(iv: stats.Interval, decimals: int, signed: bool = True, unit: str = "seeds") -> str:
    """'+3.21 [+1.02, +5.40] (3 seeds)'; one seed: '+3.21 [interval undefined: 1 seed]'."""
    if iv.n == 0 or not math.isfinite(iv.estimate):
        return "—"
    f = f"{{:{'+' if signed else ''}.{decimals}f}}"
    est = f.format(iv.estimate)
    if not iv.defined:
        return f"{est} [interval undefined: {iv.n} {unit[:-1] if iv.n == 1 else unit}]"

    def bound(x: float) -> str:
        return ("−∞" if x < 0 else "+∞") if math.isinf(x) else f.format(x)

    return f"{est} [{bound(iv.lo)}, {bound(iv.hi)}] ({iv.n} {unit})"


def paired_tables(results: pd.DataFrame, benchmarks: Sequence[str], variants: Sequence[str],
                  counts: Optional[CountsLoader], decimals: int) -> tuple[Table, Table, list[Comparison]]:
    """(seed-interval table, image-bootstrap table, all comparisons) of every variant vs baseline."""
    others = [v for v in variants if v != BASELINE]
    cols = ["comparison", *[_col(b) for b in benchmarks], _col(MEAN)]
    data_cols = ["variant", "benchmark", "n", "diff", "t_lo", "t_hi", "boot_lo", "boot_hi", "excludes_zero"]
    title_t = "Paired differences to the baseline, mIoU: mean over seeds [95% t-interval over seeds]"
    title_b = ("Paired differences to the baseline, mIoU: mean over seeds [95% paired bootstrap over evaluation "
               "images] (evaluation noise only)")
    if BASELINE not in variants or not others:
        note = (f"Not computed: needs results of `{BASELINE}` and of at least one other variant.",)
        empty = pd.DataFrame(columns=cols)
        return (Table(title_t, empty, pd.DataFrame(columns=data_cols), note),
                Table(title_b, empty, pd.DataFrame(columns=data_cols), note), [])
    comps, rows_t, rows_b, data = [], [], [], []
    for v in others:
        cs = compare(results, v, benchmarks, counts)
        comps += cs
        label = f"{variant_label(v)} − {variant_label(BASELINE)}"
        rows_t.append({"comparison": label, **{_col(c.benchmark): fmt_interval(c.diff, decimals) for c in cs}})
        rows_b.append({"comparison": label,
                       **{_col(c.benchmark): fmt_interval(c.images, decimals, unit="seeds") for c in cs}})
        data += [{"variant": v, "benchmark": c.benchmark, "n": len(c.seeds), "diff": c.diff.estimate,
                  "t_lo": c.diff.lo, "t_hi": c.diff.hi, "boot_lo": c.images.lo, "boot_hi": c.images.hi,
                  "excludes_zero": c.diff.excludes_zero} for c in cs]
    notes_t = ("Each cell: the mean over seeds of (variant − baseline) for runs with the same training seed, and "
               "its 95% Student-t interval over seeds. An interval that excludes 0 is a finding; one seed gives "
               "no interval. The mean column averages the benchmarks per seed first.",)
    notes_b = ("The same differences with a 95% percentile bootstrap over the benchmark's images (one resample "
               "applied to both variants and every seed; 2,000 draws): how much evaluating on other images "
               "could move them. It says nothing about training noise; compare with the table above.",)
    frame = pd.DataFrame(data, columns=data_cols)
    return (Table(title_t, pd.DataFrame(rows_t, columns=cols), frame, notes_t),
            Table(title_b, pd.DataFrame(rows_b, columns=cols), frame, notes_b), comps)


def gap_closure_table(results: pd.DataFrame, benchmarks: Sequence[str], variants: Sequence[str],
                      decimals: int) -> Table:
    """(variant - baseline) / (oracle - baseline) per benchmark and overall, Fieller 95% interval over seeds."""
    candidates = [v for v in variants if v not in (BASELINE, ORACLE)]
    title = "Gap closure: (variant − baseline) / (oracle − baseline), paired by seed [Fieller 95% interval]"
    cols = ["benchmark", "oracle − baseline", *[f"closure: {variant_label(v)}" for v in candidates]]
    data_cols = ["benchmark", "variant", "n", "gap", "closure", "lo", "hi", "status"]
    missing = [v for v in (BASELINE, ORACLE) if v not in variants]
    if missing or not candidates:
        why = f"needs results of baseline, oracle and another variant; missing: {', '.join(missing) or 'others'}"
        return Table(title, pd.DataFrame(columns=cols), pd.DataFrame(columns=data_cols), (f"Not computed: {why}.",))
    display, data = [], []
    for b in [*benchmarks, MEAN]:
        base = seed_scores(results, BASELINE, b, benchmarks)
        orac = seed_scores(results, ORACLE, b, benchmarks)
        gap_seeds, gap = stats.paired_differences(orac, base)
        gap_iv = stats.t_interval(gap)
        row = {"benchmark": _col(b), "oracle − baseline": fmt_interval(gap_iv, decimals)}
        for v in candidates:
            var = seed_scores(results, v, b, benchmarks)
            seeds = [s for s in gap_seeds if s in var]
            num = [var[s] - base[s] for s in seeds]
            den = [orac[s] - base[s] for s in seeds]
            iv = stats.fieller_interval(num, den)
            if not seeds:
                status, cell = "missing", "—"
            elif len(seeds) == 1:
                status, cell = "n/a (1 seed)", "n/a (1 seed)"
            elif not gap_iv.lo > 0:
                status = "undefined: oracle − baseline not above 0"
                cell = f"{iv.estimate:.{decimals}f} [undefined: oracle − baseline not above 0]"
            else:
                status, cell = "ok", fmt_interval(iv, decimals, signed=False)
            row[f"closure: {variant_label(v)}"] = cell
            data.append({"benchmark": b, "variant": v, "n": len(seeds), "gap": gap_iv.estimate,
                         "closure": iv.estimate, "lo": iv.lo, "hi": iv.hi, "status": status})
        display.append(row)
    notes = ("0 = no better than the baseline, 1 = as good as the oracle (prompted with the hidden ground-truth "
             "concepts). Paired by seed; Fieller's interval for a ratio of means is unbounded (±∞) when the "
             "denominator's interval reaches 0. Reported only where the oracle − baseline interval excludes 0.",)
    return Table(title, pd.DataFrame(display, columns=cols), pd.DataFrame(data, columns=data_cols), notes)
