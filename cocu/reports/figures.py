"""Report figures with matplotlib's object API (Agg canvas, no pyplot state): convergence and benchmarks.

PNGs are written without the `Software` metadata key, so the same inputs give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cocu.reports.tables import MEAN, MEAN_LABEL, stat, variant_label

HEADLINE = ("baseline", "cocu")  # solid lines; every other variant is dashed
DPI = 110


def _colour(i: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def placeholder(path: Path | str, message: str) -> Path:
    """A small figure that says why there is nothing to plot (keeps the stage's outputs complete)."""
    fig = Figure(figsize=(6, 1.5))
    fig.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return _save(fig, path)


def convergence_figure(curves: pd.DataFrame, variants: Sequence[str], path: Path | str, ylabel: str = "loss",
                       palette: Sequence[str] = ()) -> Path:
    """`ylabel` vs step per variant: mean over seeds, band = ± std where several seeds share a step.

    curves: long table (variant, seed, step, value) from `inputs.load_curves`. A variant's colour is
    its index in `palette` (default: `variants`), so figures that share a palette agree.
    """
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for v in variants:
        i = list(palette or variants).index(v) if v in (palette or variants) else len(palette)
        rows = curves[curves["variant"] == v]
        wide = rows.pivot_table(index="step", columns="seed", values="value")  # [steps, seeds]
        if wide.empty:
            continue
        steps = wide.index.to_numpy()
        values = wide.to_numpy(dtype=float)
        count = np.sum(np.isfinite(values), axis=1)
        mean = np.nanmean(values, axis=1)
        seeds = values.shape[1]
        style = "-" if v in HEADLINE else "--"
        ax.plot(steps, mean, style, color=_colour(i), lw=1.6 if v in HEADLINE else 1.1,
                label=f"{variant_label(v)} ({seeds} seed{'s' if seeds > 1 else ''})")
        if seeds > 1:
            std = np.array([np.nanstd(r, ddof=1) if c > 1 else np.nan for r, c in zip(values, count)])
            ax.fill_between(steps, mean - std, mean + std, color=_colour(i), alpha=0.18, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Pre-training {ylabel}: mean over seeds (band: ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def benchmark_bars(summary: pd.DataFrame, benchmarks: Sequence[str], variants: Sequence[str],
                   path: Path | str, palette: Sequence[str] = ()) -> Path:
    """Grouped bars: mIoU per benchmark (and the mean over benchmarks), one bar per variant, error = std."""
    groups = [*benchmarks, MEAN]
    fig = Figure(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(variants)) / 3 + 2), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(groups))
    top = 0.0
    for j, v in enumerate(variants):
        i = list(palette or variants).index(v) if v in (palette or variants) else len(palette) + j
        cells = [stat(summary, v, b) for b in groups]
        means = np.array([c[1] for c in cells])
        errs = np.array([c[2] for c in cells])  # NaN with one seed: no bar is drawn (not a zero-width one)
        top = max(top, float(np.nanmax(means + np.nan_to_num(errs), initial=0.0)))
        ax.bar(x + (j - (len(variants) - 1) / 2) * width, np.nan_to_num(means, nan=0.0), width, yerr=errs,
               capsize=2, color=_colour(i), label=variant_label(v), error_kw={"lw": 0.8})
    ax.set_xticks(x, [MEAN_LABEL if g == MEAN else g for g in groups], rotation=20, ha="right")
    ax.set_ylim(0, max(top, 1.0) * 1.3)  # headroom for the legend
    ax.set_ylabel("mIoU (x100)")
    ax.set_title("Zero-shot segmentation: mean over seeds (error bars: std over seeds; none with one seed)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(variants), 3))
    fig.tight_layout()
    return _save(fig, path)


def mechanism_figure(concepts: pd.DataFrame, variants: Sequence[str], path: Path | str,
                     palette: Sequence[str] = (), views: Sequence[tuple[str, str]] = (("", "all concepts"),)) -> Path:
    """Per-concept IoU gain over the baseline against the caption mention rate, one panel per view
    (column prefix, its name: `k` = judged among its own kind, `` = among every concept), and
    against CoCu's prompt recall of missed concepts in the first view; one marker per concept,
    error bars = 95% t-interval over seeds, triangles = the world's under-named concepts.

    concepts: `cocu.reports.mechanism` columns (concept, under_named, mention_rate, prompt_recall,
    <prefix>gain/<v>, <prefix>gain_lo/<v>, <prefix>gain_hi/<v>).
    """
    panels = [("mention_rate", "caption mention rate of the concept (pre-training pairs)", prefix, name)
              for prefix, name in views]
    panels.append(("prompt_recall", "CoCu prompt recall where captions miss it", *views[0]))
    fig = Figure(figsize=(5.5 * len(panels), 4.6))
    for p, (xcol, xlabel, prefix, name) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        for v in variants:
            if f"{prefix}gain/{v}" not in concepts:
                continue
            i = list(palette or variants).index(v) if v in (palette or variants) else len(palette)
            x = concepts[xcol].to_numpy(dtype=float)
            y = concepts[f"{prefix}gain/{v}"].to_numpy(dtype=float)
            lo = y - concepts[f"{prefix}gain_lo/{v}"].to_numpy(dtype=float)
            hi = concepts[f"{prefix}gain_hi/{v}"].to_numpy(dtype=float) - y
            err = np.where(np.isfinite(lo) & np.isfinite(hi), np.stack([lo, hi]), np.nan)
            under = concepts["under_named"].to_numpy(dtype=bool) if "under_named" in concepts else np.zeros(len(x), bool)
            ax.errorbar(x, y, yerr=err, fmt="none", ecolor=_colour(i), alpha=0.35, lw=0.8)
            ax.scatter(x[~under], y[~under], color=_colour(i), s=22, label=f"{variant_label(v)}")
            ax.scatter(x[under], y[under], color=_colour(i), s=34, marker="^",
                       label=f"{variant_label(v)}, under-named concept")
        if xcol == "mention_rate":
            for _, row in concepts.iterrows():
                ax.annotate(str(row["concept"]), (row[xcol], 0), fontsize=5, alpha=0.5, rotation=90,
                            xytext=(0, -2), textcoords="offset points", ha="center", va="top")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("IoU gain over the baseline (x100)")
        ax.set_title(f"judged {name}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Where the gains are: per-concept IoU gain vs how often captions name the concept")
    fig.tight_layout()
    return _save(fig, path)


def dose_response_figure(points: pd.DataFrame, references: dict[str, tuple[float, float, float]],
                         cocu_precision: float, path: Path | str) -> Path:
    """mIoU (mean over benchmarks) against the precision of the prompts' new concepts.

    points: columns precision (realised), mean, lo, hi (95% t-interval over seeds), label;
    references: name -> (mean, lo, hi) drawn as horizontal bands (baseline, oracle, cocu);
    cocu_precision: CoCu's measured archive precision, a vertical line.
    """
    fig = Figure(figsize=(7, 4.4))
    ax = fig.add_subplot()
    for j, (name, (mean, lo, hi)) in enumerate(references.items()):
        colour = _colour(j + 3)
        ax.axhline(mean, color=colour, lw=1.2, ls="--", label=f"{name}: {mean:.1f}")
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axhspan(lo, hi, color=colour, alpha=0.12, lw=0)
    if len(points):
        pts = points.sort_values("precision")
        err = np.stack([pts["mean"] - pts["lo"], pts["hi"] - pts["mean"]]).astype(float)
        ax.errorbar(pts["precision"], pts["mean"], yerr=np.where(np.isfinite(err), err, np.nan), fmt="o-",
                    color=_colour(0), capsize=3, label="ground truth mixed with wrong concepts")
    if np.isfinite(cocu_precision):
        ax.axvline(cocu_precision, color=_colour(1), lw=1.2, label=f"CoCu's measured precision {cocu_precision:.2f}")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("precision of the archive's new concepts (share truly present)")
    ax.set_ylabel("mIoU, mean over benchmarks (x100)")
    ax.set_title("How good must curation be? (bars / bands: 95% interval over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
