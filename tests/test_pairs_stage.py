"""The `pairs` and `benchmarks` stages end to end at smoke size: outputs, determinism, hidden truth."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from cocu.config import load_params
from cocu.data import manifest, world
from pipelines import benchmarks as benchmarks_stage
from pipelines import inputs as inputs_stage
from pipelines import pairs as pairs_stage

from .conftest import REPO, write_params


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pairs")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
    params = write_params(tmp)
    pairs_stage.main(params)
    yield tmp, load_params(params)
    mp.undo()


def test_pairs_outputs(pairs_run):
    tmp, params = pairs_run
    n = params.world.counts.pairs
    frame = manifest.read_manifest(params.paths.pairs_manifest)
    assert list(frame.columns) == ["key", "shard", "caption"]
    assert len(frame) == n and frame["key"].is_unique
    assert (frame["shard"] == "000000.tar").all()
    teacher = manifest.read_manifest(params.paths.teacher_manifest)
    assert len(teacher) == params.world.counts.teacher
    assert not set(teacher["key"]) & set(frame["key"])  # a separate draw, never the pre-training set
    assert json.loads(Path(params.paths.pairs_metrics).read_text()) == {"pairs": n, "skipped": 0}  # DVC metrics
    details = json.loads((Path(params.paths.details) / "pairs.json").read_text())
    assert details["pairs"]["valid"] == n and details["pairs"]["skipped"]["truncated_image"] == 0
    assert details["teacher"]["valid"] == params.world.counts.teacher
    assert 0.2 < details["pairs"]["mention_rate"] < 0.6
    assert "seconds" not in json.dumps(details)  # the wall clock is in MLflow only
    assert Image.open(params.paths.world_gallery).size[0] > 500


def test_ground_truth_never_reaches_what_training_reads(pairs_run):
    _, params = pairs_run
    truth = manifest.read_ground_truth(params.paths.pairs_manifest)
    frame = manifest.read_manifest(params.paths.pairs_manifest)
    assert not any(c.startswith("gt_") for c in frame.columns)
    with tarfile.open(Path(params.paths.pairs_shards) / "000000.tar") as tar:
        members = tar.getnames()
        exts = {name.split(".", 1)[1] for name in members}
        assert exts == {"jpg", "txt"}
        captions = {m.split(".")[0]: tar.extractfile(m).read().decode() for m in members if m.endswith(".txt")}
    assert captions == dict(zip(frame["key"], frame["caption"]))
    # mentioned ⊆ present, and the hidden columns are not readable through the training view
    for present, mentioned in zip(truth["gt_present"], truth["gt_mentioned"]):
        assert set(mentioned) <= set(present) and len(present) >= 1


def test_pairs_mlflow_run(pairs_run):
    tmp, params = pairs_run
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["stage"] == "pairs" and run.data.tags["profile"] == "synthetic"
    assert run.data.metrics["pairs/valid"] == params.world.counts.pairs
    assert "pairs/skipped/non_utf8_caption" in run.data.metrics
    assert run.data.metrics["pairs/seconds"] > 0 and run.data.metrics["teacher/seconds"] > 0
    assert run.data.params["world.size"] == "smoke"


def test_pairs_are_byte_deterministic(pairs_run, tmp_path, monkeypatch):
    first_tmp, first = pairs_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    again = load_params(write_params(tmp_path))
    pairs_stage.main(tmp_path / "params.yaml")
    for a, b in ((first.paths.pairs_manifest, again.paths.pairs_manifest),
                 (first.paths.teacher_manifest, again.paths.teacher_manifest)):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    shards_a = sorted(Path(first.paths.pairs_shards).glob("*.tar"))
    shards_b = sorted(Path(again.paths.pairs_shards).glob("*.tar"))
    assert [p.read_bytes() for p in shards_a] == [p.read_bytes() for p in shards_b]


def test_real_profile_indexes_existing_shards(pairs_run, tmp_path, monkeypatch):
    """`pairs.source: webdataset` validates and indexes shards it did not write, counting bad ones,
    and writes nothing next to them (the `inputs` stage fingerprints them first)."""
    src_tmp, src = pairs_run
    shards = tmp_path / "external" / "cc3m"
    shards.mkdir(parents=True)
    good = Path(src.paths.pairs_shards) / "000000.tar"
    (shards / "00000.tar").write_bytes(good.read_bytes())
    (shards / "00001.tar").write_bytes(b"")  # an empty shard, as img2dataset leaves after failures
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shards.iterdir())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = write_params(tmp_path, pairs={"source": "webdataset", "shards_glob": f"{shards}/{{00000..00001}}.tar"})
    inputs_stage.main(params)
    pairs_stage.main(params)
    loaded = load_params(params)
    frame = pd.read_parquet(loaded.paths.pairs_manifest)
    assert len(frame) == src.world.counts.pairs
    assert "gt_present" not in frame.columns
    assert frame["shard"].iloc[0] == "00000.tar" and not frame["key"].str.contains("/").any()  # one source
    assert json.loads(Path(loaded.paths.pairs_metrics).read_text()) == {"pairs": src.world.counts.pairs, "skipped": 1}
    details = json.loads((Path(loaded.paths.details) / "pairs.json").read_text())
    assert details["pairs"]["skipped"]["empty_shard"] == 1
    # the same outputs as the synthetic profile: empty in-repo shard folders and a gallery of real pairs
    assert len(pd.read_parquet(loaded.paths.teacher_manifest)) == 0
    assert list(Path(loaded.paths.pairs_shards).iterdir()) == []
    assert Image.open(loaded.paths.world_gallery).size[0] > 300
    assert sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shards.iterdir()) == before


def test_real_profile_refuses_shards_changed_since_the_inputs_stage(tmp_path):
    from cocu.data.shards import RawSample, encode_jpeg, write_shards

    image = encode_jpeg(np.zeros((8, 8, 3), np.uint8), 90)
    (shard,) = write_shards([RawSample("000000000", image, "a cat")], tmp_path / "cc3m", 10)
    params = write_params(tmp_path, pairs={"source": "webdataset", "shards_glob": str(tmp_path / "cc3m" / "*.tar")})
    inputs_stage.main(params)
    shard.with_name("000001.tar").write_bytes(shard.read_bytes())  # a shard added after the fingerprint
    with pytest.raises(RuntimeError, match="changed since the `inputs` stage"):
        pairs_stage.main(params)


def test_missing_shards_are_a_clear_error(tmp_path):
    params = write_params(tmp_path, pairs={"source": "webdataset", "shards_glob": str(tmp_path / "none" / "*.tar")})
    with pytest.raises(FileNotFoundError, match=r"pairs.shards_glob: .*none/\*.tar' matches no shard"):
        inputs_stage.main(params)


def test_benchmarks_stage(tmp_path):
    params_file = write_params(tmp_path)
    benchmarks_stage.main(params_file)
    params = load_params(params_file)
    root = Path(params.paths.benchmarks_root)
    for name in params.world.benchmarks:
        spec = world.BENCHMARKS[name]
        names = (root / name / "class_names.txt").read_text().split("\n")[:-1]
        assert names == list(spec.class_names)
        labels = sorted((root / name / "labels").glob("*.png"))
        assert len(labels) == params.world.counts.benchmark
        label = np.asarray(Image.open(labels[0]))
        assert label.dtype == np.uint8 and label.shape == (64, 64)
        valid = label[label != 255]
        assert valid.max() < len(names)
    metrics = json.loads(Path(params.paths.benchmarks_metrics).read_text())
    assert metrics == {"images": params.world.counts.benchmark * len(params.world.benchmarks)}
    details = json.loads((Path(params.paths.details) / "benchmarks.json").read_text())
    assert details["synth_stuff/ignored_fraction"] > 0  # thing pixels are ignored in the stuff benchmark


def test_vocabulary_file_matches_the_world():
    lines = (REPO / "configs" / "vocabulary" / "synthetic.txt").read_text().split("\n")[:-1]
    assert lines == world.vocabulary()


def test_rerun_rewrites_committed_files_byte_identically_and_is_not_dirty(pairs_run, tmp_path, monkeypatch):
    """A re-run with identical inputs changes no committed byte (no timings in committed files), so
    its MLflow run is tagged with the clean commit, in a git repo laid out like this one."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=cocu", "-c", "user.email=cocu@example.invalid", *args],
                              cwd=repo, capture_output=True, text=True, check=True).stdout

    repo = tmp_path / "repo"
    repo.mkdir()
    uri = f"sqlite:///{pairs_run[0] / 'mlflow.db'}"  # the module's store (a new one costs seconds)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(repo)
    params = write_params(repo, tracking={"experiment": "rerun"})  # its own experiment in the module's store
    (repo / ".gitignore").write_text("/data/\n/mlruns/\n")  # DVC-cached outputs and MLflow: not in git
    git("init", "-q")
    pairs_stage.main(params)
    git("add", "-A")
    git("commit", "-qm", "pairs")
    head = git("rev-parse", "HEAD").strip()
    committed = git("ls-files").split()
    assert {"metrics/pairs.json", "metrics/details/pairs.json", "reports/figures/world_gallery.png"} <= set(committed)
    before = {name: (repo / name).read_bytes() for name in committed}
    pairs_stage.main(params)
    assert {name: (repo / name).read_bytes() for name in committed} == before
    assert git("status", "--porcelain", "--untracked-files=no") == ""
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(load_params(params).tracking.experiment).experiment_id],
                              order_by=["attributes.start_time DESC"])
    assert runs[0].data.tags["git_commit"] == head  # not `<sha>-dirty`
    assert runs[0].data.metrics["pairs/seconds"] > 0  # the wall clock is still recorded, in MLflow


def test_ingest_edge_cases_are_counted_in_the_stage_metrics(pairs_run, tmp_path, monkeypatch):
    """Real profile, one shard of 23 samples: an adjacent repeat of a key, a `../escape` key and a
    caption with a UTF-8 byte-order mark. 21 rows; the repeat and the bad key skipped and counted."""
    import io

    from cocu.data.shards import encode_jpeg

    image = encode_jpeg(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8), 90)
    samples = [(f"k{i:03d}", f"caption {i}".encode()) for i in range(20)]
    samples[3:3] = [("k002", b"the second k002, right after the first")]
    samples.append(("../escape", b"a key that names a path"))
    samples.append(("bom", "\ufeffa red ball".encode("utf-8")))
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tar:
        for key, caption in samples:
            for ext, data in (("jpg", image), ("txt", caption)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{pairs_run[0] / 'mlflow.db'}")
    params = load_params(write_params(tmp_path, pairs={"source": "webdataset", "shards_glob": f"{shards}/*.tar"},
                                      paths={"pairs_shards": str(tmp_path / "own_shards")},
                                      tracking={"experiment": "edge-cases"}))
    inputs_stage.main(tmp_path / "params.yaml")  # the fingerprint the pairs stage checks the shards against
    pairs_stage.main(tmp_path / "params.yaml")
    assert json.loads(Path(params.paths.pairs_metrics).read_text()) == {"pairs": 21, "skipped": 2}
    details = json.loads((Path(params.paths.details) / "pairs.json").read_text())["pairs"]
    assert (details["written"], details["valid"]) == (23, 21)
    assert {k: v for k, v in details["skipped"].items() if v} == {"duplicate_key": 1, "bad_key": 1}
    frame = manifest.read_manifest(params.paths.pairs_manifest)
    assert frame.loc[frame["key"] == "k002", "caption"].tolist() == ["caption 2"]  # the first of the two
    assert frame.loc[frame["key"] == "bom", "caption"].tolist() == ["a red ball"]
    assert "../escape" not in set(frame["key"]) and not (tmp_path / "escape.jpg").exists()
