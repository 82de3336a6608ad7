"""Scale-out without a cluster: every N-sized stage split into 1, 2, 4 ... tasks (in-process, and
through submitit's debug executor) writes the same outputs as one task; resumable units are kept
across failures and redone only when unfinished. The same splits on a real SLURM are in
tests/test_slurm.py."""

from __future__ import annotations

import dataclasses
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cocu.config import ConfigError, LauncherConfig, StageLaunch, StageLaunches, load_params
from cocu.data import manifest
from cocu.data.pairs import partial_dir, validate_shards
from cocu.data.shards import SkipCounter, encode_jpeg
from cocu.launch.executor import deal, sbatch_script, stage_launcher
from tests.conftest import write_tar


REPO_PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")  # configs built from it, not
REPO_LAUNCHER = REPO_PARAMS.launcher  # from dataclass defaults: every key of params.yaml is required
PAIRS = dataclasses.replace(REPO_PARAMS.pairs, source="webdataset")


def index_cfg(**values):
    return dataclasses.replace(REPO_PARAMS.index, **values)


def curation_cfg(**values):
    return dataclasses.replace(REPO_PARAMS.curation, **values)


def launcher(cluster: str = "local", **tasks: int) -> LauncherConfig:
    """The repo's launcher on `cluster`, its stages asking for `tasks[stage]` array tasks (default 1)."""
    stages = {s: dataclasses.replace(getattr(REPO_LAUNCHER.stages, s), tasks=tasks.get(s, 1))
              for s in ("pairs", "embed", "index", "curate", "evaluate")}
    return dataclasses.replace(REPO_LAUNCHER, cluster=cluster, stages=StageLaunches(**stages))


# ----------------------------------------------------------------------------------------------
# dealing units to tasks, per-stage resources


def test_deal_is_contiguous_balanced_and_never_empty() -> None:
    assert deal(5, 2) == [range(0, 2), range(2, 5)]
    assert deal(3, 4) == [range(0, 1), range(1, 2), range(2, 3)]
    assert deal(0, 4) == []
    for n in range(0, 30):
        for t in range(1, 8):
            runs = deal(n, t)
            assert [i for r in runs for i in r] == list(range(n))
            assert all(len(r) > 0 for r in runs) and len(runs) == min(n, t)
            assert max(map(len, runs), default=0) - min(map(len, runs), default=0) <= 1
    with pytest.raises(ValueError):
        deal(3, 0)


def test_stage_launcher_takes_the_stage_resources() -> None:
    stages = dataclasses.replace(
        launcher().stages,
        pairs=StageLaunch(tasks=64, gpus=0, cpus_per_task=8, mem_gb=16, timeout_min=120, partition="cpu"),
        embed=StageLaunch(tasks=16, gpus=1, cpus_per_task=10, mem_gb=64, timeout_min=240, partition=None))
    base = dataclasses.replace(launcher("slurm"), partition="gpu", nodes=4, gpus_per_node=4, cpus_per_task=10,
                               mem_gb=256, timeout_min=2880, stages=stages)
    pairs = stage_launcher(base, "pairs")
    assert (pairs.nodes, pairs.gpus_per_node, pairs.cpus_per_task, pairs.mem_gb, pairs.timeout_min, pairs.partition) \
        == (1, 0, 8, 16, 120, "cpu")
    embed = stage_launcher(base, "embed")
    assert (embed.gpus_per_node, embed.partition) == (1, "gpu")  # partition null: launcher.partition
    script = sbatch_script(embed, "embed", shard=True, array=16)
    for line in ("#SBATCH --array=0-15%16", "#SBATCH --gpus-per-node=1", "#SBATCH --nodes=1",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=10", "#SBATCH --mem=64GB",
                 "#SBATCH --partition=gpu", "#SBATCH --time=240"):
        assert line in script.splitlines(), f"{line!r} missing from\n{script}"
    script = sbatch_script(dataclasses.replace(pairs, array_parallelism=8), "pairs", shard=True, array=64)
    assert "#SBATCH --array=0-63%8" in script.splitlines() and "gpus-per-node" not in script


@pytest.mark.parametrize("key, value", [("tasks", 0), ("gpus", 2), ("mem_gb", 0)])
def test_bad_stage_resources_name_the_key(tmp_path: Path, key: str, value: int) -> None:
    from cocu.config import to_dict
    from tests.conftest import write_params

    stages = to_dict(REPO_LAUNCHER.stages)
    stages["curate"][key] = value
    with pytest.raises(ConfigError, match=rf"launcher\.stages\.curate\.{key}"):
        load_params(write_params(tmp_path, launcher={**to_dict(REPO_LAUNCHER), "stages": stages}))


# ----------------------------------------------------------------------------------------------
# pairs: validation as an array


def _sample(key: str, seed: int, caption: str | None = None) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    image = encode_jpeg(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), 90)
    return [(f"{key}.jpg", image), (f"{key}.txt", (caption or f"a photo of thing {seed}").encode())]


def messy_shards(folder: Path) -> list[Path]:
    """Seven shards with every kind of bad sample, and keys repeated within and across shards."""
    folder.mkdir(parents=True, exist_ok=True)
    ok = lambda lo, hi: [m for i in range(lo, hi) for m in _sample(f"k{i:04d}", i)]  # noqa: E731
    bad_jpeg = _sample("k0100", 100)[0][1][:50]
    shards = [
        write_tar(folder / "000000.tar", ok(0, 5)),
        write_tar(folder / "000001.tar", ok(5, 7) + [("k0100.jpg", bad_jpeg), ("k0100.txt", b"cut")]
             + [("k0101.jpg", _sample("k0101", 101)[0][1])] + ok(7, 9)),  # truncated image, missing caption
        folder / "000002.tar",  # empty
        write_tar(folder / "000003.tar", _sample("k0002", 333) + ok(9, 12)),  # a key of shard 0 again
        folder / "000004.tar",  # corrupt: the first half of a tar
        write_tar(folder / "000005.tar", ok(12, 15) + _sample("k0013", 444) + ok(15, 16)),  # repeated in the shard
        write_tar(folder / "000006.tar", [("k0102.txt", b"no image")] + ok(16, 18) + _sample("k0007", 555)),
    ]
    shards[2].write_bytes(b"")
    full = write_tar(folder / "tmp.tar", ok(30, 34))
    with tarfile.open(full) as tar:
        cut = tar.getmembers()[4].offset_data + 10  # inside the image of the third sample
    shards[4].write_bytes(full.read_bytes()[:cut])
    full.unlink()
    return shards


@pytest.mark.parametrize("tasks", [1, 2, 3, 4, 7, 10])
def test_pairs_validation_array_equals_one_serial_pass(tmp_path: Path, tasks: int) -> None:
    shards = messy_shards(tmp_path / "shards")
    serial_counter = SkipCounter()
    serial = manifest.index_shards(shards, serial_counter)
    counter = SkipCounter()
    frame = validate_shards(shards, PAIRS, counter, launcher(pairs=tasks), "pairs",
                            tmp_path / "manifest.parquet")
    pd.testing.assert_frame_equal(frame, serial)
    assert counter.as_dict() == serial_counter.as_dict()
    assert counter.as_dict()["duplicate_key"] == 3 and counter.total_samples == 6
    assert counter.as_dict()["empty_shard"] == counter.as_dict()["corrupt_shard"] == 1
    assert not partial_dir(tmp_path / "manifest.parquet").exists()  # parts removed once joined
    manifest.write_manifest(frame, tmp_path / "a.parquet")
    manifest.write_manifest(serial, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_pairs_validation_through_submitit(tmp_path: Path) -> None:
    """The debug executor pickles each element and its result, as a SLURM array does."""
    shards = messy_shards(tmp_path / "shards")
    serial_counter = SkipCounter()
    serial = manifest.index_shards(shards, serial_counter)
    counter = SkipCounter()
    cfg = dataclasses.replace(launcher("debug", pairs=3), folder=str(tmp_path / "jobs"))
    frame = validate_shards(shards, PAIRS, counter, cfg, "pairs", tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(frame, serial)
    assert counter.as_dict() == serial_counter.as_dict()


# ----------------------------------------------------------------------------------------------
# embed: units, tasks, resume


@dataclasses.dataclass(frozen=True)
class Ref:
    """A shard reference with a source-qualified id, as the `pairs` stage may name shards."""

    path: Path
    id: str


def test_plan_units_one_file_each_empty_files_join_the_next() -> None:
    from cocu.clip.embed import ManifestMismatch, plan_units

    column = ["a.tar"] * 3 + ["c.tar"] * 2 + ["e.tar"]
    units = plan_units(column, ["d/a.tar", "d/b.tar", "d/c.tar", "d/e.tar", "d/f.tar"])
    assert [(u.shards, u.lo, u.hi) for u in units] == [
        (("d/a.tar",), 0, 3), (("d/b.tar", "d/c.tar"), 3, 5), (("d/e.tar", "d/f.tar"), 5, 6)]
    # two sources whose files share a name, one after the other: rows cannot be told apart, one unit
    units = plan_units(["00000.tar"] * 4, ["cc3m/00000.tar", "cc12m/00000.tar"])
    assert [(u.shards, u.lo, u.hi) for u in units] == [(("cc3m/00000.tar", "cc12m/00000.tar"), 0, 4)]
    assert [(u.shards, u.lo, u.hi) for u in plan_units([], ["x.tar"])] == [(("x.tar",), 0, 0)]
    # source-qualified shard references (`.id` as the manifest names them, `.path`): told apart by id
    refs = [Ref(Path(f"/data/{src}/00000.tar"), f"{src}/00000.tar") for src in ("cc3m", "cc12m")]
    units = plan_units(["cc3m/00000.tar"] * 2 + ["cc12m/00000.tar"] * 3, refs)
    assert [(u.shards, u.lo, u.hi) for u in units] == [((refs[0],), 0, 2), ((refs[1],), 2, 5)]
    with pytest.raises(ManifestMismatch, match="rows 3-4 come from shard 'b.tar'"):
        plan_units(["a.tar"] * 3 + ["b.tar"] * 2, ["a.tar", "c.tar"])


@pytest.fixture(scope="module")
def embed_corpus_inputs(tmp_path_factory: pytest.TempPathFactory):
    """A messy corpus (bad samples, repeated keys, empty and corrupt shards), its manifest and a
    tiny CLIP weights file."""
    from cocu.clip.jobs import EmbedInputs
    from cocu.clip.model import build_tiny_clip, save_weights
    from tests.test_clip_model import TINY

    import torch

    tmp = tmp_path_factory.mktemp("embed")
    shards = messy_shards(tmp / "shards")
    frame = manifest.index_shards(shards, SkipCounter())
    manifest.write_manifest(frame, tmp / "manifest.parquet")
    torch.manual_seed(0)
    save_weights(build_tiny_clip(TINY), tmp / "clip.pt")

    def inputs(out: Path, batch_size: int = 3, workers: int = 0) -> EmbedInputs:
        return EmbedInputs(manifest=tmp / "manifest.parquet", shards=tuple(shards), weights=tmp / "clip.pt",
                           clip=TINY, embed=dataclasses.replace(REPO_PARAMS.embed, batch_size=batch_size, workers=workers), image_keys=("jpg",),
                           caption_key="txt",
                           concepts=("red", "thing"), image_out=out / "images.npy", text_out=out / "captions.npy",
                           concept_out=out / "concepts.npy", names_out=out / "concepts.txt")

    return tmp, frame, inputs


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_embed_in_1_2_4_tasks_writes_the_same_bytes(embed_corpus_inputs, tmp_path: Path) -> None:
    import torch

    from cocu.clip.embed import embed_pairs
    from cocu.clip.jobs import embed_corpus
    from cocu.clip.model import load_clip
    from cocu.data.shards import iter_samples

    tmp, frame, inputs = embed_corpus_inputs
    stats = {}
    for tasks in (1, 2, 4):
        stats[tasks] = embed_corpus(inputs(tmp_path / f"t{tasks}"), launcher(embed=tasks))
        assert not (tmp_path / f"t{tasks}" / "images.partial").exists()  # removed once the arrays are written
    stats["w"] = embed_corpus(inputs(tmp_path / "w", workers=2), launcher(embed=2))  # 2 decoding workers a task
    assert _outputs(tmp_path / "t1") == _outputs(tmp_path / "t2") == _outputs(tmp_path / "t4") == _outputs(tmp_path / "w")
    assert [stats[t]["tasks"] for t in (1, 2, 4)] == [1, 2, 4] and stats[1]["units"] == 6
    for key in ("rows", "duplicates_skipped", *(k for k in stats[1] if k.startswith("skipped/"))):
        assert stats[1][key] == stats[2][key] == stats[4][key] == stats["w"][key], key
    assert stats[1]["rows"] == len(frame) and stats[1]["duplicates_skipped"] == 2  # repeats across shards
    assert stats[1]["skipped/duplicate_key"] == 1  # a repeat within its shard: skipped as it is read
    assert stats[1]["skipped/empty_shard"] == 1 and stats[1]["skipped/corrupt_shard"] == 1
    # the rows are those of one pass over all shards
    model, _, pre, tok, _ = load_clip(inputs(tmp_path).clip, tmp / "clip.pt")
    embed_pairs(model, pre, tok, iter_samples(list(inputs(tmp_path).shards)), list(frame["key"]),
                tmp_path / "one.npy", tmp_path / "one_t.npy", 3, torch.device("cpu"))
    np.testing.assert_array_equal(np.load(tmp_path / "t2" / "images.npy"), np.load(tmp_path / "one.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "t2" / "captions.npy"), np.load(tmp_path / "one_t.npy"))


def _unit_starts(frame: pd.DataFrame, shards) -> list[int]:
    from cocu.clip.embed import plan_units

    return [u.lo for u in plan_units(frame["shard"], shards)]


@pytest.mark.slow
def test_embed_failure_keeps_finished_units_and_a_rerun_redoes_only_the_rest(
        embed_corpus_inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cocu.clip.embed as embed_lib
    from cocu.clip.jobs import embed_corpus

    tmp, frame, inputs = embed_corpus_inputs
    starts = _unit_starts(frame, inputs(tmp_path).shards)
    assert len(starts) == 6
    reference = tmp_path / "ref"
    embed_corpus(inputs(reference), launcher(embed=2))
    real = embed_lib._prepared_batches
    calls: list[int] = []

    def prepared(samples, keys, batch_size, preprocess, tokenizer, dropped, first_row=0, row_of=None,
                 fail_at: int | None = None):
        calls.append(first_row)
        if first_row == fail_at:
            raise RuntimeError("node lost")
        return real(samples, keys, batch_size, preprocess, tokenizer, dropped, first_row, row_of)

    monkeypatch.setattr(embed_lib, "_prepared_batches", lambda *a, **k: prepared(*a, fail_at=starts[2], **k))
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="node lost"):
        embed_corpus(inputs(out), launcher(embed=1))
    work = out / "images.partial"
    assert sorted(p.name for p in work.glob("unit-*.json")) == ["unit-00000.json", "unit-00001.json"]  # kept
    assert not (out / "images.npy").exists()
    calls.clear()
    monkeypatch.setattr(embed_lib, "_prepared_batches", prepared)
    stats = embed_corpus(inputs(out), launcher(embed=2))
    assert stats["units_reused"] == 2 and sorted(calls) == starts[2:]  # only the unfinished units
    assert _outputs(out) == _outputs(reference)
    assert stats["skipped/truncated_image"] == 1 and stats["duplicates_skipped"] == 2  # resumed units counted


@pytest.mark.slow
def test_embed_partial_work_of_other_inputs_is_superseded(embed_corpus_inputs, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import cocu.clip.embed as embed_lib
    from cocu.clip.embed import EmbedUnit, EmbedWork
    from cocu.clip.jobs import embed_corpus

    tmp, frame, inputs = embed_corpus_inputs
    third = _unit_starts(frame, inputs(tmp_path).shards)[2]
    out = tmp_path / "run"
    real = embed_lib._prepared_batches

    def failing(samples, keys, batch_size, preprocess, tokenizer, dropped, first_row=0, row_of=None):
        if first_row >= third:
            raise RuntimeError("pre-empted")
        return real(samples, keys, batch_size, preprocess, tokenizer, dropped, first_row, row_of)

    monkeypatch.setattr(embed_lib, "_prepared_batches", failing)
    with pytest.raises(RuntimeError):
        embed_corpus(inputs(out, batch_size=3), launcher())
    assert len(list((out / "images.partial").glob("unit-*.json"))) == 2
    monkeypatch.setattr(embed_lib, "_prepared_batches", real)
    stats = embed_corpus(inputs(out, batch_size=4), launcher())  # other settings: a different fingerprint
    assert stats["units_reused"] == 0
    # a unit file cut short (a killed copy on a shared filesystem) is not finished
    work = EmbedWork(tmp_path / "w")
    unit = EmbedUnit(0, ("a.tar",), 0, 2)
    work.prepare("f")
    work.commit(unit, np.zeros((2, 4), np.float16), np.ones((2, 4), np.float16), {"seconds": 0})
    assert work.marker(unit) is not None
    path = work.folder / "unit-00000.captions.npy"
    path.write_bytes(path.read_bytes()[:-2])
    assert work.marker(unit) is None
    assert work.prepare("f") == 0 and work.prepare("g") == 3  # same fingerprint kept; another: removed


def test_embed_markers_record_every_unit(embed_corpus_inputs, tmp_path: Path) -> None:
    """The markers carry the per-unit counts the final metrics add up (read before the folder goes)."""
    from cocu.clip.embed import EmbedWork, plan_units
    from cocu.clip.jobs import embed_units_job

    tmp, frame, inputs = embed_corpus_inputs
    ins = inputs(tmp_path / "o")
    units = plan_units(frame["shard"], ins.shards)
    work = EmbedWork.beside(ins.image_out)
    work.prepare("x")
    assert embed_units_job(ins, work.folder, units[1:3]) == [1, 2]
    two_workers = dataclasses.replace(ins, embed=dataclasses.replace(ins.embed, workers=2))  # a DataLoader
    assert embed_units_job(two_workers, work.folder, units[1:5]) == [3, 4]  # 1 and 2 are finished
    marker = json.loads((work.folder / "unit-00001.json").read_text())
    assert marker["skipped"]["truncated_image"] == 1 and marker["skipped"]["missing_caption"] == 1
    assert marker["lo"] == 5 and marker["hi"] == 9 and marker["shards"] == ["000001.tar"]
    marker = json.loads((work.folder / "unit-00002.json").read_text())  # the empty shard joins the next
    assert marker["shards"] == ["000002.tar", "000003.tar"] and marker["skipped"]["empty_shard"] == 1
    assert marker["duplicates"] == 1
    marker = json.loads((work.folder / "unit-00004.json").read_text())  # prepared in a data worker
    assert marker["shards"] == ["000005.tar"] and marker["hi"] - marker["lo"] == 4
    assert marker["skipped"]["duplicate_key"] == 1 and marker["duplicates"] == 0  # a repeat within its shard


# ----------------------------------------------------------------------------------------------
# index: train once, queries as an array


def _clustered(n: int, d: int = 16, centres: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    x = c[rng.integers(0, centres, n)] + 0.4 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


@pytest.mark.parametrize("tasks", [2, 3, 4, 7])
def test_blocked_self_search_split_over_tasks_equals_the_whole(tasks: int) -> None:
    from cocu.concepts.retrieval import exact_knn, exact_self_knn, self_knn_blocks, self_knn_order

    emb = _clustered(600)
    whole_ids, whole_sims = exact_self_knn(emb, 8, block_size=37, seed=0)
    order = self_knn_order(emb, 8, 37, seed=0)
    ids, sims = np.full_like(whole_ids, -7), np.full_like(whole_sims, np.nan)
    for run in deal(-(-600 // 37), tasks):
        rows, i, s = self_knn_blocks(emb, 8, 37, order, run)
        ids[rows], sims[rows] = i, s
    np.testing.assert_array_equal(ids, whole_ids)
    np.testing.assert_array_equal(sims, whole_sims)  # bit for bit: the same products
    want, _ = exact_knn(emb, emb, 8)
    np.testing.assert_array_equal(ids, want)


@pytest.fixture(scope="module")
def index_embeddings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("index") / "images.npy"
    np.save(path, _clustered(700, d=16))
    return path


def _run_index(emb: Path, out: Path, cfg, tasks: int, cluster: str = "local") -> dict:
    from cocu.concepts.retrieval import run_index

    lc = dataclasses.replace(launcher(cluster, index=tasks), folder=str(out / "jobs"))
    return run_index(emb, cfg, lc, out / "trained", out / "neighbours.npy", out / "similarities.npy")


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_index_in_1_2_4_tasks_writes_the_same_arrays(index_embeddings: Path, tmp_path: Path, kind: str) -> None:
    from cocu.concepts.retrieval import search_neighbours

    cfg = index_cfg(type=kind, num_neighbours=6, nlist=16, nprobe=2, train_size=700, block_size=64, batch_size=50,
                      recall_sample=100, pq_m=4, hnsw_m=8, ef_search=16)
    metrics = {t: _run_index(index_embeddings, tmp_path / f"t{t}", cfg, t) for t in (1, 2, 4)}
    files = {t: {n: (tmp_path / f"t{t}" / n).read_bytes() for n in ("neighbours.npy", "similarities.npy")}
             for t in (1, 2, 4)}
    assert files[1] == files[2] == files[4]
    assert [metrics[t]["tasks"] for t in (1, 2, 4)] == [1, 2, 4]
    assert {k: v for k, v in metrics[1].items() if k != "tasks"} == {k: v for k, v in metrics[4].items() if k != "tasks"}
    trained = sorted(p.name for p in (tmp_path / "t1" / "trained").iterdir())
    assert trained == (["meta.json", "order.npy"] if kind == "flat" else ["index.faiss", "meta.json"])
    assert not (tmp_path / "t1" / "neighbours.partial").exists()
    # the same neighbours as one process computing everything
    whole = search_neighbours(np.load(index_embeddings), cfg)
    np.testing.assert_array_equal(np.load(tmp_path / "t2" / "neighbours.npy"), whole.ids)
    np.testing.assert_array_equal(np.load(tmp_path / "t2" / "similarities.npy"), whole.sims)
    assert metrics[1]["recall_at_l"] == whole.recall


def test_query_tasks_read_the_trained_index(index_embeddings: Path, tmp_path: Path) -> None:
    """The file `index` writes is the one the query tasks search: training happens once."""
    import faiss

    from cocu.concepts.retrieval import query_positions, train_index

    emb = np.load(index_embeddings)
    cfg = index_cfg(type="ivf", num_neighbours=4, nlist=8, nprobe=8, train_size=700, batch_size=64, recall_sample=0)
    train_index(emb, cfg, tmp_path)
    _, ids, _ = query_positions(emb, cfg, tmp_path, 0, 64)
    index = faiss.read_index(str(tmp_path / "index.faiss"))
    assert index.ntotal == 700 and index.is_trained
    index.reset()  # the same trained quantiser, no vectors: a query task finds nothing
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    _, empty, _ = query_positions(emb, cfg, tmp_path, 0, 64)
    assert (ids[:, 0] == np.arange(64)).all() and (empty == -1).all()


def test_ivfpq_exact_re_rank_raises_recall(index_embeddings: Path) -> None:
    from cocu.concepts.retrieval import exact_knn, search_neighbours

    emb = np.load(index_embeddings)
    base = index_cfg(type="ivfpq", num_neighbours=8, nlist=8, nprobe=8, train_size=700, pq_m=2, recall_sample=700)
    codes = search_neighbours(emb, dataclasses.replace(base, refine=0))
    refined = search_neighbours(emb, dataclasses.replace(base, refine=8))
    assert refined.recall > codes.recall + 0.1
    exact_sims = np.einsum("nd,nkd->nk", emb.astype(np.float32), emb[refined.ids].astype(np.float32))
    np.testing.assert_allclose(refined.sims, exact_sims, rtol=1e-5)  # re-ranked similarities are exact
    want, _ = exact_knn(emb, emb, 8)
    assert refined.recall == pytest.approx(float(np.mean([len(set(a) & set(b)) / 8 for a, b in
                                                           zip(refined.ids, want)])))


# ----------------------------------------------------------------------------------------------
# curate: an array over archive shards


@pytest.fixture(scope="module")
def curation_files(tmp_path_factory: pytest.TempPathFactory):
    from cocu.concepts.archive import CurationFiles, write_caption_concepts

    tmp = tmp_path_factory.mktemp("curate")
    rng = np.random.default_rng(0)
    n, d, names = 50, 8, [f"concept {i}" for i in range(20)]
    emb = rng.standard_normal((n, d))
    concept_emb = rng.standard_normal((len(names), d))
    neigh = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, (n, 3))], axis=1).astype(np.int64)
    neigh[rng.random(neigh.shape) < 0.05] = -1
    np.save(tmp / "emb.npy", (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16))
    np.save(tmp / "concepts.npy", (concept_emb / np.linalg.norm(concept_emb, axis=1, keepdims=True)).astype(np.float16))
    np.save(tmp / "neigh.npy", neigh)
    (tmp / "names.txt").write_text("".join(f"{c}\n" for c in names))
    lists = [[names[c] for c in rng.choice(len(names), rng.integers(0, 4), replace=False)] for _ in range(n)]
    write_caption_concepts(tmp / "captions.parquet", [f"{i:06d}" for i in range(n)], lists)
    return lambda out: CurationFiles(tmp / "emb.npy", tmp / "neigh.npy", tmp / "captions.parquet", tmp / "names.txt",
                                     tmp / "concepts.npy", out)


def _archives(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("archive-*"))}


def test_curate_in_1_2_4_tasks_writes_the_archives_of_one_process(curation_files, tmp_path: Path) -> None:
    from cocu.concepts.archive import run_curation, run_curation_jobs

    cfg = curation_cfg(batch_size=5, shard_size=12)  # 50 rows: 5 shards, the last partial
    files = curation_files(tmp_path / "one")
    captions, names, concept_emb = files.load()
    one = run_curation(files.image_embeddings, files.neighbours, captions, names, concept_emb, files.archives, cfg,
                       progress=False)
    for tasks, cluster in ((1, "local"), (2, "local"), (4, "local"), (3, "debug")):
        out = tmp_path / f"{cluster}{tasks}"
        lc = dataclasses.replace(launcher(cluster, curate=tasks), folder=str(tmp_path / "jobs"))
        stats = run_curation_jobs(curation_files(out), cfg, lc)
        assert _archives(out) == _archives(files.archives), (tasks, cluster)
        assert stats.shards_written == (0, 1, 2, 3, 4) and stats.missing_neighbours == one.missing_neighbours


def test_curate_task_failure_keeps_finished_shards(curation_files, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import cocu.concepts.archive as archive
    from cocu.concepts.archive import run_curation_jobs

    cfg = curation_cfg(batch_size=5, shard_size=12)
    reference = tmp_path / "ref"
    run_curation_jobs(curation_files(reference), cfg, launcher(curate=2))
    real = archive._commit

    def commit(out: Path, shard: int, table) -> None:
        if shard == 3:
            raise RuntimeError("task pre-empted")
        real(out, shard, table)

    monkeypatch.setattr(archive, "_commit", commit)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="pre-empted"):
        run_curation_jobs(curation_files(out), cfg, launcher(curate=2))  # task 0: shards 0-1, task 1: 2-4
    assert sorted(p.name for p in out.glob("*.done")) == ["archive-00000.done", "archive-00001.done",
                                                          "archive-00002.done"]
    monkeypatch.setattr(archive, "_commit", real)
    stats = run_curation_jobs(curation_files(out), cfg, launcher(curate=4))
    assert stats.shards_reused == 3 and stats.shards_written == (3, 4)
    assert _archives(out) == _archives(reference)


# ----------------------------------------------------------------------------------------------
# evaluate: benchmarks through the launcher


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory: pytest.TempPathFactory):
    """A tiny untrained GroupViT checkpoint, three synthetic benchmarks and their cards."""
    import torch

    from cocu.config import load_params, to_dict
    from cocu.data.benchmarks import write_synthetic_benchmark
    from cocu.config import tiny_model_config
    from cocu.models.factory import build_model
    from cocu.training.checkpoint import save_checkpoint
    from tests.conftest import write_params

    tmp = tmp_path_factory.mktemp("evaluate")
    params = load_params(write_params(tmp))
    names = ["synth_things", "synth_stuff", "synth_all"]
    for name in names:
        write_synthetic_benchmark(params.world, name, 3, tmp / "bench")
    torch.manual_seed(0)
    cfg = tiny_model_config()
    save_checkpoint({"model": build_model(cfg).state_dict(), "model_config": to_dict(cfg)}, tmp / "m.pt")
    cards = {b: params.eval.benchmarks[b] for b in names}

    def run(out: Path, lc: LauncherConfig) -> dict:
        from cocu.eval.jobs import evaluate_benchmarks

        return evaluate_benchmarks(tmp / "m.pt", cards, tmp / "bench", params.data.mean, params.data.std, out, 2, 1,
                                   lc, "evaluate-t")

    return names, run


def test_evaluate_split_over_tasks_gives_the_same_results(eval_inputs, tmp_path: Path) -> None:
    names, run = eval_inputs
    results, overlays = {}, {}
    for tasks, cluster in ((1, "local"), (3, "local"), (2, "debug")):
        out = tmp_path / f"{cluster}{tasks}"
        results[tasks] = run(out, dataclasses.replace(launcher(cluster, evaluate=tasks), folder=str(tmp_path / "jobs")))
        overlays[tasks] = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}
    as_json = {t: json.dumps(r, sort_keys=True) for t, r in results.items()}  # what the stage writes (NaN = NaN)
    assert list(results[1]) == names and as_json[1] == as_json[3] == as_json[2]
    assert len(overlays[1]) == 6 and overlays[1] == overlays[3] == overlays[2]
