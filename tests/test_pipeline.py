"""The whole DVC pipeline, stage by stage, in-process at smoke size: every stage's outputs exist,
have the contracted shapes, and the report's numbers come from the result files."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cocu.config import load_params
from cocu.data.manifest import read_manifest

from .conftest import REPO, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    from pipelines import benchmarks, concepts, curate, embed, evaluate, index, pairs, pretrain, report, teacher

    tmp = tmp_path_factory.mktemp("pipeline")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
    smoke = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    smoke.pop("run")
    smoke["pretrain"] = {"variants": ["baseline", "cocu", "oracle", "precision50"], "seeds": [0], "threads": 1,
                         "parallel": 2}
    smoke["eval"] = {"active": ["synth_things", "synth_stuff", "synth_all"], "overlays": 2, "threads": 1}
    params_file = write_params(tmp, **smoke)
    for stage in (pairs, benchmarks, teacher, embed, index, concepts, curate):
        stage.main(params_file)
    params = load_params(params_file)
    pretrain.main(params_file)  # every run, two processes at a time
    evaluate.main(params_file)
    report.main(params_file)
    yield params_file, params
    mp.undo()


def test_embeddings_and_neighbours(pipeline):
    _, params = pipeline
    n = len(read_manifest(params.paths.pairs_manifest))
    images = np.load(params.paths.image_embeddings)
    assert images.shape[0] == n and images.dtype == np.float16
    assert np.allclose(np.linalg.norm(images.astype(np.float32), axis=1), 1.0, atol=1e-2)
    names = Path(params.paths.concept_names).read_text().split("\n")[:-1]
    assert len(names) == np.load(params.paths.concept_embeddings).shape[0] == 24  # canonical concepts only
    ids = np.load(params.paths.neighbours)
    assert ids.shape == (n, params.index.num_neighbours)
    assert (ids[:, 0] == np.arange(n)).mean() > 0.9  # an image is its own nearest neighbour
    teacher = json.loads((Path(params.paths.details) / "teacher.json").read_text())
    assert {"holdout_zeroshot_top1_present", "holdout_neighbour_jaccard", "weights_sha256"} <= set(teacher["metrics"])
    headline = json.loads(Path(params.paths.teacher_metrics).read_text())
    assert headline["zeroshot_top1"] == teacher["metrics"]["holdout_zeroshot_top1_present"]


def test_archives(pipeline):
    _, params = pipeline
    shards = sorted(Path(params.paths.archives).glob("*.parquet"))
    assert len(shards) >= 2  # shard_size is smaller than N in the smoke profile: resume has units
    frame = pd.concat([pd.read_parquet(p) for p in shards])
    keys = read_manifest(params.paths.pairs_manifest)["key"]
    assert list(frame["key"]) == list(keys)
    for concepts, scores, clusters in zip(frame["concepts"], frame["scores"], frame["clusters"]):
        assert len(concepts) == len(scores) == len(clusters)
        assert list(scores) == sorted(scores, reverse=True)
    metrics = json.loads((Path(params.paths.details) / "curate.json").read_text())
    assert any(k.startswith("missed") for k in metrics)
    assert metrics["leakage/synth_all/fraction"] == 1.0 and "sky" in metrics["leakage/synth_all/names"]
    headline = json.loads(Path(params.paths.curate_metrics).read_text())
    assert headline["missed_recall"] == metrics["missed_recall/archive"] and headline["pairs"] == len(keys)


def test_pretrain_and_results(pipeline):
    _, params = pipeline
    for variant in params.pretrain.variants:
        assert Path(params.paths.checkpoints, f"{variant}-s0.pt").is_file()
        curve = pd.read_csv(Path(params.paths.pretrain_curves) / f"{variant}-s0.csv")
        assert len(curve) >= 1 and np.isfinite(curve["loss"]).all()
        summary = json.loads((Path(params.paths.details) / "pretrain" / f"{variant}-s0.json").read_text())
        headline = json.loads((Path(params.paths.pretrain_metrics) / f"{variant}-s0.json").read_text())
        assert headline == {"loss": summary["final/loss"]}
        assert not [k for k in summary if "per_s" in k or "second" in k or k == "resumed_from"]  # MLflow only
        assert list(curve.columns) == ["step", "loss", "itc", "mlc", "lr"]  # no wall-clock column
        for bench in params.eval.active:
            result = json.loads((Path(params.paths.results) / variant / "s0" / f"{bench}.json").read_text())
            assert 0.0 <= result["mIoU"] <= 100.0
            assert result["checkpoint_sha256"] == summary["checkpoint_sha256"]
            assert result["protocol"].startswith(bench)
            assert list((Path(params.paths.results) / variant / "s0" / f"{bench}_examples").glob("*.png"))
        metrics = json.loads((Path(params.paths.eval_metrics) / f"{variant}-s0.json").read_text())  # DVC metrics
        assert {b: metrics[f"mIoU/{b}"] for b in params.eval.active} == {
            b: json.loads((Path(params.paths.results) / variant / "s0" / f"{b}.json").read_text())["mIoU"]
            for b in params.eval.active}


def test_report_numbers_equal_result_files(pipeline):
    _, params = pipeline
    table = pd.read_csv(Path(params.paths.reports) / "tables" / "main.csv")
    for variant in params.pretrain.variants:
        for bench in params.eval.active:
            result = json.loads((Path(params.paths.results) / variant / "s0" / f"{bench}.json").read_text())
            row = table[(table["variant"] == variant) & (table["benchmark"] == bench)]
            assert len(row) == 1
            assert row["miou_mean"].iloc[0] == pytest.approx(result["mIoU"], abs=1e-9)
    page = (Path(params.paths.reports) / "results.md").read_text()
    assert page.count("oracle") >= 1 and "Paired differences to the baseline" in page
    paired = pd.read_csv(Path(params.paths.reports) / "tables" / "paired.csv")
    assert set(paired["variant"]) == {"cocu", "oracle", "precision50"}  # every other variant vs the baseline
    assert (Path(params.paths.reports) / "figures" / "mechanism.png").is_file()
    contest = pd.read_csv(Path(params.paths.reports) / "tables" / "kind_contest.csv")
    assert set(contest["kind"]) == {"stuff", "thing"} and contest["labelled"].between(0, 1).all()
    by_kind = pd.read_csv(Path(params.paths.reports) / "tables" / "concepts_by_kind.csv")
    assert set(by_kind["kbenchmark"].dropna()) <= {params.report.kind_benchmarks.stuff,
                                                   params.report.kind_benchmarks.thing}
    dose = pd.read_csv(Path(params.paths.reports) / "tables" / "dose_response.csv")
    assert list(dose["variant"]) == ["precision50"] and 0.0 <= dose["precision"].iloc[0] <= 1.0


def test_segment_demo_writes_an_overlay(pipeline, tmp_path):
    params_file, params = pipeline
    image = sorted((Path(params.paths.benchmarks_root) / "synth_all" / "images").glob("*.png"))[0]
    out = tmp_path / "overlay.png"
    done = subprocess.run([sys.executable, "-m", "cocu", "segment", str(image), "--classes", "sky,grass,car,ball",
                           "--checkpoint", str(Path(params.paths.checkpoints) / "oracle-s0.pt"), "--out", str(out),
                           "--params", str(params_file)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size[0] >= 256


def default_metrics_files() -> list[tuple[str, dict]]:
    """(path, matrix item) of every DVC metrics file of the default pipeline: dvc.yaml's `metrics:`
    entries with `${...}` resolved from the repo's params.yaml, matrix stages expanded."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def lookup(name: str, item: dict):
        node = {"item": item, **params}
        for part in name.split("."):
            node = node[part]
        return node

    def resolve(text: str, item: dict):
        whole = re.fullmatch(r"\$\{([^}]+)\}", text)
        if whole:
            return lookup(whole[1], item)
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(lookup(m[1], item)), text)

    out = []
    for stage in stages.values():
        matrix = {k: resolve(v, {}) for k, v in (stage.get("matrix") or {}).items()}
        items = [dict(zip(matrix, combo)) for combo in itertools.product(*matrix.values())] if matrix else [{}]
        for item in items:
            for entry in stage.get("metrics", []):
                out.append((resolve(next(iter(entry)) if isinstance(entry, dict) else entry, item), item))
    # top-level `metrics:` folders hold one <variant>-s<seed>.json per configured run
    runs = [{"variant": v, "seed": s} for s in params["pretrain"]["seeds"] for v in params["pretrain"]["variants"]]
    for entry in yaml.safe_load((REPO / "dvc.yaml").read_text()).get("metrics", []):
        folder = resolve(entry, {})
        out += [(f"{folder}/{r['variant']}-s{r['seed']}.json", r) for r in runs]
    return out


def test_dvc_metrics_show_fits_200_columns(pipeline, tmp_path):
    """`dvc metrics show` of the default pipeline's metrics files, with the contents this smoke run
    wrote (a run it did not train reuses the file of one it did: same keys), is at most 200 wide."""
    params_file, params = pipeline
    smoke_root = Path(params.paths.pairs_metrics).parents[1]  # write_params: <tmp>/<the repo's relative path>
    files = default_metrics_files()
    default = yaml.safe_load((REPO / "params.yaml").read_text())["pretrain"]
    runs = len(default["variants"]) * len(default["seeds"])
    assert len(files) == 7 + 2 * runs  # 7 stages + pretrain and evaluate x every configured run
    project = tmp_path / "project"
    project.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, env=env, check=True)
    trained = [(v, s) for v in params.pretrain.variants for s in params.pretrain.seeds]
    for rel, item in files:
        source = rel
        if "variant" in item and (item["variant"], item["seed"]) not in trained:
            source = rel.replace(f"/{item['variant']}-s{item['seed']}.", f"/{trained[0][0]}-s{trained[0][1]}.")
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        data = json.loads((smoke_root / source).read_text())
        assert data and all(v is None or isinstance(v, (int, float)) for v in data.values()), rel  # flat numbers
        shutil.copyfile(smoke_root / source, project / rel)
    (project / "dvc.yaml").write_text(yaml.safe_dump({"metrics": [rel for rel, _ in files]}))
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=project, env=env, capture_output=True, text=True,
                           check=True).stdout
    lines = shown.splitlines()
    assert {line.split()[0] for line in lines[1:]} == {rel for rel, _ in files}  # a row per file
    assert max(map(len, lines)) <= 200, shown


COMMITTED = ("pairs_metrics", "details", "benchmarks_metrics", "teacher_metrics", "embed_metrics", "index_metrics",
             "concepts_metrics", "curate_metrics", "pretrain_metrics", "pretrain_curves", "results", "eval_metrics",
             "reports")


def test_rerun_with_the_same_inputs_changes_no_committed_byte(pipeline):
    """Every stage re-run on unchanged inputs rewrites its committed files (metrics, details, curves,
    results, the report) byte for byte: no wall-clock field in any of them. Runs last: it re-runs
    the module's pipeline in place."""
    from pipelines import benchmarks, concepts, curate, embed, evaluate, index, pairs, pretrain, report, teacher

    params_file, params = pipeline

    def snapshot() -> dict[Path, bytes]:
        out = {}
        for key in COMMITTED:
            root = Path(getattr(params.paths, key))
            for f in [root] if root.is_file() else sorted(root.rglob("*")):
                if f.is_file():
                    out[f] = f.read_bytes()
        return out

    before = snapshot()
    assert any("details" in str(f) for f in before) and any(f.suffix == ".csv" for f in before)
    for stage in (pairs, benchmarks, teacher, embed, index, concepts, curate):
        stage.main(params_file)
    pretrain.main(params_file)
    evaluate.main(params_file)
    report.main(params_file)
    after = snapshot()
    assert sorted(after) == sorted(before)
    assert [str(f) for f in before if after[f] != before[f]] == []
