"""The `report:` section of params.yaml: which tracked files the report reads and where it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# canonical row order of the tables; variants not named here follow, sorted naturally
VARIANTS_ORDER = ("baseline", "ranking", "expansion", "cocu", "oracle")
# canonical column order; benchmarks not named here follow, sorted
BENCHMARKS_ORDER = (
    "synth_things", "synth_stuff", "synth_all",
    "voc", "context", "coco_object", "coco_stuff", "cityscapes", "ade20k", "imagenet_s50", "imagenet_s300",
    "voc20", "context59",
)


@dataclass(frozen=True)
class ReportConfig:
    """Inputs are DVC-tracked files only (never the MLflow store), so the report rebuilds without it."""

    results_dir: str  # results/<variant>/s<seed>/<benchmark>.json, written by the `evaluate` stage
    curves_dir: str  # <variant>-s<seed>.csv training curves (step, loss, ...), written by `pretrain`
    paper_numbers: str  # reference numbers with their sources (configs/paper_numbers.yaml)
    out_dir: str  # results.md, tables/, figures/ are written here
    curate_metrics: Optional[str] = None  # flat JSON of the `curate` stage; missing file: omitted with a note
    teacher_metrics: Optional[str] = None  # flat JSON of the teacher CLIP's quality (synthetic profile)
    gallery: Optional[str] = None  # a figure shown at the top of results.md (e.g. paths.world_gallery)
    paper_setting: str = "cc3m+cc12m+yfcc14m"  # pre-training data setting of the paper numbers compared to
    # variant -> method of the reference file whose numbers it reproduces; other variants have none
    paper_methods: dict[str, str] = field(default_factory=lambda: {"baseline": "groupvit", "cocu": "cocu"})
    variants_order: tuple[str, ...] = VARIANTS_ORDER
    benchmarks_order: tuple[str, ...] = BENCHMARKS_ORDER
    curve_metric: str = "loss"  # curve column plotted in the convergence figure
    decimals: int = 2  # decimals of mIoU in the Markdown and LaTeX tables
    # the runs the pipeline is configured for (pretrain.variants x pretrain.seeds): only their
    # results are read; None reads every result file found (tests, ad-hoc use)
    variants: Optional[tuple[str, ...]] = None
    seeds: Optional[tuple[int, ...]] = None
    pairs_manifest: Optional[str] = None  # synthetic world: the hidden ground truth of the per-concept analysis
    archives: Optional[str] = None  # the curated archives (per-concept curation recall)
    num_prompts: int = 3  # K: prompts per training step (CoCu's prompt recall)
    concept_benchmark: str = "synth_all"  # the benchmark holding every concept (per-concept gains)


@dataclass(frozen=True)
class ReportSection:
    """The `report:` section of params.yaml: the knobs. Input and output paths live in `paths:`."""

    paper_setting: str = "cc3m+cc12m+yfcc14m"
    paper_methods: dict[str, str] = field(default_factory=lambda: {"baseline": "groupvit", "cocu": "cocu"})
    variants_order: tuple[str, ...] = VARIANTS_ORDER
    benchmarks_order: tuple[str, ...] = BENCHMARKS_ORDER
    curve_metric: str = "loss"
    decimals: int = 2
