"""The report's result tables as pandas DataFrames: main table, ablation, gap closure.

Every table is a `Table`: a `display` frame of formatted strings (Markdown, LaTeX) and a `data`
frame of plain numbers in long form (CSV, one row per variant x benchmark), plus notes. Spread
is the sample standard deviation over seeds (ddof = 1); "mean over benchmarks" is, per seed, the
mean over the table's benchmarks, then mean and std over the seeds that have every benchmark.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cocu.config import ReportConfig
from cocu.reports.reference import PaperNumber, PaperReference

MEAN = "mean"  # pseudo-benchmark of the per-seed mean over benchmarks
MEAN_LABEL = "mean over benchmarks"
VARIANT_LABELS = {"oracle": "oracle (upper bound)"}
ABLATION_SETTINGS = {
    "baseline": "caption concepts only (GroupViT baseline)",
    "expansion": "+ vision-driven expansion, archive concepts sampled uniformly",
    "ranking": "+ text-to-vision ranking, top-k concepts by score (official code default)",
    "cocu": "+ cluster-guided sampling (full CoCu)",
}
L_VARIANT = re.compile(r"^(?P<base>.+)-L(?P<L>\d+)$")  # `cocu-L16`: variant `cocu` with L = 16 neighbours
UNVERIFIED, SETTING_UNKNOWN = "*", "†"


@dataclass(frozen=True)
class Table:
    title: str
    display: pd.DataFrame  # formatted strings, as shown
    data: pd.DataFrame  # numbers, long form (the CSV)
    notes: tuple[str, ...] = ()
    text_columns: int = 1  # leading left-aligned columns (LaTeX)


def natural_key(name: str) -> tuple:
    """`cocu-L4` < `cocu-L16`: digits compare as numbers."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def order(names: Sequence[str], canonical: Sequence[str]) -> list[str]:
    """Names in canonical order first, then the others sorted naturally."""
    present = set(names)
    return [n for n in canonical if n in present] + sorted(present - set(canonical), key=natural_key)


def variant_label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


def summarize(results: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """mIoU per (variant, benchmark): columns variant, benchmark, n, mean, std, ci_lo, ci_hi (+ benchmark
    == MEAN rows). ci_lo/ci_hi: the result's bootstrap 95% interval over images, kept only for a
    single seed (with several, the spread over seeds is shown instead); NaN otherwise."""
    cols = ["variant", "benchmark", "n", "mean", "std", "ci_lo", "ci_hi"]
    ok = results.dropna(subset=["mIoU"])
    if ok.empty:
        return pd.DataFrame(columns=cols)
    if "ci_lo" not in ok:
        ok = ok.assign(ci_lo=math.nan, ci_hi=math.nan)
    per = (ok.groupby(["variant", "benchmark"], sort=True)
           .agg(n=("mIoU", "count"), mean=("mIoU", "mean"),
                std=("mIoU", lambda x: x.std(ddof=1) if len(x) > 1 else math.nan),
                ci_lo=("ci_lo", "first"), ci_hi=("ci_hi", "first")).reset_index())
    per.loc[per["n"] > 1, ["ci_lo", "ci_hi"]] = math.nan
    wide = (ok.pivot_table(index=["variant", "seed"], columns="benchmark", values="mIoU", aggfunc="first")
            .reindex(columns=list(benchmarks)))  # [variant x seed, benchmark], NaN where not evaluated
    rows = []
    for variant in sorted(ok["variant"].unique()) if len(benchmarks) else []:
        per_seed = wide.loc[variant].dropna().mean(axis=1).to_numpy()  # [seeds with every benchmark]
        rows.append({"variant": variant, "benchmark": MEAN, "n": len(per_seed),
                     "mean": float(per_seed.mean()) if len(per_seed) else math.nan,
                     "std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
                     "ci_lo": math.nan, "ci_hi": math.nan})
    means = pd.DataFrame(rows, columns=cols)
    return pd.concat([per, means], ignore_index=True) if len(means) else per


def _cell(summary: pd.DataFrame, variant: str, benchmark: str) -> pd.Series | None:
    """The summary row of one (variant, benchmark); None when absent or without results."""
    hit = summary[(summary["variant"] == variant) & (summary["benchmark"] == benchmark)]
    return None if hit.empty or int(hit["n"].iloc[0]) == 0 else hit.iloc[0]


def stat(summary: pd.DataFrame, variant: str, benchmark: str) -> tuple[int, float, float]:
    """(n, mean, std) of one cell; (0, nan, nan) when absent."""
    row = _cell(summary, variant, benchmark)
    return (0, math.nan, math.nan) if row is None else (int(row["n"]), float(row["mean"]), float(row["std"]))


def interval(summary: pd.DataFrame, variant: str, benchmark: str) -> tuple[float, float]:
    """The single seed's bootstrap 95% interval over images of one cell; (nan, nan) when none."""
    row = _cell(summary, variant, benchmark)
    return (math.nan, math.nan) if row is None else (float(row["ci_lo"]), float(row["ci_hi"]))


def fmt_stat(n: int, mean: float, std: float, decimals: int,
             ci: tuple[float, float] = (math.nan, math.nan)) -> str:
    if n == 0 or not math.isfinite(mean):
        return "—"
    if n == 1:
        if all(math.isfinite(x) for x in ci):
            return f"{mean:.{decimals}f} [{ci[0]:.{decimals}f}, {ci[1]:.{decimals}f}] (1 seed)"
        return f"{mean:.{decimals}f} (1 seed)"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f} ({n} seeds)"


def _fmt(x: float, decimals: int, signed: bool = False) -> str:
    return "—" if not math.isfinite(x) else (f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}")


def _marks(numbers: Sequence[PaperNumber]) -> str:
    return ((UNVERIFIED if any(not n.verified for n in numbers) else "")
            + (SETTING_UNKNOWN if any(n.setting_unknown for n in numbers) else ""))


# --------------------------------------------------------------------------------------------
# main table


def main_table(summary: pd.DataFrame, benchmarks: Sequence[str], variants: Sequence[str], ref: PaperReference,
               cfg: ReportConfig) -> Table:
    """Variants x benchmarks of mIoU; paper and delta rows where a variant reproduces a paper method."""
    d = cfg.decimals
    columns = [*benchmarks, MEAN]
    show_paper = any(ref.is_paper_benchmark(b) for b in benchmarks)
    display, data, used = [], [], []
    for v in variants:
        stats = {b: stat(summary, v, b) for b in columns}
        intervals = {b: interval(summary, v, b) for b in columns}
        display.append({"variant": variant_label(v), "row": "ours",
                        **{_col(b): fmt_stat(*stats[b], d, intervals[b]) for b in columns}})
        method = cfg.paper_methods.get(v)
        paper = {b: _paper(ref, method, cfg.paper_setting, b) if method else ("n/a", []) for b in benchmarks}
        paper[MEAN] = _paper_mean([paper[b] for b in benchmarks])
        for b in columns:
            n, mean, std = stats[b]
            ci_lo, ci_hi = intervals[b]
            status, nums = paper[b]
            value = float(np.mean([x.value for x in nums])) if status == "known" else math.nan
            data.append({"variant": v, "label": variant_label(v), "benchmark": b, "n_seeds": n, "miou_mean": mean,
                         "miou_std": std, "miou_ci_lo": ci_lo, "miou_ci_hi": ci_hi, "paper_method": method or "", "paper_data": _data(nums),
                         "paper_status": _csv_status(status, method), "paper_miou": value,
                         "paper_verified": all(x.verified for x in nums) if nums else math.nan,
                         "delta": mean - value})
            used += nums
        if method and show_paper:
            display.append({"variant": "", "row": f"paper: {ref.methods[method].name} [{cfg.paper_setting}]",
                            **{_col(b): _paper_cell(*paper[b]) for b in columns}})
            display.append({"variant": "", "row": "Δ (ours − paper)",
                            **{_col(b): _delta_cell(stats[b][1], *paper[b], d) for b in columns}})
    notes = [f"mIoU (x100), mean ± sample std over seeds; '{MEAN_LABEL}' averages each seed over "
             f"{', '.join(benchmarks) or 'the benchmarks'} first (seeds lacking one are left out).",
             "[lo, hi] beside a single seed: the bootstrap 95% interval over the benchmark's images (1000 "
             "resamples of whole images; the evaluation noise only, not the training seed's, which can be "
             "larger: compare variants over several seeds, `pretrain.seeds`)."]
    if not show_paper:
        notes.append("None of these benchmarks is one of the paper's (configs/paper_numbers.yaml lists them), so "
                     "no paper rows are shown; the paper's numbers are listed under 'Paper reference numbers'.")
    else:
        notes.append(f"Paper rows: data setting '{cfg.paper_setting}'; 'unknown' = no number could be read (never "
                     f"guessed); 'n/a' = not a paper benchmark; {UNVERIFIED} = unverified number; "
                     f"{SETTING_UNKNOWN} = its training-data setting is not stated by the source.")
        for key in sorted({(n.method, n.data, n.source) for n in used}):
            notes.append(f"Source ({key[0]}, {key[1]}): {key[2]}")
    return Table("Main results: zero-shot segmentation mIoU",
                 pd.DataFrame(display, columns=_display_cols(columns)),
                 pd.DataFrame(data, columns=_DATA_COLS), tuple(notes), text_columns=2)


_DATA_COLS = ["variant", "label", "benchmark", "n_seeds", "miou_mean", "miou_std", "miou_ci_lo", "miou_ci_hi",
              "paper_method", "paper_data",
              "paper_status", "paper_miou", "paper_verified", "delta"]


def _csv_status(status: str, method: str | None) -> str:
    """CSV spelling of a paper cell's status ("n/a" would read back as NaN in pandas)."""
    if method is None:
        return "no_paper_method"
    return "not_a_paper_benchmark" if status == "n/a" else status


def _col(b: str) -> str:
    return MEAN_LABEL if b == MEAN else b


def _display_cols(columns: Sequence[str]) -> list[str]:
    return ["variant", "row", *[_col(b) for b in columns]]


def _paper(ref: PaperReference, method: str, setting: str, bench: str) -> tuple[str, list[PaperNumber]]:
    if not ref.is_paper_benchmark(bench):
        return "n/a", []
    hit = ref.lookup(method, setting, bench)
    return ("known", [hit]) if hit else ("unknown", [])


def _paper_mean(cells: Sequence[tuple[str, list[PaperNumber]]]) -> tuple[str, list[PaperNumber]]:
    statuses = {s for s, _ in cells}
    if not cells or "n/a" in statuses:
        return "n/a", []
    if "unknown" in statuses:
        return "unknown", []
    return "known", [n for _, nums in cells for n in nums]


def _data(nums: Sequence[PaperNumber]) -> str:
    return "+".join(sorted({n.data for n in nums})) if nums else ""


def _paper_cell(status: str, nums: Sequence[PaperNumber]) -> str:
    if status != "known":
        return status
    return f"{float(np.mean([n.value for n in nums])):g}{_marks(nums)}"


def _delta_cell(ours: float, status: str, nums: Sequence[PaperNumber], decimals: int) -> str:
    if status != "known":
        return status
    if not math.isfinite(ours):
        return "—"
    return f"{ours - float(np.mean([n.value for n in nums])):+.{decimals}f}{_marks(nums)}"


# --------------------------------------------------------------------------------------------
# ablation table


def l_sweep(variant: str) -> tuple[str, int] | None:
    """`cocu-L16` -> ("cocu", 16); None for a variant that is not part of an L sweep."""
    m = L_VARIANT.match(variant)
    return (m["base"], int(m["L"])) if m else None


def ablation_table(summary: pd.DataFrame, variants: Sequence[str], cfg: ReportConfig) -> Table:
    """Mean over benchmarks of the sampling ablations (baseline, expansion, ranking, cocu) and the L sweep."""
    d = cfg.decimals
    rows = [v for v in ABLATION_SETTINGS if v in variants]
    sweep = sorted((v for v in variants if l_sweep(v)), key=lambda v: (natural_key(l_sweep(v)[0]), l_sweep(v)[1]))
    _, base_mean, _ = stat(summary, "baseline", MEAN)
    display, data = [], []
    for v in rows + sweep:
        base, num = l_sweep(v) or (v, None)
        setting = ABLATION_SETTINGS.get(v) or f"{base} with L = {num} neighbours"
        n, mean, std = stat(summary, v, MEAN)
        display.append({"variant": variant_label(v), "setting": setting, MEAN_LABEL: fmt_stat(n, mean, std, d),
                        "Δ vs baseline": "—" if v == "baseline" else _fmt(mean - base_mean, d, signed=True)})
        data.append({"variant": v, "setting": setting, "num_neighbours": num if num is not None else math.nan,
                     "n_seeds": n, "miou_mean": mean, "miou_std": std, "delta_vs_baseline": mean - base_mean})
    notes = [f"mIoU (x100) {MEAN_LABEL}, mean ± sample std over seeds."]
    missing = [v for v in ABLATION_SETTINGS if v not in variants]
    if missing:
        notes.append(f"Not in results (not run yet): {', '.join(missing)}.")
    if not sweep:
        notes.append("No L-sweep variants (named `<variant>-L<k>`, e.g. `cocu-L16`) in the results: the sweep "
                     "over L is run as DVC experiments, `dvc exp run -S index.num_neighbours=<L>`, and compared with "
                     "`dvc exp show` or in the MLflow UI (README, 'Ablations as experiments').")
    return Table("Ablations: expansion, ranking, sampling and L", pd.DataFrame(display, columns=[
        "variant", "setting", MEAN_LABEL, "Δ vs baseline"]), pd.DataFrame(data, columns=[
            "variant", "setting", "num_neighbours", "n_seeds", "miou_mean", "miou_std", "delta_vs_baseline"]),
        tuple(notes), text_columns=2)
