"""The `report` stage: tables equal the result files, paper/delta columns, gap closure, figures, determinism."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cocu.config import ConfigError, KindBenchmarks, ReportConfig, ReportSection, from_dict
from cocu.reports import build, tables
from cocu.reports.build import build_report
from cocu.reports.curation import curation_table
from cocu.reports.inputs import ReportInputError, load_results
from cocu.reports.reference import load_reference

from .conftest import REPO, write_params

PAPER = REPO / "configs" / "paper_numbers.yaml"
# the report knobs (params.yaml's `report:`), stated for the configs built here
KNOBS = dict(paper_setting="cc3m+cc12m+yfcc14m", paper_methods={"baseline": "groupvit", "cocu": "cocu"},
             variants_order=("baseline", "ranking", "expansion", "cocu", "oracle"),
             benchmarks_order=("synth_things", "synth_stuff", "synth_all", "voc", "context", "coco_object", "coco_stuff",
                               "cityscapes", "ade20k", "imagenet_s50", "imagenet_s300", "voc20", "context59"),
             curve_metric="loss", decimals=2, concept_benchmark="synth_all",
             kind_benchmarks=KindBenchmarks(stuff="synth_stuff", thing="synth_things"))
# optional inputs left out; every result file found is read (no configured variants x seeds)
NO_FILES = dict(curate_metrics=None, teacher_metrics=None, gallery=None, variants=None, seeds=None, run_metrics_dir="m",
                pairs_manifest=None, archives=None, benchmarks_root=None, num_prompts=3)
# variant -> benchmark -> mIoU per seed (s0, s1); chosen so the gap closure is easy by hand
MIOU = {
    "baseline": {"voc": [30.0, 32.0], "ade20k": [10.0, 12.0]},
    "cocu": {"voc": [36.0, 38.0], "ade20k": [12.0, 14.0]},
    "oracle": {"voc": [50.0, 52.0], "ade20k": [20.0, 22.0]},
}


def write_result(root: Path, variant: str, seed: int, bench: str, miou: float, **extra: object) -> Path:
    path = root / variant / f"s{seed}" / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"variant": variant, "seed": seed, "benchmark": bench, "mIoU": miou, "aAcc": 80.0, "mAcc": 50.0,
            "IoU": {"a": miou, "b": None}, "protocol": f"{bench}: card", "checkpoint_sha256": "f" * 64,
            "num_images": 8, "profile": "paper-test", **extra}
    path.write_text(json.dumps(data))
    return path


def make_inputs(root: Path, miou: dict = MIOU) -> ReportConfig:
    for variant, benches in miou.items():
        for bench, values in benches.items():
            for seed, value in enumerate(values):
                write_result(root / "results", variant, seed, bench, value)
    curves = root / "curves"
    curves.mkdir()
    for variant in ("baseline", "cocu"):
        for seed in (0, 1):
            steps = np.arange(0, 50, 5)
            df = pd.DataFrame({"step": steps, "loss": 5 * np.exp(-steps / 20) + 0.1 * seed, "itc": 1.0, "mlc": 1.0,
                               "lr": 1e-3})
            df.to_csv(curves / f"{variant}-s{seed}.csv", index=False)
    (root / "curate.json").write_text(json.dumps({"archive_size/mean": 7.5, "rewrite_rate": 0.6,
                                                  "missed_recall/archive": 0.58, "leakage": {"voc": {"fraction": 1.0}},
                                                  "brand_new/key": 2}))
    return ReportConfig(results_dir=str(root / "results"), curves_dir=str(curves), paper_numbers=str(PAPER),
                        out_dir=str(root / "out"), curate_metrics=str(root / "curate.json"),
                        teacher_metrics=str(root / "teacher.json"), gallery=None, variants=None, seeds=None, run_metrics_dir=str(curves),
                        pairs_manifest=None, archives=None, benchmarks_root=None, num_prompts=3, **KNOBS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportConfig, object]:
    cfg = make_inputs(tmp_path_factory.mktemp("report"))
    return cfg, build_report(cfg)


def test_main_table_numbers_equal_the_result_files(built) -> None:
    cfg, outputs = built
    df = pd.read_csv(Path(cfg.out_dir) / "tables" / "main.csv")
    assert outputs.num_results == 12 and outputs.variants == ("baseline", "cocu", "oracle")
    for variant, benches in MIOU.items():
        for bench, values in benches.items():
            row = df[(df.variant == variant) & (df.benchmark == bench)].iloc[0]
            assert row.n_seeds == 2
            assert row.miou_mean == pytest.approx(np.mean(values), abs=1e-6)
            assert row.miou_std == pytest.approx(np.std(values, ddof=1), abs=1e-6)
        per_seed = np.mean([benches["voc"], benches["ade20k"]], axis=0)  # [seeds]
        row = df[(df.variant == variant) & (df.benchmark == tables.MEAN)].iloc[0]
        assert row.miou_mean == pytest.approx(per_seed.mean()) and row.miou_std == pytest.approx(per_seed.std(ddof=1))
    md = (Path(cfg.out_dir) / "tables" / "main.md").read_text()
    assert "31.00 ± 1.41 (2 seeds)" in md and "oracle (upper bound)" in md


def test_paper_ours_delta_and_unknown(built) -> None:
    cfg, _ = built
    df = pd.read_csv(Path(cfg.out_dir) / "tables" / "main.csv").set_index(["variant", "benchmark"])
    voc = df.loc[("baseline", "voc")]
    assert voc.paper_status == "known" and voc.paper_miou == 52.3 and bool(voc.paper_verified)
    assert voc.delta == pytest.approx(31.0 - 52.3)
    assert df.loc[("baseline", "ade20k")].paper_status == "unknown" and math.isnan(df.loc[("baseline", "ade20k")].paper_miou)
    cocu = df.loc[("cocu", "ade20k")]  # third-party number, training setting unknown: shown, flagged unverified
    assert cocu.paper_miou == 12.3 and not bool(cocu.paper_verified) and cocu.paper_data == "unknown"
    cocu_voc = df.loc[("cocu", "voc")]  # secondary source for the paper's own setting: preferred, unverified
    assert cocu_voc.paper_miou == 51.4 and not bool(cocu_voc.paper_verified)
    assert cocu_voc.paper_data == "cc3m+cc12m+yfcc14m"
    assert df.loc[("oracle", "voc")].paper_status == "no_paper_method"
    assert df.loc[("baseline", tables.MEAN)].paper_status == "unknown"  # ade20k unknown -> the mean is unknown
    md = (Path(cfg.out_dir) / "tables" / "main.md").read_text()
    lines = {line.split("|")[2].strip(): line for line in md.splitlines() if line.startswith("|")}
    paper_row = next(line for key, line in lines.items() if key.startswith("paper: GroupViT"))
    assert "52.3" in paper_row and "unknown" in paper_row
    assert "-21.30" in md and "+0.70*†" in md  # 31 - 52.3; cocu: 13 - 12.3 (setting unknown)
    assert "-14.40*" in md and "-14.40*†" not in md  # cocu: 37 - 51.4 (setting known, unverified)


def test_gap_closure_by_hand(built) -> None:
    cfg, _ = built
    df = pd.read_csv(Path(cfg.out_dir) / "tables" / "gap_closure.csv").set_index("benchmark")
    assert df.loc["voc"].closure == pytest.approx((37 - 31) / (51 - 31))  # 0.3
    assert df.loc["ade20k"].closure == pytest.approx((13 - 11) / (21 - 11))  # 0.2
    assert df.loc[tables.MEAN].closure == pytest.approx((25 - 21) / (36 - 21))  # per-seed means 24,26 / 20,22 / 35,37
    assert set(df.status) == {"ok"}


def test_gap_closure_undefined_when_oracle_not_better() -> None:
    from cocu.reports.comparisons import gap_closure_table

    results = pd.DataFrame([{"variant": v, "seed": s, "benchmark": "synth_all", "mIoU": m + s}
                            for v, m in (("baseline", 20.0), ("cocu", 25.0), ("oracle", 18.0)) for s in (0, 1)])
    summary = tables.summarize(results, ["synth_all"])
    cfg = ReportConfig(results_dir="r", curves_dir="c", paper_numbers="p", out_dir="o", **NO_FILES, **KNOBS)
    table = gap_closure_table(results, ["synth_all"], ["baseline", "cocu", "oracle"], 2)
    assert set(table.data.status) == {"undefined: oracle − baseline not above 0"}
    assert "undefined" in table.display.iloc[0]["closure: cocu"]
    main = tables.main_table(summary, ["synth_all"], ["baseline", "cocu", "oracle"], load_reference(PAPER), cfg)
    assert list(main.display.row) == ["ours"] * 3  # no paper benchmark: no paper rows, and a note says why
    assert set(main.data.paper_status) == {"not_a_paper_benchmark", "no_paper_method"}
    assert any("None of these benchmarks" in n for n in main.notes)


def test_figures_are_pngs(built) -> None:
    cfg, _ = built
    for name in ("convergence", "benchmarks"):
        with Image.open(Path(cfg.out_dir) / "figures" / f"{name}.png") as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def test_same_inputs_same_bytes(built, tmp_path: Path) -> None:
    cfg, _ = built
    again = dataclasses.replace(cfg, out_dir=str(tmp_path / "again"))
    build_report(again)
    for rel in ("results.md", "tables/main.md", "tables/main.csv", "tables/main.tex", "tables/ablation.csv",
                "tables/curation.csv", "tables/gap_closure.md", "figures/benchmarks.png", "figures/convergence.png"):
        assert (Path(cfg.out_dir) / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def test_results_page_lists_protocols_provenance_and_missing_teacher(built) -> None:
    cfg, _ = built
    md = (Path(cfg.out_dir) / "results.md").read_text()
    assert "`voc: card`" in md and "figures/convergence.png" in md and "12 result files" in md
    assert "No teacher metrics" in md and "teacher.json" in md  # optional file missing: omitted with a note
    assert "NVlabs/GroupViT README.md" in md  # sources of the paper numbers


def test_missing_results_folder_says_so(tmp_path: Path) -> None:
    cfg = ReportConfig(results_dir=str(tmp_path / "nope"), curves_dir=str(tmp_path / "nocurves"),
                       paper_numbers=str(PAPER), out_dir=str(tmp_path / "out"), **NO_FILES, **KNOBS)
    outputs = build_report(cfg)
    md = (tmp_path / "out" / "results.md").read_text()
    assert outputs.num_results == 0 and f"No evaluation results: `{tmp_path / 'nope'}` does not exist" in md
    assert "No evaluation results" in (tmp_path / "out" / "tables" / "main.md").read_text()
    assert pd.read_csv(tmp_path / "out" / "tables" / "main.csv").empty
    assert all(p.is_file() for p in outputs.files)
    assert len(outputs.files) == 1 + 3 * len(build.TABLES) + len(build.FIGURES)


def test_result_in_wrong_folder_is_an_error(tmp_path: Path) -> None:
    path = write_result(tmp_path, "cocu", 0, "voc", 40.0)
    path.write_text(path.read_text().replace('"variant": "cocu"', '"variant": "baseline"'))
    with pytest.raises(ReportInputError, match=str(path)):
        load_results(tmp_path)


def test_ablation_orders_l_sweep_or_explains_it(tmp_path: Path) -> None:
    rows = [{"variant": v, "seed": 0, "benchmark": "voc", "mIoU": m}
            for v, m in (("baseline", 10.0), ("cocu", 14.0), ("cocu-L16", 13.0), ("cocu-L4", 12.0), ("ranking", 11.0))]
    cfg = ReportConfig(results_dir="r", curves_dir="c", paper_numbers="p", out_dir="o", **NO_FILES, **KNOBS)
    variants = tables.order([r["variant"] for r in rows], cfg.variants_order)
    table = tables.ablation_table(tables.summarize(pd.DataFrame(rows), ["voc"]), variants, cfg)
    assert list(table.data.variant) == ["baseline", "ranking", "cocu", "cocu-L4", "cocu-L16"]
    assert table.data.set_index("variant").loc["cocu-L4"].delta_vs_baseline == pytest.approx(2.0)
    assert any("expansion" in n for n in table.notes)
    plain = tables.ablation_table(tables.summarize(pd.DataFrame(rows[:2]), ["voc"]), ["baseline", "cocu"], cfg)
    assert any("dvc exp run -S index.num_neighbours" in n for n in plain.notes)


def test_curation_table_groups_any_keys() -> None:
    table = curation_table({"missed_recall/archive": 0.58, "missed/recall_archive": 0.5, "zzz/new": 3.0},
                           None, "m/curate.json", None)
    labels = dict(zip(table.data.key, table.data.label))
    assert labels["missed_recall/archive"] == labels["missed/recall_archive"] == "recall of missed concepts by the full archive"
    assert labels["zzz/new"] == "zzz/new" and "zzz" in set(table.data.group)
    assert any("not configured" in n for n in table.notes)


def test_reference_file_is_strict_and_sourced(tmp_path: Path) -> None:
    ref = load_reference(PAPER)
    voc = ref.lookup("groupvit", "cc3m+cc12m+yfcc14m", "voc")
    assert voc is not None and voc.value == 52.3 and voc.verified and "GroupViT" in voc.source
    assert ref.lookup("groupvit", "cc3m+cc12m+yfcc14m", "ade20k") is None  # unknown, not guessed
    cocu = [n for n in ref.numbers if n.method == "cocu"]  # no CoCu number could be read in the paper itself
    assert cocu and not any(n.verified for n in cocu)
    raw = yaml.safe_load(PAPER.read_text())
    raw["entries"][0]["typo"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="typo"):
        load_reference(tmp_path / "bad.yaml")
    raw = yaml.safe_load(PAPER.read_text())
    raw["entries"][0]["source"] = None
    (tmp_path / "nosource.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="no `source`"):
        load_reference(tmp_path / "nosource.yaml")


def test_pipeline_main_reads_the_report_section(tmp_path: Path) -> None:
    import pipelines.report as stage

    cfg = make_inputs(tmp_path)
    params = write_params(tmp_path, paths={"results": cfg.results_dir, "pretrain_curves": cfg.curves_dir,
                                           "reports": cfg.out_dir, "details": str(Path(cfg.curate_metrics).parent)})
    stage.main(params)
    assert (Path(cfg.out_dir) / "results.md").is_file()
    assert "0.58" in (Path(cfg.out_dir) / "tables" / "curation.md").read_text()
    with pytest.raises(ConfigError, match="typo"):
        from_dict(ReportSection, {**yaml.safe_load(params.read_text())["report"], "typo": 1})


def test_single_seed_cells_show_the_bootstrap_interval(tmp_path: Path) -> None:
    write_result(tmp_path, "baseline", 0, "voc", 30.0, mIoU_ci95=[27.5, 32.25])
    write_result(tmp_path, "cocu", 0, "voc", 36.0, mIoU_ci95=[33.0, 39.0])
    write_result(tmp_path, "cocu", 1, "voc", 38.0, mIoU_ci95=[35.0, 41.0])
    results = load_results(tmp_path)
    summary = tables.summarize(results, ["voc"])
    assert tables.interval(summary, "baseline", "voc") == (27.5, 32.25)
    assert all(math.isnan(x) for x in tables.interval(summary, "cocu", "voc"))  # 2 seeds: the seed spread instead
    cell = tables.fmt_stat(*tables.stat(summary, "baseline", "voc"), 2, tables.interval(summary, "baseline", "voc"))
    assert cell == "30.00 [27.50, 32.25] (1 seed)"
    assert tables.fmt_stat(*tables.stat(summary, "cocu", "voc"), 2) == "37.00 ± 1.41 (2 seeds)"
    write_result(tmp_path, "cocu", 2, "voc", 38.0, mIoU_ci95=[35.0])
    with pytest.raises(ReportInputError, match="mIoU_ci95"):
        load_results(tmp_path)
