"""cocu.clip.quality: zero-shot concept accuracy and neighbour precision on hand-built examples."""

from __future__ import annotations

import numpy as np
import pytest

from cocu.clip.quality import (
    average_precision,
    concept_auc,
    random_average_precision,
    knn_excluding_self,
    multi_hot,
    neighbour_overlap,
    neighbour_quality,
    random_neighbours,
    teacher_quality,
    zero_shot_concepts,
)

NAMES = ["cat", "dog", "sky"]
CONCEPTS = np.eye(3, dtype=np.float32)  # concept v = axis v


def test_zero_shot_hand_built() -> None:
    images = np.array([[1, 0.1, 0], [0.2, 1, 0], [0, 0, 1], [0.9, 0, 0.5]], dtype=np.float32)  # top-1: cat dog sky cat
    present = [["cat", "sky"], ["cat"], ["sky", "dog"], ["dog"]]
    salient = ["sky", "cat", "sky", "dog"]
    r = zero_shot_concepts(images, CONCEPTS, NAMES, present, salient)
    assert r["zeroshot_top1_present"] == pytest.approx(2 / 4)  # rows 0, 2
    assert r["zeroshot_top1_salient"] == pytest.approx(1 / 4)  # row 2
    assert r["zeroshot_random_present"] == pytest.approx((2 + 1 + 2 + 1) / 4 / 3)
    assert r["zeroshot_random_salient"] == pytest.approx(1 / 3)
    assert "zeroshot_top1_salient" not in zero_shot_concepts(images, CONCEPTS, NAMES, present)
    # rankings: row 0 cat>dog>sky, AP of {cat, sky} = (1 + 2/3) / 2; row 1 dog>cat, AP of {cat} = 1/2
    # row 2 sky>cat>dog (ties by index), AP of {sky, dog} = (1 + 2/3) / 2; row 3 cat>sky>dog, AP of {dog} = 1/3
    assert r["zeroshot_map_present"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2 + (1 + 2 / 3) / 2 + 1 / 3) / 4)


def test_average_precision_and_its_random_baseline() -> None:
    scores = np.array([[0.9, 0.1, 0.5, 0.3]])
    rel = np.array([[False, True, True, False]])  # ranks of relevant: 2 and 4 -> AP = (1/2 + 2/4) / 2
    assert average_precision(scores, rel)[0] == pytest.approx(0.5)
    assert np.isnan(average_precision(scores, np.zeros_like(rel))[0])
    rng = np.random.default_rng(0)
    v, r = 10, 3
    rel = np.zeros((20000, v), dtype=bool)
    rel[:, :r] = True
    mc = average_precision(rng.random((20000, v)), rel).mean()
    assert random_average_precision(np.array([r]), v)[0] == pytest.approx(mc, abs=0.005)
    assert random_average_precision(np.array([v]), v)[0] == pytest.approx(1.0)


def test_multi_hot_ignores_unknown() -> None:
    np.testing.assert_array_equal(multi_hot([["sky", "tree"], []], NAMES), [[0, 0, 1], [0, 0, 0]])


def test_neighbour_overlap_hand_built() -> None:
    gt = multi_hot([["cat", "dog"], ["cat"], ["sky"]], NAMES)
    nb = np.array([[1, 2], [0, 2], [0, 1]])
    r = neighbour_overlap(nb, gt)
    # pairs: (0,1) 1/2, (0,2) 0, (1,0) 1/2, (1,2) 0, (2,0) 0, (2,1) 0
    assert r["jaccard"] == pytest.approx(1 / 6)
    assert r["share_any"] == pytest.approx(2 / 6)


def test_knn_excluding_self_with_duplicates() -> None:
    emb = np.array([[1, 0], [1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)  # rows 0 and 1 identical
    ids = knn_excluding_self(emb, 2, block=3)
    assert ids.shape == (4, 2)
    assert (ids != np.arange(4)[:, None]).all()
    assert ids[0, 0] == 1 and ids[1, 0] == 0 and ids[0, 1] == 2 and ids[3, 0] == 2


def test_random_neighbours_exclude_self() -> None:
    ids = random_neighbours(5, 50, np.random.default_rng(0))
    assert (ids != np.arange(5)[:, None]).all() and ids.min() == 0 and ids.max() == 4


def test_neighbour_quality_separates_clusters_from_random() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    centres = rng.normal(size=(4, 8))
    emb = centres[labels] + 0.05 * rng.normal(size=(40, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    present = [[f"c{l}"] for l in labels]
    r = neighbour_quality(emb, present, k=5, seed=0)
    assert r["neighbour_jaccard"] == 1.0 and r["neighbour_share_any"] == 1.0
    assert 0.1 < r["neighbour_random_jaccard"] < 0.45  # expected 9/39
    assert neighbour_quality(emb, present, k=5, seed=0) == r  # deterministic
    full = teacher_quality(emb, centres / np.linalg.norm(centres, axis=1, keepdims=True), [f"c{i}" for i in range(4)],
                           present, k=5)
    assert full["zeroshot_top1_present"] == 1.0 and full["neighbour_jaccard"] == 1.0


def test_concept_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((30, 4)), 1)  # many ties
    rel = rng.random((30, 4)) < 0.4
    rel[:, 3] = True  # present everywhere: undefined
    auc = concept_auc(scores, rel)
    for v in range(3):
        p, n = scores[rel[:, v], v], scores[~rel[:, v], v]
        pairwise = ((p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()) / (len(p) * len(n))
        assert auc[v] == pytest.approx(pairwise)
    assert np.isnan(auc[3])
