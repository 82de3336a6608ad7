"""The whole report from tracked files: tables (md, tex, csv), figures (png) and results.md.

Every output file is always written, also when inputs are missing (then it says what is missing),
so the DVC stage's outputs are complete and the page explains itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cocu.reports import figures, inputs, page, render, tables
from cocu.config import ReportConfig
from cocu.reports.curation import curation_table
from cocu.reports.reference import check_mapping, load_reference

log = logging.getLogger(__name__)

TABLES = ("main", "ablation", "curation", "gap_closure")
FIGURES = {"convergence": "figures/convergence.png", "benchmarks": "figures/benchmarks.png"}


@dataclass(frozen=True)
class ReportOutputs:
    files: tuple[Path, ...]  # everything written, results.md first
    num_results: int  # result files read
    variants: tuple[str, ...]
    benchmarks: tuple[str, ...]
    status: tuple[str, ...]  # messages about missing inputs (also at the top of results.md)


def build_report(cfg: ReportConfig) -> ReportOutputs:
    """Read the inputs named by `cfg`, write `cfg.out_dir`/{results.md, tables/*, figures/*}."""
    out = Path(cfg.out_dir)
    ref = load_reference(cfg.paper_numbers)
    check_mapping(ref, cfg.paper_methods, cfg.paper_setting, source=f"report (paper numbers {cfg.paper_numbers})")
    results = inputs.load_results(cfg.results_dir)
    curves = inputs.load_curves(cfg.curves_dir, cfg.curve_metric)
    curate = inputs.load_flat_metrics(cfg.curate_metrics)
    teacher = inputs.load_flat_metrics(cfg.teacher_metrics)

    variants = tables.order(list(results["variant"].unique()), cfg.variants_order)
    benchmarks = tables.order(list(results["benchmark"].unique()), cfg.benchmarks_order)
    summary = tables.summarize(results, benchmarks)
    status = _status(cfg, results, curves)
    for s in status:
        log.warning("%s", s)

    built = {
        "main": tables.main_table(summary, benchmarks, variants, ref, cfg),
        "ablation": tables.ablation_table(summary, variants, cfg),
        "curation": curation_table(curate, teacher, cfg.curate_metrics, cfg.teacher_metrics),
        "gap_closure": tables.gap_closure_table(summary, benchmarks, variants, cfg),
    }
    if results.empty:  # say it in every results table instead of their usual notes
        for key in ("main", "ablation", "gap_closure"):
            t = built[key]
            built[key] = tables.Table(t.title, t.display, t.data, (status[0],), t.text_columns)
    files = []
    for name in TABLES:
        files += render.write_table(built[name], out / "tables", name)
    files += _figures(cfg, out, results, curves, summary, variants, benchmarks)

    curve_variants = tables.order(list(curves["variant"].unique()), cfg.variants_order)
    figure_links = {f"Convergence: pre-training {cfg.curve_metric} ({', '.join(curve_variants) or 'no curves'})":
                    FIGURES["convergence"],
                    "mIoU per benchmark (mean over seeds, error bars = std)": FIGURES["benchmarks"]}
    md = page.results_page(
        status=status, tables=built, figures=figure_links,
        protocols=page.protocol_section(results, benchmarks),
        reference=page.reference_section(ref, cfg.paper_numbers),
        provenance=page.provenance_section(results, cfg.results_dir, _provenance_inputs(cfg)),
        gallery=page.relative_link(cfg.gallery, out) if cfg.gallery and Path(cfg.gallery).is_file() else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(md)
    log.info("report: %d result files, variants %s, benchmarks %s -> %s", len(results), variants, benchmarks,
             out / "results.md")
    return ReportOutputs((out / "results.md", *files), len(results), tuple(variants), tuple(benchmarks),
                         tuple(status))


def _status(cfg: ReportConfig, results: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    status = []
    if results.empty:
        where = "does not exist" if not Path(cfg.results_dir).is_dir() else "holds no result files"
        status.append(f"No evaluation results: `{cfg.results_dir}` {where} (expected "
                      f"`{cfg.results_dir}/<variant>/s<seed>/<benchmark>.json`, written by the `evaluate` stage; "
                      f"run `dvc repro`, or check `report.results_dir` in params.yaml).")
    if curves.empty:
        status.append(f"No training curves in `{cfg.curves_dir}` (expected `<variant>-s<seed>.csv` with columns "
                      f"`step` and `{cfg.curve_metric}`): the convergence figure is empty.")
    profiles = sorted({str(p) for p in results["profile"] if isinstance(p, str)})
    if len(profiles) > 1:
        status.append(f"WARNING: results from several profiles are mixed: {', '.join(profiles)}.")
    return status


def _figures(cfg: ReportConfig, out: Path, results: pd.DataFrame, curves: pd.DataFrame, summary: pd.DataFrame,
             variants: list[str], benchmarks: list[str]) -> list[Path]:
    conv, bars = out / FIGURES["convergence"], out / FIGURES["benchmarks"]
    palette = tables.order([*variants, *curves["variant"].unique()], cfg.variants_order)  # same colour per variant
    if curves.empty:
        figures.placeholder(conv, f"no training curves in {cfg.curves_dir}")
    else:
        figures.convergence_figure(curves, tables.order(list(curves["variant"].unique()), cfg.variants_order),
                                   conv, ylabel=cfg.curve_metric, palette=palette)
    if results.empty:
        figures.placeholder(bars, f"no evaluation results in {cfg.results_dir}")
    else:
        figures.benchmark_bars(summary, benchmarks, variants, bars, palette=palette)
    return [conv, bars]


def _provenance_inputs(cfg: ReportConfig) -> dict[str, tuple[str | None, str | None]]:
    def entry(path: str | None) -> tuple[str | None, str | None]:
        return path, inputs.file_digest(path) if path and Path(path).is_file() else None

    named = {"paper numbers": entry(cfg.paper_numbers), "curation metrics": entry(cfg.curate_metrics),
             "teacher metrics": entry(cfg.teacher_metrics)}
    for p in inputs.curve_files(cfg.curves_dir):
        named[f"curve {p.stem}"] = entry(str(Path(cfg.curves_dir) / p.name))
    return named
