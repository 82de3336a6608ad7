"""Expansion, ranking and clustering against hand computations and loop restatements (docs/method.md §2-4)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from cocu.concepts.clustering import cluster_archives, kmeans_batched, num_clusters
from cocu.config import CurationConfig
from cocu.concepts.curation import (
    CSR,
    curate_all,
    curate_batch,
    gather_rows,
    score_concepts,
    substring_relation,
    with_anchor,
)

OFFICIAL = CurationConfig(membership="exact", cluster=True, cluster_ratio=0.5, min_cluster_size=2, kmeans_iters=20,
                          batch_size=1024, shard_size=100_000, top_k=3)  # the method's settings
EXACT = replace(OFFICIAL, cluster=False)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def curate_rows(emb, neigh, captions, concept_emb, cfg, relation=None):
    """Curate the first len(neigh) rows of `emb` (anchors) with neighbours drawn from all of `emb`."""
    return curate_batch(gather_rows(emb, with_anchor(0, neigh)), neigh, captions, concept_emb, cfg, relation)


def test_hand_built_ranking() -> None:
    # anchor v0 = e1, its neighbours are itself and v1 = e2; captions: row 0 {A}, row 1 {B, C}
    emb = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    concept_emb = np.array([[0.8, 0.6, 0], [0.6, 0, 0.8], [0, 0.6, 0.8]])  # u_A, u_B, u_C
    captions = CSR.from_lists([[0], [1, 2]])
    out = curate_rows(emb, np.array([[0, 1]]), captions, concept_emb, EXACT)
    # g = u.v0: A 0.8, B 0.6, C 0;  u.v1: A 0.6, B 0, C 0.6
    # S_A = [0.8 (row 0 names A), 0.8 (anchor)] mean 0.8; S_B = [0, 0.6] mean 0.3; S_C = [0.6, 0] mean 0.3
    # M = max(0, 0.8, 0.6, 0.6) = 0.8
    # A: 0.8/0.8 + 0.8/0.8 = 2.0;  B: 0.6/0.8 + 0.6/0.3 = 2.75;  C: 0/0.8 + 0/0.3 = 0
    np.testing.assert_array_equal(out.concepts, [[1, 0, 2]])
    np.testing.assert_allclose(out.scores, [[2.75, 2.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(out.sizes, [3])


# --------------------------------------------------------------------------------------------
# a loop restatement of docs/method.md §2-3, written independently of the vectorised code


def reference(anchor, neigh_ids, emb, captions, names, concept_emb, membership="exact"):
    """One anchor: [(concept id, score)] sorted by score descending (stable: first appearance)."""
    neighbours = [j for j in neigh_ids if j >= 0]
    archive = []
    for j in neighbours:
        for c in captions[j]:
            if c not in archive:
                archive.append(c)

    def member(c, j):
        if membership == "exact":
            return c in captions[j]
        return names[c] in ", ".join(names[x] for x in captions[j])

    s, g = {}, {}
    for c in archive:
        u = concept_emb[c]
        s[c] = [float(u @ emb[j]) for j in neighbours if member(c, j)] + [float(u @ anchor)]
        g[c] = float(u @ anchor)
    big = 0.0
    for c in archive:
        for value in s[c]:
            big = max(big, value)
    scores = []
    for c in archive:
        local = g[c] / (sum(s[c]) / len(s[c]))
        scores.append((c, (g[c] / big if big > 0 else 0.0) + local))
    return sorted(scores, key=lambda cs: -cs[1])


def random_world(rng, n=40, l_=5, v=25, d=8, negative=False):
    emb = unit(rng.standard_normal((n, d)))
    concept_emb = unit(rng.standard_normal((v, d)))
    if negative:  # images in the positive orthant, concepts in the negative one: every u.v < 0
        emb, concept_emb = np.abs(emb), -np.abs(concept_emb)
    captions = [list(rng.choice(v, size=rng.integers(0, 4), replace=False)) for _ in range(n)]
    neigh = np.stack([np.concatenate([[i], rng.choice(np.delete(np.arange(n), i), l_ - 1, replace=False)])
                      for i in range(n)])
    neigh[rng.random(neigh.shape) < 0.1] = -1  # missing neighbours (approximate index)
    return emb, concept_emb, captions, neigh


@pytest.mark.parametrize("negative", [False, True])  # True: every similarity < 0 -> M = 0 -> guard
def test_matches_loop_restatement(rng: np.random.Generator, negative: bool) -> None:
    emb, concept_emb, captions, neigh = random_world(rng, negative=negative)
    out = curate_rows(emb, neigh, CSR.from_lists(captions), concept_emb, EXACT)
    names = [f"c{i}" for i in range(len(concept_emb))]
    for b in range(len(emb)):
        want = reference(emb[b], neigh[b], emb, captions, names, concept_emb)
        size = out.sizes[b]
        assert size == len(want)
        np.testing.assert_array_equal(out.concepts[b, :size], [c for c, _ in want])
        np.testing.assert_allclose(out.scores[b, :size], [s for _, s in want], rtol=1e-6)
        assert np.all(out.concepts[b, size:] == -1)
    if negative:  # the guard path really ran: no positive similarity anywhere
        assert (emb @ concept_emb.T).max() < 0


def test_m_floor_and_zero_guard() -> None:
    # M starts at 0.0: with every similarity negative M is 0, never the (negative) largest one
    g = np.array([[-0.6, -1.0]])
    s_ref = np.array([[[-0.6], [-0.2]]])
    present = np.array([[[True], [False]]])
    score, m = score_concepts(g, s_ref, present, np.ones((1, 2), dtype=bool))
    np.testing.assert_array_equal(m, [0.0])
    np.testing.assert_allclose(score, [[1.0, 1.0]])  # the g/M term is dropped: score = l = g / mean
    # padding never counts towards M, even when its similarity is the largest
    _, m = score_concepts(np.array([[-0.5, 0.9]]), np.zeros((1, 2, 1)), np.zeros((1, 2, 1), dtype=bool),
                          np.array([[True, False]]))
    np.testing.assert_array_equal(m, [0.0])
    # end to end: every similarity negative -> score = l
    emb = np.array([[1.0, 0.0]])
    concept_emb = np.array([[-0.6, 0.8], [-1.0, 0.0]])
    out = curate_rows(emb, np.array([[0]]), CSR.from_lists([[0, 1]]), concept_emb, EXACT)
    # S_0 = [-0.6, -0.6] -> l = 1;  S_1 = [-1, -1] -> l = 1; equal scores keep caption order
    np.testing.assert_allclose(out.scores, [[1.0, 1.0]])
    np.testing.assert_array_equal(out.concepts, [[0, 1]])
    # one positive similarity lifts M above the floor: M = 0.5
    concept_emb = np.array([[0.5, math.sqrt(0.75)], [-1.0, 0.0]])
    out = curate_rows(emb, np.array([[0]]), CSR.from_lists([[0, 1]]), concept_emb, EXACT)
    np.testing.assert_allclose(out.scores, [[0.5 / 0.5 + 1.0, -1.0 / 0.5 + 1.0]])


def test_substring_membership_cat_cattle() -> None:
    names = ["cat", "cattle", "grass"]
    rel = substring_relation(names)
    np.testing.assert_array_equal(rel, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    rng = np.random.default_rng(1)
    emb = unit(rng.standard_normal((2, 4)))
    concept_emb = unit(rng.standard_normal((3, 4)))
    captions = [[0], [1, 2]]  # anchor: "cat"; neighbour: "cattle, grass"
    neigh = np.array([[0, 1]])
    exact = curate_rows(emb, neigh, CSR.from_lists(captions), concept_emb, EXACT)
    sub_cfg = replace(EXACT, membership="substring")
    sub = curate_rows(emb, neigh, CSR.from_lists(captions), concept_emb, sub_cfg, rel)
    for out, mode in ((exact, "exact"), (sub, "substring")):
        want = reference(emb[0], neigh[0], emb, captions, names, concept_emb, mode)
        np.testing.assert_array_equal(out.concepts[0], [c for c, _ in want])
        np.testing.assert_allclose(out.scores[0], [s for _, s in want], rtol=1e-6)
    cat_exact = exact.scores[0][exact.concepts[0] == 0]
    cat_sub = sub.scores[0][sub.concepts[0] == 0]
    assert not np.allclose(cat_exact, cat_sub)  # "cattle, grass" counts as a reference of "cat"
    with pytest.raises(ValueError, match="relation"):
        curate_rows(emb, neigh, CSR.from_lists(captions), concept_emb, sub_cfg)


def test_substring_matches_restatement_random(rng: np.random.Generator) -> None:
    emb, concept_emb, captions, neigh = random_world(rng, v=6)
    names = ["cat", "cattle", "at", "grass", "glass", "seagrass"]
    cfg = replace(EXACT, membership="substring")
    out = curate_rows(emb, neigh, CSR.from_lists(captions), concept_emb, cfg, substring_relation(names))
    for b in range(len(emb)):
        want = reference(emb[b], neigh[b], emb, captions, names, concept_emb, "substring")
        np.testing.assert_array_equal(out.concepts[b, : out.sizes[b]], [c for c, _ in want])
        np.testing.assert_allclose(out.scores[b, : out.sizes[b]], [s for _, s in want], rtol=1e-6)


def test_missing_neighbour_is_ignored(rng: np.random.Generator) -> None:
    emb, concept_emb, captions, _ = random_world(rng)
    csr = CSR.from_lists(captions)
    with_missing = curate_rows(emb, np.array([[0, 5, -1, 7]]), csr, concept_emb, EXACT)
    without = curate_rows(emb, np.array([[0, 5, 7]]), csr, concept_emb, EXACT)
    np.testing.assert_array_equal(with_missing.concepts, without.concepts)
    np.testing.assert_allclose(with_missing.scores, without.scores)
    # the official code read -1 as the last row: its concept 2 must not enter the archive
    emb3 = unit(rng.standard_normal((3, 4)))
    out = curate_rows(emb3, np.array([[0, -1]]), CSR.from_lists([[0], [1], [2]]), emb3, EXACT)
    np.testing.assert_array_equal(out.concepts, [[0]])


def test_curate_all_streams_batches(rng: np.random.Generator) -> None:
    emb, concept_emb, captions, neigh = random_world(rng)
    csr = CSR.from_lists(captions)
    cfg = replace(OFFICIAL, batch_size=7)
    batches = list(curate_all(emb.astype(np.float32), neigh, csr, concept_emb, cfg, start=3, stop=30))
    assert [len(b.sizes) for b in batches] == [7, 7, 7, 6]
    whole = curate_batch(gather_rows(emb, with_anchor(3, neigh[3:30])), neigh[3:30], csr,
                         concept_emb.astype(np.float32), cfg)
    got = np.concatenate([b.to_csr()[1] for b in batches])
    np.testing.assert_array_equal(got, whole.to_csr()[1])


# --------------------------------------------------------------------------------------------
# clustering


def gram(x: np.ndarray) -> np.ndarray:
    return x @ x.transpose(0, 2, 1)  # [B, A, A]


def kmeans_reference(x: np.ndarray, k: int, iters: int) -> np.ndarray:
    """Plain Lloyd in embedding space for one archive, farthest-point init, same renumbering: the
    per-archive reference of benchmarks/curation.py (one restatement of docs/method.md §4 for both)."""
    from benchmarks.curation import kmeans_one

    return np.array(kmeans_one(x, k, iters, "numpy"))


def test_kmeans_batched_equals_per_archive_loop(rng: np.random.Generator) -> None:
    sizes = np.array([9, 3, 14, 6, 1, 11])
    amax, d = sizes.max(), 5
    x = unit(rng.standard_normal((len(sizes), amax, d)))
    mask = np.arange(amax)[None, :] < sizes[:, None]
    k = num_clusters(sizes, 0.5, 2)
    np.testing.assert_array_equal(k, [5, 2, 7, 3, 1, 6])
    labels = kmeans_batched(gram(x), mask, k, iters=50)
    for b, size in enumerate(sizes):
        np.testing.assert_array_equal(labels[b, :size], kmeans_reference(x[b, :size], k[b], 50))
        assert np.all(labels[b, size:] == -1)


def test_small_archives_one_cluster_per_concept(rng: np.random.Generator) -> None:
    x = np.repeat(unit(rng.standard_normal((1, 1, 4))), 3, axis=1).repeat(3, axis=0)  # identical points
    mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=bool)
    labels = cluster_archives(gram(x), mask, ratio=0.5, min_size=2, iters=10)
    # sizes 2 and 1: one cluster per concept; size 3 of identical points: 2 clusters, one stays empty
    np.testing.assert_array_equal(labels, [[0, 1, -1], [0, -1, -1], [0, 0, 0]])


def test_clusters_in_curation_are_deterministic(rng: np.random.Generator) -> None:
    emb, concept_emb, captions, neigh = random_world(rng, v=40)
    csr = CSR.from_lists(captions)
    cfg = OFFICIAL
    a = curate_rows(emb, neigh, csr, concept_emb, cfg)
    b = curate_rows(emb, neigh, csr, concept_emb, cfg)
    np.testing.assert_array_equal(a.clusters, b.clusters)
    assert np.all(a.clusters[a.sizes > 0, 0] == 0)  # the top concept is in cluster 0
    for row, size in enumerate(a.sizes):
        labels = a.clusters[row, :size]
        assert labels.max(initial=-1) + 1 <= max(size, 1)
        if size > 2:
            # k-means runs over the archive in score order (the stored order)
            want = kmeans_reference(concept_emb[a.concepts[row, :size]], math.ceil(size / 2), 20)
            np.testing.assert_array_equal(labels, want)
