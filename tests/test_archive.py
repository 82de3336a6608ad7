"""Archive shards: schema, streaming, resume after a kill, byte-identical determinism (docs/method.md §5)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import cocu.concepts.archive as archive
from cocu.concepts.archive import (
    ARCHIVE_SCHEMA,
    CaptionConcepts,
    read_archives,
    read_caption_concepts,
    run_curation,
    shard_paths,
    write_caption_concepts,
)
from cocu.config import CurationConfig
from cocu.concepts.curation import curate_all

NAMES = [f"concept {i}" for i in range(20)]
OFFICIAL = CurationConfig(membership="exact", cluster=True, cluster_ratio=0.5, min_cluster_size=2, kmeans_iters=20,
                          batch_size=1024, shard_size=100_000, top_k=3)  # the method's settings
CFG = replace(OFFICIAL, batch_size=5, shard_size=12)  # 50 rows -> 5 shards, the last one partial


@pytest.fixture
def world(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    n, d = 50, 8
    emb = rng.standard_normal((n, d))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
    concept_emb = rng.standard_normal((len(NAMES), d))
    concept_emb = (concept_emb / np.linalg.norm(concept_emb, axis=1, keepdims=True)).astype(np.float16)
    neigh = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, (n, 3))], axis=1).astype(np.int64)
    neigh[rng.random(neigh.shape) < 0.05] = -1
    keys = [f"{i:06d}" for i in range(n)]
    lists = [[NAMES[c] for c in rng.choice(len(NAMES), rng.integers(0, 4), replace=False)] for _ in range(n)]
    write_caption_concepts(tmp_path / "concepts.parquet", keys, lists)
    np.save(tmp_path / "emb.npy", emb)
    np.save(tmp_path / "neigh.npy", neigh)
    captions = read_caption_concepts(tmp_path / "concepts.parquet", NAMES)
    return {"emb": tmp_path / "emb.npy", "neigh": tmp_path / "neigh.npy", "captions": captions,
            "concept_emb": concept_emb, "lists": lists, "keys": keys}


def run(world: dict, out: Path, cfg: CurationConfig = CFG, **kw):
    return run_curation(world["emb"], world["neigh"], world["captions"], NAMES, world["concept_emb"], out,
                        cfg, progress=False, **kw)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in shard_paths(out)}


def test_caption_concepts_roundtrip(world: dict, tmp_path: Path) -> None:
    captions: CaptionConcepts = world["captions"]
    assert captions.keys.to_pylist() == world["keys"]
    for i, names in enumerate(world["lists"]):
        assert [NAMES[c] for c in captions.ids.row(i)] == names
    write_caption_concepts(tmp_path / "bad.parquet", ["a", "b"], [["concept 1"], ["unknown thing"]])
    with pytest.raises(ValueError, match=r"key b: concept unknown thing"):
        read_caption_concepts(tmp_path / "bad.parquet", NAMES)


def test_shards_match_curation(world: dict, tmp_path: Path) -> None:
    stats = run(world, tmp_path / "out")
    assert stats.num_shards == 5 and stats.shards_written == (0, 1, 2, 3, 4) and stats.shards_reused == 0
    assert stats.missing_neighbours == int((np.load(world["neigh"]) < 0).sum())
    table = read_archives(tmp_path / "out")
    assert table.schema.equals(ARCHIVE_SCHEMA)
    assert table.column("key").to_pylist() == world["keys"]
    emb, neigh = np.load(world["emb"]), np.load(world["neigh"])
    batches = list(curate_all(emb, neigh, world["captions"].ids, world["concept_emb"], CFG))
    want = [[NAMES[c] for c in row if c >= 0] for b in batches for row in b.concepts]
    assert table.column("concepts").to_pylist() == want
    want_scores = np.concatenate([b.to_csr()[2] for b in batches])
    def flat(column: str) -> np.ndarray:
        return table.column(column).combine_chunks().flatten().to_numpy()

    np.testing.assert_array_equal(flat("scores"), want_scores)
    np.testing.assert_array_equal(flat("clusters"), np.concatenate([b.to_csr()[3] for b in batches]))
    assert all(s == sorted(s, reverse=True) for s in table.column("scores").to_pylist())


def test_deterministic_bytes(world: dict, tmp_path: Path) -> None:
    run(world, tmp_path / "a")
    run(world, tmp_path / "b")
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")


def test_resume_after_kill_redoes_only_unfinished_shards(world: dict, tmp_path: Path) -> None:
    run(world, tmp_path / "full")

    def kill_after_shard_1(shard: int) -> None:
        if shard == 1:
            raise KeyboardInterrupt("simulated kill")

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run(world, out, on_shard_done=kill_after_shard_1)
    assert [p.name for p in shard_paths(out)] == ["archive-00000.parquet", "archive-00001.parquet"]
    first = (out / "archive-00000.parquet").stat().st_mtime_ns
    stats = run(world, out)
    assert stats.shards_written == (2, 3, 4) and stats.shards_reused == 2
    assert (out / "archive-00000.parquet").stat().st_mtime_ns == first  # not rewritten
    assert shard_bytes(out) == shard_bytes(tmp_path / "full")


def test_truncated_or_unmarked_shards_are_redone(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(world, out)
    full = shard_bytes(out)
    (out / "archive-00003.parquet").write_bytes(full["archive-00003.parquet"][:100])  # marker kept
    (out / "archive-00004.done").unlink()  # killed between rename and marker
    (out / "archive-00002.parquet.tmp").write_bytes(b"partial")  # killed mid-write
    stats = run(world, out)
    assert stats.shards_written == (3, 4)
    assert shard_bytes(out) == full
    assert not list(out.glob("*.tmp"))


def test_changed_config_starts_over(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(world, out)
    stats = run(world, out, cfg=replace(CFG, membership="substring"))
    assert stats.shards_reused == 0 and stats.shards_written == (0, 1, 2, 3, 4)


def test_changed_code_starts_over(world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    run(world, out)
    assert run(world, out).shards_reused == 5  # same inputs, settings and code: nothing to redo
    monkeypatch.setattr(archive, "source_digest", lambda *parts: "edited curation code")
    stats = run(world, out)
    assert stats.shards_reused == 0 and stats.shards_written == (0, 1, 2, 3, 4)


def test_bad_neighbour_ids_name_the_file(world: dict, tmp_path: Path) -> None:
    neigh = np.load(world["neigh"])
    neigh[7, 1] = 50
    np.save(tmp_path / "bad.npy", neigh)
    with pytest.raises(ValueError, match="bad.npy"):
        run_curation(world["emb"], tmp_path / "bad.npy", world["captions"], NAMES, world["concept_emb"],
                     tmp_path / "out", CFG, progress=False)


def test_parquet_types(world: dict, tmp_path: Path) -> None:
    run(world, tmp_path / "out")
    schema = pq.read_schema(shard_paths(tmp_path / "out")[0])
    assert schema.field("concepts").type.value_type == "string"
    assert schema.field("scores").type.value_type == "float"  # float32
    assert schema.field("clusters").type.value_type == "int32"
