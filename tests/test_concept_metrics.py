"""Curation metrics on hand-counted examples (docs/method.md §11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cocu.concepts.archive import read_caption_concepts, run_curation, write_caption_concepts
from cocu.config import CurationConfig, VocabularyConfig
from cocu.concepts.curation import CSR
from cocu.concepts.metrics import (
    curation_metrics,
    ground_truth_counts,
    leakage_audit,
    names_to_csr,
    rates_from_counts,
    size_stats,
)
from cocu.concepts.vocabulary import Vocabulary


def test_size_stats() -> None:
    s = size_stats(np.array([0, 2, 4, 6, 8, 0, 10, 12, 14, 16]))  # sum 72; sorted 0 0 2 4 6 8 10 12 14 16
    assert s["mean"] == pytest.approx(7.2) and s["max"] == 16 and s["share_empty"] == 0.2
    # linear interpolation: p10 at rank 0.9 (between 0 and 0) -> 0; p90 at rank 8.1 -> 14 + 0.1 * 2
    assert s["median"] == 7.0 and s["p10"] == 0.0 and s["p90"] == pytest.approx(14.2)


# two pairs; ids: 0 dog, 1 grass, 2 ball, 3 tree, 4 sky
ARCHIVE = CSR.from_lists([[0, 3, 1, 4, 2], [2]])  # ranked
CAPTIONS = CSR.from_lists([[0], [2]])
PRESENT = CSR.from_lists([[0, 1, 2], [2, 3]])
MENTIONED = CSR.from_lists([[0, 1], [2]])


def test_ground_truth_counts_by_hand() -> None:
    c = ground_truth_counts(ARCHIVE, CAPTIONS, PRESENT, MENTIONED, top_k=2)
    # pair 0: new = [3, 1, 4, 2] (ranked); missed = {1, 2}; top-2 new = [3, 1] -> 1 hit
    #         archive top-2 = [0, 3] -> adds 3 to the caption (not present)
    # pair 1: new = []; missed = {3}; archive top-2 = [2] adds nothing
    assert c == {"pairs": 2, "archive": 6, "archive_new": 4, "caption": 2, "top_new": 2, "top_added": 1,
                 "present": 5, "missed": 3, "caption_hit": 2, "new_hit": 2, "top_new_hit": 1,
                 "top_added_hit": 0, "mentioned": 3, "caption_mentioned": 2}
    r = rates_from_counts(c, top_k=2)
    assert r["rewrite_rate"] == pytest.approx(4 / 6)
    assert r["missed_recall/archive"] == pytest.approx(2 / 3)
    assert r["missed_precision/archive"] == pytest.approx(2 / 4)
    assert r["missed_recall/top2_new"] == pytest.approx(1 / 3)
    assert r["missed_precision/top2_new"] == pytest.approx(1 / 2)
    assert r["missed_recall/caption"] == 0.0
    assert r["present_recall/caption"] == pytest.approx(2 / 5)
    assert r["present_precision/caption"] == 1.0
    assert r["present_recall/caption+top2"] == pytest.approx(2 / 5)
    assert r["present_precision/caption+top2"] == pytest.approx(2 / 3)
    assert r["extraction_recall"] == pytest.approx(2 / 3) and r["extraction_precision"] == 1.0


def test_names_to_csr_keeps_unknown_names() -> None:
    csr = names_to_csr([["dog", "unicorn"], [], ["unicorn", "cat"]], ["cat", "dog"])
    assert csr.ids.tolist() == [1, 2, 2, 0] and csr.offsets.tolist() == [0, 2, 2, 4]


def test_leakage_audit() -> None:
    vocab = Vocabulary(["person", "potted plant", "dog"], cfg=VocabularyConfig(plural=True, max_ngram=4))
    audit = leakage_audit(vocab, {"voc": ["Person", "pottedplant", "potted-plant", "cat", "dogs"]})
    assert audit["voc"]["count"] == 3 and audit["voc"]["classes"] == 5
    assert audit["voc"]["names"] == ["Person", "potted-plant", "dogs"]
    assert audit["voc"]["fraction"] == pytest.approx(0.6)


def test_curation_metrics_streams_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(12)]
    n, d = 30, 6
    emb = rng.standard_normal((n, d))
    np.save(tmp_path / "emb.npy", (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16))
    neigh = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, (n, 3))], 1)
    np.save(tmp_path / "neigh.npy", neigh)
    lists = [[names[c] for c in rng.choice(12, 2, replace=False)] for _ in range(n)]
    write_caption_concepts(tmp_path / "cc.parquet", [str(i) for i in range(n)], lists)
    captions = read_caption_concepts(tmp_path / "cc.parquet", names)
    concept_emb = rng.standard_normal((12, d)).astype(np.float32)
    cfg = CurationConfig(membership="exact", cluster=True, cluster_ratio=0.5, min_cluster_size=2, kmeans_iters=20,
                         batch_size=4, shard_size=7, top_k=3)
    run_curation(tmp_path / "emb.npy", tmp_path / "neigh.npy", captions, names, concept_emb, tmp_path / "out",
                 cfg, progress=False)
    present = names_to_csr([lst + [names[(i % 12)]] for i, lst in enumerate(lists)], names)
    m = curation_metrics(tmp_path / "out", captions, names, present, mentioned=captions.ids, top_k=3)
    assert m["archive_size/share_empty"] == 0.0 and m["archive_size/max"] <= 8
    assert m["extraction_recall"] == 1.0 and m["extraction_precision"] == 1.0
    assert 0.0 < m["rewrite_rate"] < 1.0
    assert 0.0 <= m["missed_recall/archive"] <= 1.0 and np.isfinite(m["present_recall/caption+top3"])
    assert m["present_recall/caption+top3"] >= m["present_recall/caption"]
