"""The whole report from tracked files: tables (md, tex, csv), figures (png) and results.md.

Every output file is always written, also when inputs are missing (then it says what is missing),
so the DVC stage's outputs are complete and the page explains itself.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cocu.reports import comparisons, figures, inputs, mechanism, page, render, tables
from cocu.config import ReportConfig
from cocu.reports.curation import curation_table
from cocu.reports.reference import check_mapping, load_reference

log = logging.getLogger(__name__)

TABLES = ("main", "paired", "paired_images", "gap_closure", "ablation", "curation", "concepts", "concepts_by_kind",
          "kind_contest", "dose_response")
FIGURES = {"convergence": "figures/convergence.png", "benchmarks": "figures/benchmarks.png",
           "mechanism": "figures/mechanism.png", "dose_response": "figures/dose_response.png"}


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
    results, leftovers = _configured(inputs.load_results(cfg.results_dir), cfg)
    curves = inputs.load_curves(cfg.curves_dir, cfg.curve_metric)
    if cfg.variants is not None:
        curves = curves[curves["variant"].isin(cfg.variants) & curves["seed"].isin(cfg.seeds or ())]
    curate = inputs.load_flat_metrics(cfg.curate_metrics)
    teacher = inputs.load_flat_metrics(cfg.teacher_metrics)

    variants = tables.order(list(results["variant"].unique()), cfg.variants_order)
    benchmarks = tables.order(list(results["benchmark"].unique()), cfg.benchmarks_order)
    summary = tables.summarize(results, benchmarks)
    status = _status(cfg, results, curves)
    if leftovers:
        status.append(f"Left out {leftovers} result file(s) of runs that params.yaml does not configure "
                      f"(pretrain.variants x pretrain.seeds): leftovers of earlier runs.")
    for s in status:
        log.warning("%s", s)

    counts = comparisons.results_counts_loader(cfg.results_dir)
    paired, paired_images, _ = comparisons.paired_tables(results, benchmarks, variants, counts, cfg.decimals)
    concepts = _concepts(cfg, variants, results)
    dose = _dose_response(cfg, results, benchmarks, variants, curate)
    built = {
        "main": tables.main_table(summary, benchmarks, variants, ref, cfg),
        "paired": paired,
        "paired_images": paired_images,
        "gap_closure": comparisons.gap_closure_table(results, benchmarks, variants, cfg.decimals),
        "ablation": tables.ablation_table(summary, variants, cfg),
        "curation": curation_table(curate, teacher, cfg.curate_metrics, cfg.teacher_metrics),
        "concepts": concepts.all_classes,
        "concepts_by_kind": concepts.by_kind,
        "kind_contest": concepts.contest,
        "dose_response": dose[0],
    }
    if results.empty:  # say it in every results table instead of their usual notes
        for key in ("main", "paired", "paired_images", "ablation", "gap_closure"):
            t = built[key]
            built[key] = tables.Table(t.title, t.display, t.data, (status[0],), t.text_columns)
    files = []
    for name in TABLES:
        files += render.write_table(built[name], out / "tables", name)
    files += _figures(cfg, out, results, curves, summary, variants, benchmarks)
    files += _analysis_figures(out, concepts.frame, dose[1], variants, cfg)

    curve_variants = tables.order(list(curves["variant"].unique()), cfg.variants_order)
    figure_links = {f"Convergence: pre-training {cfg.curve_metric} ({', '.join(curve_variants) or 'no curves'})":
                    FIGURES["convergence"],
                    "mIoU per benchmark (mean over seeds, error bars = std; none with one seed)": FIGURES["benchmarks"],
                    "Per-concept gains vs caption mention rate and curation recall": FIGURES["mechanism"],
                    "Dose-response: mIoU vs the precision of curated concepts": FIGURES["dose_response"]}
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


def _configured(results: pd.DataFrame, cfg: ReportConfig) -> tuple[pd.DataFrame, int]:
    """Only the results of configured runs (variants x seeds), and how many files were left out."""
    if cfg.variants is None or results.empty:
        return results, 0
    keep = results["variant"].isin(cfg.variants) & results["seed"].isin(cfg.seeds or ())
    return results[keep].reset_index(drop=True), int((~keep).sum())


def _seeds(results: pd.DataFrame) -> dict[str, list[int]]:
    return {v: sorted(int(s) for s in g["seed"].unique()) for v, g in results.groupby("variant")}


CONCEPT_NOTE = ("Mention rate: share of the pre-training pairs showing the concept whose caption names it. Recall: "
                "over the pairs whose caption misses a present concept, the share whose archive holds it, and the mean "
                "probability that CoCu's cluster-guided sampling (K = {k}) prompts it. Gains are paired by seed, with "
                "95% t-intervals; IoU x100.")


@dataclass(frozen=True)
class ConceptAnalysis:
    """The per-concept analysis: its tables and the frame behind the mechanism figure."""

    all_classes: tables.Table  # gains on `report.concept_benchmark` (every concept competes)
    by_kind: tables.Table  # gains with each concept judged among its own kind (`report.kind_benchmarks`)
    contest: tables.Table  # stuff vs things: pixel shares on `report.concept_benchmark`
    frame: pd.DataFrame  # mechanism columns; gain/<v> (all classes), kgain/<v> (own kind)


def _concepts(cfg: ReportConfig, variants: list[str], results: pd.DataFrame) -> ConceptAnalysis:
    """Per concept: mention rate, curation recall, and the IoU gains over the baseline in both views
    (synthetic world only: it needs the hidden ground truth)."""
    titles = ("Per concept: caption mention rate, curation recall of missed concepts, IoU gain over the baseline "
              f"on `{cfg.concept_benchmark}` (every concept competes)",
              "Per concept, judged among its own kind: IoU gain over the baseline on "
              f"`{cfg.kind_benchmarks.stuff}` (stuff) and `{cfg.kind_benchmarks.thing}` (things)",
              f"Stuff vs things on `{cfg.concept_benchmark}`: share of the pixels each kind holds and is predicted on")
    present = set(results["benchmark"]) if not results.empty else set()
    kind_benches = {"stuff": cfg.kind_benchmarks.stuff, "thing": cfg.kind_benchmarks.thing}
    why = None
    if not (cfg.pairs_manifest and mechanism.has_ground_truth(cfg.pairs_manifest)):
        why = "needs the synthetic world's hidden ground truth (the manifest's gt_* columns)"
    elif "baseline" not in variants or cfg.concept_benchmark not in present:
        why = f"needs baseline results on `{cfg.concept_benchmark}`"
    if why:
        empty = tables.Table("", pd.DataFrame(), pd.DataFrame(), (f"Not computed: {why}.",))
        return ConceptAnalysis(*(dataclasses.replace(empty, title=t) for t in titles), pd.DataFrame())
    from cocu.data.world import CONCEPTS

    kinds = {c.name: c.kind for c in CONCEPTS}
    under = {c.name: c.under_named for c in CONCEPTS}
    frame = mechanism.mention_rates(cfg.pairs_manifest)
    if cfg.archives and Path(cfg.archives).is_dir():
        frame = frame.merge(mechanism.curation_recall(cfg.pairs_manifest, cfg.archives, cfg.num_prompts),
                            on="concept", how="left")
    else:
        frame = frame.assign(missed=float("nan"), archive_recall=float("nan"), prompt_recall=float("nan"))
    frame.insert(1, "kind", frame["concept"].map(kinds))
    frame.insert(2, "under_named", frame["concept"].map(under).fillna(False).astype(bool))
    others = [v for v in variants if v != "baseline" and not v.startswith("precision")]
    seeds = _seeds(results)
    frame = frame.merge(mechanism.concept_gains(cfg.results_dir, seeds, cfg.concept_benchmark, others),
                        on="concept", how="left")
    have_kinds = set(kind_benches.values()) <= present
    if have_kinds:
        own = mechanism.kind_gains(cfg.results_dir, seeds, kind_benches, kinds, others)
        own = own.rename(columns={c: f"k{c}" for c in own.columns if c != "concept"})
        frame = frame.merge(own, on="concept", how="left")
    frame = frame.sort_values("mention_rate", kind="stable").reset_index(drop=True)
    d = cfg.decimals
    note = CONCEPT_NOTE.format(k=cfg.num_prompts)

    def columns(prefix: str) -> dict[str, list[str]]:
        return {f"gain {tables.variant_label(v)}": [comparisons.fmt_interval(stats_interval(frame, v, i, prefix), d)
                                                    for i in range(len(frame))] for v in others}

    base = {"concept": frame["concept"], "kind": frame["kind"],
            "under-named": frame["under_named"].map({True: "yes", False: ""}),
            "mention rate": frame["mention_rate"].map(lambda x: f"{x:.2f}")}
    display = pd.DataFrame({
        **base,
        "archive recall (missed)": frame["archive_recall"].map(lambda x: f"{x:.2f}"),
        "CoCu prompt recall (missed)": frame["prompt_recall"].map(lambda x: f"{x:.2f}"),
        "IoU baseline": frame["iou/baseline"].map(lambda x: f"{x:.{d}f}"), **columns("")})
    notes = [f"IoU on `{cfg.concept_benchmark}`, where every concept is a class and stuff and things compete for "
             f"the same pixels. {note}", *_correlations(frame, others, "")]
    if "cocu" in others:
        rho, pval = mechanism.spearman(frame["prompt_recall"], frame["gain/cocu"])
        notes.append(f"Spearman correlation of the CoCu gain with CoCu's prompt recall: rho = {rho:.2f} (p = {pval:.3f}).")
    all_classes = tables.Table(titles[0], display, frame.copy(), tuple(notes))
    if not have_kinds:
        missing = sorted(set(kind_benches.values()) - present)
        by_kind = tables.Table(titles[1], pd.DataFrame(), pd.DataFrame(),
                               (f"Not computed: no results on {', '.join(f'`{b}`' for b in missing)}.",))
    else:
        kdisplay = pd.DataFrame({**base, "benchmark": frame["kbenchmark"],
                                 "IoU baseline": frame["kiou/baseline"].map(lambda x: f"{x:.{d}f}"), **columns("k")})
        knotes = [f"Each concept on the benchmark of its kind only: stuff among the stuff classes with thing pixels "
                  f"ignored (`{cfg.kind_benchmarks.stuff}`), things among the things and the background "
                  f"(`{cfg.kind_benchmarks.thing}`); this asks whether the model recognises the concept, apart from "
                  f"the stuff-vs-things contest of `{cfg.concept_benchmark}`. {note}",
                  *_correlations(frame, others, "k")]
        rates = frame.groupby("kind")["mention_rate"].mean().sort_values()
        if len(rates) == 2:
            low, high = rates.index
            for v in others:
                iv = mechanism.kind_contrast(cfg.results_dir, seeds, kind_benches, kinds, v, low, high)
                knotes.append(f"{tables.variant_label(v)}: mean gain over the {low} concepts (mean mention rate "
                              f"{rates[low]:.2f}) minus over the {high} concepts ({rates[high]:.2f}), paired by "
                              f"seed: {comparisons.fmt_interval(iv, d)}.")
        if "cocu" in others:
            rho, pval = mechanism.spearman(frame["prompt_recall"], frame["kgain/cocu"])
            knotes.append(f"Spearman correlation of the CoCu gain with CoCu's prompt recall: rho = {rho:.2f} "
                          f"(p = {pval:.3f}).")
        by_kind = tables.Table(titles[1], kdisplay, frame.copy(), tuple(knotes))
    return ConceptAnalysis(all_classes, by_kind, _kind_contest(cfg, titles[2], variants, seeds, kinds), frame)


def _correlations(frame: pd.DataFrame, variants: list[str], prefix: str) -> list[str]:
    """Spearman of each variant's gain with the mention rate: over every concept and within each kind."""
    notes = []
    for v in variants:
        col = f"{prefix}gain/{v}"
        rho, pval = mechanism.spearman(frame["mention_rate"], frame[col])
        within = []
        for kind, g in frame.groupby("kind"):
            r, pk = mechanism.spearman(g["mention_rate"], g[col])
            within.append(f"{kind} {r:+.2f} (p = {pk:.2f})")
        notes.append(f"Spearman correlation of the {tables.variant_label(v)} gain with the mention rate: "
                     f"rho = {rho:.2f} (p = {pval:.3f}, {int(frame[col].notna().sum())} concepts; negative = gains on "
                     f"under-named concepts); within a kind: {', '.join(within)}.")
    return notes


def _kind_contest(cfg: ReportConfig, title: str, variants: list[str], seeds: dict[str, list[int]],
                  kinds: dict[str, str]) -> tables.Table:
    """Per variant, on `concept_benchmark`: each kind's share of the labelled and of the predicted pixels."""
    names = Path(cfg.benchmarks_root or "") / cfg.concept_benchmark / "class_names.txt"
    if not (cfg.benchmarks_root and names.is_file()):
        return tables.Table(title, pd.DataFrame(), pd.DataFrame(), (f"Not computed: no class names at `{names}`.",))
    from cocu.data.converters import read_class_names

    class_names = read_class_names(names)
    rows = []
    for v in variants:
        shares = mechanism.kind_pixel_shares(cfg.results_dir, v, seeds.get(v, ()), cfg.concept_benchmark,
                                             class_names, kinds)
        rows += [{"variant": v, **r} for r in shares.to_dict("records")]
    data = pd.DataFrame(rows, columns=["variant", "kind", "labelled", "predicted", "recall", "precision", "n"])
    if data.empty:
        return tables.Table(title, pd.DataFrame(), data, ("Not computed: no per-image counts.",))
    display = pd.DataFrame({"variant": data["variant"].map(tables.variant_label), "kind": data["kind"],
                            **{f"{c} (share)" if c in ("labelled", "predicted") else f"pixel {c}":
                               data[c].map(lambda x: f"{x:.2f}") for c in ("labelled", "predicted", "recall",
                                                                          "precision")},
                            "seeds": data["n"].astype(int).astype(str)})
    notes = (f"From the per-image counts of `{cfg.concept_benchmark}`, summed over its images, mean over seeds: a "
             "kind's share of the labelled pixels and of the predicted ones; pixel recall: the share of its pixels "
             "predicted as their true class; pixel precision: the share of the pixels predicted as one of its classes "
             "that are that class. A kind predicted on far more pixels than it holds takes them from the other kind.",)
    return tables.Table(title, display, data, notes, text_columns=2)


def stats_interval(frame: pd.DataFrame, v: str, i: int, prefix: str = ""):
    from cocu.reports.stats import Interval

    row = frame.iloc[i]
    return Interval(float(row[f"{prefix}gain/{v}"]), float(row[f"{prefix}gain_lo/{v}"]),
                    float(row[f"{prefix}gain_hi/{v}"]), int(row[f"{prefix}n/{v}"]))


def _dose_response(cfg: ReportConfig, results: pd.DataFrame, benchmarks: list[str], variants: list[str],
                   curate: dict | None) -> tuple[tables.Table, tuple[pd.DataFrame, dict, float]]:
    """mIoU (mean over benchmarks) of the precision<P> ablations vs their realised precision."""
    import json
    import math

    from cocu.reports.stats import t_interval
    from cocu.training.prompts import variant_precision

    title = "Dose-response: mIoU vs the precision of the archive's new concepts (ground truth mixed with wrong ones)"
    cocu_precision = float((curate or {}).get("missed_precision/archive", math.nan))
    rows, display = [], []
    for v in variants:
        p = variant_precision(v)
        if p is None:
            continue
        scores = comparisons.seed_scores(results, v, tables.MEAN, benchmarks)
        iv = t_interval(list(scores.values()))
        realised = []
        for s in scores:
            path = Path(cfg.run_metrics_dir) / f"{v}-s{s}.json"
            if path.is_file():
                realised.append(json.loads(path.read_text()).get("prompts/archive_precision", math.nan))
        prec = float(np.nanmean(realised)) if realised else p
        rows.append({"variant": v, "target": p, "precision": prec, "mean": iv.estimate, "lo": iv.lo, "hi": iv.hi,
                     "n": iv.n})
        display.append({"variant": v, "target precision": f"{p:.2f}", "realised precision": f"{prec:.2f}",
                        "mIoU, mean over benchmarks": comparisons.fmt_interval(iv, cfg.decimals, signed=False)})
    refs = {}
    for v in ("baseline", "cocu", "oracle"):
        if v in variants:
            iv = t_interval(list(comparisons.seed_scores(results, v, tables.MEAN, benchmarks).values()))
            refs[tables.variant_label(v)] = (iv.estimate, iv.lo, iv.hi)
    points = pd.DataFrame(rows, columns=["variant", "target", "precision", "mean", "lo", "hi", "n"])
    notes = (f"CoCu's measured precision of the archive's new concepts: {cocu_precision:.2f} (curation metrics). "
             "Each precision<P> variant prompts with K concepts drawn uniformly from a synthetic archive of CoCu's "
             "size per pair: the caption's concepts plus new ones, a share P of them truly present (missed by the "
             "caption) and the rest absent; intervals are 95% t-intervals over seeds.",) if rows else (
        "Not computed: no precision<P> variants among the results (the study runs them: `make study`).",)
    return (tables.Table(title, pd.DataFrame(display), points, notes), (points, refs, cocu_precision))


def _analysis_figures(out: Path, concepts: pd.DataFrame, dose: tuple[pd.DataFrame, dict, float],
                      variants: list[str], cfg: ReportConfig) -> list[Path]:
    mech, dr = out / FIGURES["mechanism"], out / FIGURES["dose_response"]
    others = [v for v in variants if v != "baseline" and not v.startswith("precision")]
    palette = tables.order(variants, cfg.variants_order)
    if concepts.empty or not others:
        figures.placeholder(mech, "per-concept analysis: needs the synthetic world's ground truth and baseline results")
    else:
        views = [(p, name) for p, name in (("k", "among its own kind"), ("", f"among every concept "
                                                                        f"({cfg.concept_benchmark})"))
                 if f"{p}gain/{others[0]}" in concepts]
        figures.mechanism_figure(concepts, [v for v in ("oracle", "cocu") if v in others] or others, mech,
                                 palette=palette, views=views)
    points, refs, cocu_precision = dose
    if points.empty:
        figures.placeholder(dr, "dose-response: no precision<P> variants among the results (make study)")
    else:
        figures.dose_response_figure(points, refs, cocu_precision, dr)
    return [mech, dr]
