"""Neighbour search: exact blocked kNN, faiss indexes, recall, missing ids (docs/method.md §2)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cocu.config import IndexConfig
import torch

from cocu.concepts.retrieval import (
    _column_top_k,
    _gaining_rows_top_k,
    build_index,
    exact_knn,
    exact_self_knn,
    recall_at_k,
    search_index,
    search_neighbours,
    similarity_order,
)

# the repository's index settings; each test states the ones it depends on
BASE = IndexConfig(type="flat", num_neighbours=8, nlist=1024, nprobe=16, pq_m=64, pq_bits=8, refine=4, hnsw_m=32, ef_construction=80, ef_search=64,
                   train_size=100_000, batch_size=4096, block_size=4096, recall_sample=1000, seed=0)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, d: int = 16, centres: int = 10) -> np.ndarray:
    c = rng.standard_normal((centres, d))
    return unit(c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, d)))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_exact_knn_equals_brute_force(rng: np.random.Generator, dtype: type) -> None:
    db = unit(rng.standard_normal((300, 16))).astype(dtype)
    queries = db[rng.choice(300, 50, replace=False)]
    # small blocks: many blocks, a last partial block, a block smaller than k
    ids, sims = exact_knn(db, queries, k=7, block_size=37, query_block=16)
    full = queries.astype(np.float32) @ db.astype(np.float32).T  # [Q, N]
    want = np.argsort(-full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(sims, np.take_along_axis(full, want, 1), rtol=1e-6)
    assert ids.dtype == np.int64 and sims.dtype == np.float32


def test_exact_knn_ties_by_id() -> None:
    db = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    ids, _ = exact_knn(db, db[:1], k=3, block_size=2)
    np.testing.assert_array_equal(ids, [[0, 2, 3]])


def test_flat_neighbours_tie_by_id_like_exact_knn() -> None:
    db = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [1, 0], [0.6, 0.8]], dtype=np.float32)
    nb = search_neighbours(db, replace(BASE, num_neighbours=3, batch_size=2))  # no tie across the k-th place
    want, want_sims = exact_knn(db, db, k=3)
    np.testing.assert_array_equal(nb.ids, want)
    np.testing.assert_array_equal(nb.ids[[1, 4, 5]], [[1, 3, 4], [1, 3, 4], [5, 0, 2]])  # ties in id order
    np.testing.assert_allclose(nb.sims, want_sims, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("block_size", [37, 64, 1000])  # many blocks + a partial one; two blocks; one
def test_exact_self_knn_equals_brute_force(rng: np.random.Generator, dtype: type, block_size: int) -> None:
    emb = np.concatenate([clustered(rng, 150), unit(rng.standard_normal((60, 16)))]).astype(dtype)
    emb = emb[rng.permutation(len(emb))]  # neighbours spread over the blocks
    ids, sims = exact_self_knn(emb, k=9, block_size=block_size)
    full = emb.astype(np.float32) @ emb.astype(np.float32).T  # [N, N]
    want = np.argsort(-full, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(sims, np.take_along_axis(full, want, 1), rtol=1e-6)
    assert ids.dtype == np.int64 and sims.dtype == np.float32


def test_exact_self_knn_block_smaller_than_k(rng: np.random.Generator) -> None:
    emb = unit(rng.standard_normal((23, 8)))
    ids, _ = exact_self_knn(emb, k=6, block_size=4)  # 4-row blocks, a 3-row last block
    np.testing.assert_array_equal(ids, exact_knn(emb, emb, k=6)[0])


def test_exact_self_knn_ties_by_id() -> None:
    db = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [1, 0], [0.6, 0.8]], dtype=np.float32)
    ids, _ = exact_self_knn(db, k=3, block_size=2)  # no tie across the k-th place
    np.testing.assert_array_equal(ids[[1, 4, 5]], [[1, 3, 4], [1, 3, 4], [5, 0, 2]])


@pytest.mark.parametrize("floor", ["none", "loose", "tight"])  # none: every entry passes -> column top-k
def test_column_top_k_equals_a_full_column_sort(rng: np.random.Generator, floor: str) -> None:
    sims = torch.from_numpy(rng.standard_normal((50, 30)).astype(np.float32))
    want_v, want_i = torch.topk(sims, 4, dim=0)  # [4, 30] best first (no ties in random floats)
    bound = {"none": torch.full((30,), -np.inf), "loose": want_v[-1] - 0.5, "tight": want_v[-1]}[floor]
    v, i = _column_top_k(sims, bound, 4, offset=100)
    order = torch.argsort(v, dim=1, descending=True)
    np.testing.assert_array_equal(v.gather(1, order).numpy(), want_v.T.numpy())
    np.testing.assert_array_equal(i.gather(1, order).numpy(), want_i.T.numpy() + 100)


def test_column_top_k_keeps_fewer_when_fewer_pass() -> None:
    sims = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    v, i = _column_top_k(sims, torch.tensor([0.5, 0.75]), 2, offset=0)
    np.testing.assert_array_equal(i.numpy(), [[0, -1], [1, -1]])
    np.testing.assert_array_equal(v.numpy(), np.float32([[0.9, -np.inf], [0.8, -np.inf]]))


@pytest.mark.parametrize("case", ["all", "all_transposed", "few", "few_transposed"])
def test_gaining_rows_top_k_on_every_path(rng: np.random.Generator, case: str) -> None:
    block = torch.from_numpy(rng.standard_normal((40, 60)).astype(np.float32))
    sims = block.T if case.endswith("transposed") else block  # [a, b]; a transposed view is not contiguous
    full_v, full_i = torch.topk(sims, 5, dim=1)  # [a, 5] best first
    floor = full_v[:, -1] - 1.0  # every row gains
    if case.startswith("few"):  # rows 3 and 7 gain (an entry at their floor counts); the others cannot
        floor = sims.amax(1) + 0.1
        floor[3], floor[7] = full_v[3, 2], sims[7].amax()
    hit, v, ids = _gaining_rows_top_k(sims, floor, 5, offset=1000)
    want_rows = np.arange(len(sims)) if case.startswith("all") else [3, 7]
    np.testing.assert_array_equal(hit.numpy(), want_rows)
    for row, got_v, got_i in zip(hit.tolist(), v, ids):
        keep = got_i >= 0  # the extraction may return fewer than k: only those at or above the floor
        order = torch.argsort(got_v[keep], descending=True)
        n_keep = int(keep.sum())
        np.testing.assert_array_equal(got_v[keep][order].numpy(), full_v[row, :n_keep].numpy())
        np.testing.assert_array_equal(got_i[keep][order].numpy(), full_i[row, :n_keep].numpy() + 1000)
        assert n_keep == 5 or torch.sum(sims[row] >= floor[row]) == n_keep


def test_similarity_order_groups_similar_rows(rng: np.random.Generator) -> None:
    emb = clustered(rng, 400, centres=8)
    order = similarity_order(emb, 8, seed=0)
    np.testing.assert_array_equal(np.sort(order), np.arange(400))  # a permutation
    np.testing.assert_array_equal(order, similarity_order(emb, 8, seed=0))  # deterministic
    # neighbours in the new order are far more similar than random pairs
    x = emb[order]
    assert np.mean(np.sum(x[1:] * x[:-1], 1)) > np.mean(emb @ emb.T) + 0.3


def test_exact_knn_rejects_k_above_n(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="k=5"):
        exact_knn(unit(rng.standard_normal((4, 3))), unit(rng.standard_normal((2, 3))), k=5)


def test_flat_index_matches_exact(rng: np.random.Generator) -> None:
    emb = unit(rng.standard_normal((200, 16)))
    ids, _ = search_index(build_index(emb, replace(BASE, type="flat")), emb, k=5, batch_size=64)
    want, _ = exact_knn(emb, emb, k=5)
    np.testing.assert_array_equal(ids, want)
    nb = search_neighbours(emb, replace(BASE, num_neighbours=5))
    np.testing.assert_array_equal(nb.ids, want)
    np.testing.assert_array_equal(nb.ids[:, 0], np.arange(200))  # each row is its own top-1


def test_ivf_recall(rng: np.random.Generator) -> None:
    emb = clustered(rng, 2000)
    exact, _ = exact_knn(emb, emb, k=8)
    # probing every list is exact search: recall 1
    full = replace(BASE, type="ivf", nlist=16, nprobe=16, train_size=2000)
    ids, _ = search_index(build_index(emb, full), emb, k=8)
    assert recall_at_k(ids, exact) == 1.0
    # one list out of 16 misses neighbours that fall in other lists
    cfg = replace(BASE, type="ivf", nlist=16, nprobe=1, num_neighbours=8, recall_sample=500)
    nb = search_neighbours(emb, cfg)
    assert nb.recall is not None and 0.5 < nb.recall < 1.0
    assert nb.recall == pytest.approx(recall_at_k(nb.ids, exact), abs=0.05)  # sample vs all


def test_missing_neighbours_are_minus_one_with_minus_inf(rng: np.random.Generator) -> None:
    # 64 lists over 80 points, one probed: most lists hold fewer than k = 8 points
    emb = unit(rng.standard_normal((80, 16)))
    index = build_index(emb, replace(BASE, type="ivf", nlist=64, nprobe=1, train_size=80))
    ids, sims = search_index(index, emb, k=8)
    missing = ids < 0
    assert missing.any()
    assert np.all(sims[missing] == -np.inf) and np.all(np.isfinite(sims[~missing]))
    assert np.all(np.diff(missing.astype(int), axis=1) >= 0)  # missing ids only at row ends


def test_recall_at_k_counts_missing_as_miss() -> None:
    exact = np.array([[0, 1, 2], [3, 4, 5]])
    approx = np.array([[2, 0, -1], [5, 9, -1]])  # 2/3 and 1/3 hits; -1 never matches
    assert recall_at_k(approx, exact) == pytest.approx(0.5)
    assert recall_at_k(np.array([[-1]]), np.array([[-1]])) == 0.0


def test_hnsw_builds_and_finds_self(rng: np.random.Generator) -> None:
    emb = unit(rng.standard_normal((300, 16)))
    ids, _ = search_index(build_index(emb, replace(BASE, type="hnsw", hnsw_m=8, ef_search=32)), emb, k=4)
    assert (ids[:, 0] == np.arange(300)).mean() > 0.95


def test_ivf_nlist_above_n_is_an_error(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="nlist"):
        build_index(unit(rng.standard_normal((10, 4))), replace(BASE, type="ivf", nlist=32))
