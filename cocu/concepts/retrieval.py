"""Image->image neighbour search over unit-norm embeddings (docs/method.md §2; the `index` stage).

The `flat` index is exact search. On the CPU it is `exact_self_knn`: the curation search is a
self-search (every image against all images), and the similarity matrix X X^T is symmetric, so
each block product x_a x_b^T (a < b) serves both the rows of a (along its rows) and the rows of
b (along its columns): about half the matrix-multiply work of a plain search. Rows are first
grouped by similarity so that a running k-th best from the diagonal blocks rules out nearly
every later (row, block) pair at the cost of a max-reduction. Measured at N = 100k, D = 512 on
2 cores (benchmarks/curation.py, README "Curation speed"): 33.9 s, 83% of the float32 matmul
peak in multiply-adds done (159% in those of a plain search); faiss IndexFlatIP would take 1.8x
as long. With a GPU, `flat` is faiss's GPU IndexFlatIP. `exact_knn` (queries against a
database, blocked matmul with a running top-k, memory-mapped database) is the reference that
approximate indexes (`ivf`, `hnsw`) are measured against (`recall_at_k` on a sample). Rows of
every exact result are sorted by similarity descending, ties by id ascending.

Missing neighbours: an approximate index may return fewer than k results (id -1; the official
code silently read -1 as the last row, docs/method.md §10, quirk 4). Here a missing neighbour keeps id -1
with similarity -inf, at the end of its row; curation masks these out (the archive is built from
the valid neighbours only) and the stage counts them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from cocu.config import IndexConfig

log = logging.getLogger(__name__)


def exact_knn(
    db: np.ndarray,  # [N, D] unit-norm float32/float16 (a memory-mapped .npy is fine)
    queries: np.ndarray,  # [Q, D] same dtype family
    k: int,
    block_size: int = 8192,  # database rows per matrix-multiply block
    query_block: int = 4096,  # queries per block; memory ~ query_block * block_size * 4 bytes
) -> tuple[np.ndarray, np.ndarray]:  # ids [Q, k] int64, sims [Q, k] float32, best first
    """Exact top-k by inner product: `np.matmul` per (query block, database block) + `torch.topk`.

    The top-k of each block is merged into a running top-k, so the cost beyond the matrix
    multiply is about one pass over each similarity block. Rows are sorted by similarity
    descending, ties by id ascending (which of several rows tied at the k-th place is kept is
    not specified).
    """
    n, dim = db.shape
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (database rows)")
    if queries.shape[1] != dim:
        raise ValueError(f"queries have dimension {queries.shape[1]}, database {dim}")
    num_q = len(queries)
    out_ids = np.empty((num_q, k), dtype=np.int64)
    out_sims = np.empty((num_q, k), dtype=np.float32)
    buffer = np.empty(min(query_block, num_q) * min(block_size, n), dtype=np.float32)  # reused
    db_is_f32 = db.dtype == np.float32 and db.flags.c_contiguous
    for q0 in range(0, num_q, query_block):
        q = np.ascontiguousarray(queries[q0 : q0 + query_block], dtype=np.float32)  # [bq, D]
        best_v = torch.full((len(q), k), -np.inf)  # [bq, k] running top-k similarities
        best_i = torch.full((len(q), k), -1, dtype=torch.int64)  # [bq, k] their database rows
        for d0 in range(0, n, block_size):
            block = db[d0 : d0 + block_size]
            block = block if db_is_f32 else block.astype(np.float32)  # [bd, D]
            sims = buffer[: len(q) * len(block)].reshape(len(q), len(block))
            np.matmul(q, block.T, out=sims)  # [bq, bd]
            v, i = torch.topk(torch.from_numpy(sims), min(k, len(block)), dim=1, sorted=False)
            best_v, best_i = _merge_top_k(best_v, best_i, v, i + d0)
        out_ids[q0 : q0 + len(q)], out_sims[q0 : q0 + len(q)] = sort_rows(best_i.numpy(), best_v.numpy())
    return out_ids, out_sims


def exact_self_knn(
    emb: np.ndarray,  # [N, D] unit-norm float32/float16 (a memory-mapped .npy is fine)
    k: int,
    block_size: int = 4096,  # rows per block; memory ~ block_size^2 * 4 bytes
    seed: int = 0,  # seeds the row order (which changes the time, not the neighbours)
) -> tuple[np.ndarray, np.ndarray]:  # ids [N, k] int64, sims [N, k] float32, best first
    """Exact top-k of every row of `emb` among all rows (itself included), by inner product.

    The rows are first put in an order where similar rows are close (`similarity_order`), then cut
    into blocks x_0, x_1, ... (float32). Every diagonal product x_a x_a^T comes first: its row top-k
    gives each row a running top-k from real entries, so a running k-th best that can only rise
    and that the final k-th best is at least. Then each product S = x_a x_b^T with a < b, computed
    once, serves both sides: the rows of block a (along the rows of S) and the rows of block b
    (along its columns). A row whose largest entry in S is below its running k-th best gains
    nothing from S; with similar rows in the same block, that is nearly every row once the
    diagonal blocks are done, so past the matrix multiply a block costs two max-reductions and a
    top-k over the few rows and columns that can gain. The filters never change the result; the
    order changes only the time and, where a row's position in its block changes how the matrix
    multiply sums, the last bit of a similarity (deterministic for a given seed). Ties at the k-th
    place: which of the tied rows is kept is not specified (as for `exact_knn`).
    """
    n = len(emb)
    order = self_knn_order(emb, k, block_size, seed)
    _, ids, sims = self_knn_blocks(emb, k, block_size, order, range(-(-n // block_size)))
    out_ids, out_sims = np.empty_like(ids), np.empty_like(sims)
    out_ids[order], out_sims[order] = ids, sims
    return out_ids, out_sims


def self_knn_order(emb: np.ndarray, k: int, block_size: int, seed: int = 0) -> np.ndarray:
    """[N] the row order `exact_self_knn` cuts into blocks (the identity when one block holds all)."""
    n = len(emb)
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (rows)")
    clusters = max(1, min(1024, 16 * n // block_size))  # about 16 groups of similar rows per block
    return similarity_order(emb, clusters, seed) if n > block_size else np.arange(n)


def self_knn_blocks(
    emb: np.ndarray,  # [N, D] unit-norm float32/float16
    k: int,
    block_size: int,
    order: np.ndarray,  # [N] row order cut into blocks of block_size (`self_knn_order`)
    blocks: range,  # the blocks whose rows to answer (one array task's share; all: range(num_blocks))
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # rows [m], ids [m, k], sims [m, k] (rows sorted best first)
    """The exact top-k (among all rows) of the rows `order[blocks.start * block_size : ...]`: the
    symmetric search of `exact_self_knn` restricted to some blocks, for an array of tasks.

    Every similarity comes from the same product as in the whole search: x_a x_b^T with a <= b, the
    same blocks and shapes, so a row's result does not depend on how the blocks are split among
    tasks (bar ties at the k-th place). A product between two of these blocks serves both; one
    with another task's block serves only this side (that task computes the same product for
    its own rows): with T tasks, up to twice the multiply-adds of one task.
    """
    n = len(emb)
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (rows)")
    num_blocks = -(-n // block_size)
    if blocks.step != 1 or blocks.start < 0 or blocks.stop > num_blocks or len(blocks) == 0:
        raise ValueError(f"blocks {blocks} must be a non-empty run of the {num_blocks} blocks")
    lo, hi = blocks.start * block_size, min(n, blocks.stop * block_size)  # positions in `order` answered
    best_v = torch.full((hi - lo, k), -np.inf)  # [m, k] running top-k similarities of positions lo..hi
    best_i = torch.full((hi - lo, k), -1, dtype=torch.int64)  # [m, k] their positions in `order`
    buffer = torch.empty(min(block_size, n) ** 2)  # one similarity block, reused

    def rows(b: int) -> torch.Tensor:  # [b, D] float32 block of rows
        return _float32(emb[order[b * block_size : (b + 1) * block_size]])

    def merge(at: torch.Tensor, v: torch.Tensor, i: torch.Tensor) -> None:  # candidates [h, k'] of positions `at`
        at = at - lo
        best_v[at], best_i[at] = _merge_top_k(best_v[at], best_i[at], v, i)

    def product(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:  # [a, b] = xa xb^T
        return torch.mm(xa, xb.T, out=buffer[: len(xa) * len(xb)].view(len(xa), len(xb)))

    for b in blocks:  # diagonal blocks: symmetric, the row top-k serves both sides
        s = b * block_size
        xa = rows(b)
        v, i = torch.topk(product(xa, xa), min(k, len(xa)), dim=1, sorted=False)
        merge(torch.arange(s, s + len(xa)), v, i + s)
    for b in blocks:
        s = b * block_size
        xa = rows(b)
        for c in range(num_blocks):
            if c == b or (c in blocks and c < b):  # the diagonal, or a pair served from block c
                continue
            t = c * block_size
            xb = rows(c)
            if b < c:
                sims = product(xa, xb)  # [a, b]
                hit, v, i = _gaining_rows_top_k(sims, best_v[s - lo : s - lo + len(xa)].amin(1), k, t)
                merge(hit + s, v, i)
                if c in blocks:
                    hit, v, i = _gaining_rows_top_k(sims.T, best_v[t - lo : t - lo + len(xb)].amin(1), k, s)
                    merge(hit + t, v, i)
            else:  # another task's earlier block: the same product x_c x_b^T, this side only
                sims = product(xb, xa)  # [c, b]
                hit, v, i = _gaining_rows_top_k(sims.T, best_v[s - lo : s - lo + len(xa)].amin(1), k, t)
                merge(hit + s, v, i)
    ids, sims = sort_rows(order[best_i.numpy()], best_v.numpy())
    return order[lo:hi], ids, sims


def _merge_top_k(
    best_v: torch.Tensor,  # [h, k] running top-k values (any order)
    best_i: torch.Tensor,  # [h, k] their ids
    v: torch.Tensor,  # [h, k'] candidates
    i: torch.Tensor,  # [h, k'] their ids
) -> tuple[torch.Tensor, torch.Tensor]:  # [h, k] the top-k of both, unsorted
    cand_v, cand_i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
    top_v, j = torch.topk(cand_v, best_v.shape[1], dim=1, sorted=False)
    return top_v, cand_i.gather(1, j)


def similarity_order(
    emb: np.ndarray,  # [N, D] unit-norm float32/float16
    num_clusters: int,
    seed: int = 0,
    iters: int = 4,
    sample_per_cluster: int = 32,
) -> np.ndarray:  # [N] int64 permutation: rows grouped by nearest centre
    """A row order in which similar rows are close: spherical k-means (a few Lloyd steps on a
    seeded sample), then the rows sorted by nearest centre (stable). Cost ~ N * clusters * D."""
    n = len(emb)
    gen = torch.Generator().manual_seed(seed)
    sample = np.sort(torch.randperm(n, generator=gen)[: min(n, sample_per_cluster * num_clusters)].numpy())
    x = _float32(emb[sample])  # [S, D]
    centres = x[torch.randperm(len(x), generator=gen)[:num_clusters]].clone()  # [C, D]
    for _ in range(iters):
        nearest = torch.mm(x, centres.T).argmax(1)  # [S]
        sums = torch.zeros_like(centres).index_add_(0, nearest, x)
        centres = torch.where(torch.bincount(nearest, minlength=len(centres))[:, None] > 0,
                              torch.nn.functional.normalize(sums, dim=1), centres)
    labels = np.concatenate([torch.mm(_float32(emb[s : s + 8192]), centres.T).argmax(1).numpy()
                             for s in range(0, n, 8192)])
    return np.argsort(labels, kind="stable")


def _float32(rows: np.ndarray) -> torch.Tensor:
    """Rows (float16/float32, memory-mapped or not) as a float32 tensor; torch widens float16 about
    3x faster than numpy."""
    return torch.from_numpy(np.asarray(rows)).float()


def _gaining_rows_top_k(
    sims: torch.Tensor,  # [a, b] similarity block (or the transposed view of one)
    floor: torch.Tensor,  # [a] running k-th best of each row: an entry below it cannot count
    k: int,
    offset: int,  # added to the column indices
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # rows [h], values [h, k'], ids [h, k'] (-1: none)
    """The top-k along dim 1 of the rows of `sims` whose largest entry reaches their floor."""
    hit = (sims.amax(1) >= floor).nonzero().squeeze(1)  # [h]
    kk = min(k, sims.shape[1])
    if len(hit) > len(sims) // 4:  # many rows gain: all of them, without a copy
        if sims.is_contiguous():
            v, i = torch.topk(sims, kk, dim=1, sorted=False)
            return torch.arange(len(sims)), v, i + offset
        return torch.arange(len(sims)), *_column_top_k(sims.T, floor, k, offset)  # extract what passes
    v, i = torch.topk(sims.index_select(0, hit), kk, dim=1, sorted=False)  # [h, k'] (contiguous copy)
    return hit, v, i + offset


def _column_top_k(
    sims: torch.Tensor,  # [a, b] similarity block, rows offset by `offset`
    floor: torch.Tensor,  # [b] running k-th best of each column's row (entries below it cannot count)
    k: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # [b, k] values (-inf = none) and row ids (-1) per column
    """The top-k of each column of `sims` among its entries >= floor (every entry that can count)."""
    mask = sims >= floor  # [a, b]
    found = int(torch.count_nonzero(mask))
    num_rows, num_cols = sims.shape
    if found > 4 * k * num_cols:  # the filter is too weak here: a plain column top-k is cheaper
        v, i = torch.topk(sims, min(k, num_rows), dim=0, sorted=False)
        return v.T, i.T + offset
    r, c = mask.nonzero(as_tuple=True)  # [found] row-major
    vals = sims[r, c]
    order = torch.from_numpy(np.lexsort((r.numpy(), -vals.numpy(), c.numpy())))  # by column, best first
    r, c, vals = r[order], c[order], vals[order]
    per_col = torch.bincount(c, minlength=num_cols)
    rank = torch.arange(len(c)) - (torch.cumsum(per_col, 0) - per_col)[c]  # place within its column
    keep = rank < k
    out_v = torch.full((num_cols, k), -np.inf)
    out_i = torch.full((num_cols, k), -1, dtype=torch.int64)
    out_v[c[keep], rank[keep]] = vals[keep]
    out_i[c[keep], rank[keep]] = r[keep] + offset
    return out_v, out_i


def build_index(emb: np.ndarray, cfg: IndexConfig, to_gpu: bool = True) -> faiss.Index:
    """A faiss inner-product index over `emb` [N, D] (float32/float16, added in float32 chunks).

    `flat` is exact; `ivf` (IVF-Flat) and `ivfpq` (IVF with `pq_m` product-quantised bytes a
    vector at `pq_bits` bits) train on a seeded sample of `train_size` rows (the k-means on the
    GPUs when faiss sees any); `hnsw` builds a graph (multi-threaded insertion: not
    bit-reproducible across thread counts). `to_gpu`: move the result to every GPU faiss sees
    (not hnsw: faiss has no GPU HNSW); False keeps it on the CPU, e.g. to write it to a file.
    """
    n, dim = emb.shape
    if cfg.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.type in ("ivf", "ivfpq"):
        if n < cfg.nlist:
            raise ValueError(f"{cfg.type}: nlist={cfg.nlist} exceeds the number of vectors ({n}); lower index.nlist")
        quantizer = faiss.IndexFlatIP(dim)
        if cfg.type == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, cfg.nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if dim % cfg.pq_m:
                raise ValueError(f"ivfpq: index.pq_m={cfg.pq_m} must divide the embedding dimension {dim}")
            index = faiss.IndexIVFPQ(quantizer, dim, cfg.nlist, cfg.pq_m, cfg.pq_bits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = cfg.seed
        if faiss.get_num_gpus() > 0:  # the k-means assignment (nlist x train_size) is the cost of training
            index.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(dim))
        rng = np.random.default_rng(cfg.seed)
        sample = np.sort(rng.choice(n, size=min(cfg.train_size, n), replace=False))
        index.train(np.ascontiguousarray(emb[sample], dtype=np.float32))
        index.nprobe = cfg.nprobe
    elif cfg.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = cfg.ef_search
    else:
        raise ValueError(f"unknown index type {cfg.type!r} (flat | ivf | ivfpq | hnsw)")
    for start in range(0, n, 65536):
        index.add(np.ascontiguousarray(emb[start : start + 65536], dtype=np.float32))
    return _on_gpu(index, cfg) if to_gpu else index


def _on_gpu(index: faiss.Index, cfg: IndexConfig) -> faiss.Index:
    """`index` on every GPU faiss sees (unchanged without one, or for hnsw)."""
    if faiss.get_num_gpus() == 0 or cfg.type == "hnsw":
        return index
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True  # flat: the embeddings are float16 already, so this stores them exactly
    gpu_index = faiss.index_cpu_to_all_gpus(index, co=options)
    if cfg.type in ("ivf", "ivfpq"):
        faiss.GpuParameterSpace().set_index_parameter(gpu_index, "nprobe", cfg.nprobe)
    return gpu_index


def search_index(
    index: faiss.Index,
    queries: np.ndarray,  # [Q, D] float32/float16
    k: int,
    batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:  # ids [Q, k] int64 (-1 = missing), sims [Q, k] float32 (-inf)
    """Batched `index.search`; missing results keep id -1 and get similarity -inf."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), batch_size):
        q = np.ascontiguousarray(queries[start : start + batch_size], dtype=np.float32)
        sims[start : start + len(q)], ids[start : start + len(q)] = index.search(q, k)
    sims[ids < 0] = -np.inf
    return ids, sims


def refine_exact(
    emb: np.ndarray,  # [N, D] the database (memory-mapped is fine)
    queries: np.ndarray,  # [Q, D]
    candidates: np.ndarray,  # [Q, C] ids (-1 = none), e.g. from a product-quantised index
    k: int,
) -> tuple[np.ndarray, np.ndarray]:  # ids [Q, k], sims [Q, k], best first (ties by id)
    """Re-rank candidates by their exact inner product with the query and keep the top k (the
    rows of `emb` are read once per query batch, in id order)."""
    q = _float32(queries)  # [Q, D]
    valid = candidates >= 0
    flat = np.unique(candidates[valid])
    rows = _float32(emb[flat])  # [U, D]
    at = np.searchsorted(flat, np.where(valid, candidates, flat[0] if len(flat) else 0))  # [Q, C]
    sims = torch.einsum("qd,qcd->qc", q, rows[torch.from_numpy(at)]).numpy()  # [Q, C]
    sims[~valid] = -np.inf
    ids, sims = sort_rows(np.where(valid, candidates, -1), sims)
    return ids[:, :k], sims[:, :k]


def search_rows(index: faiss.Index, emb: np.ndarray, rows: np.ndarray, cfg: IndexConfig) -> tuple[np.ndarray, np.ndarray]:
    """Top-L of `emb[rows]` from an approximate index, in `cfg.batch_size` batches; `ivfpq` with
    `refine > 0` fetches refine * L candidates and re-ranks them exactly (`refine_exact`)."""
    k = cfg.num_neighbours
    fetch = k * cfg.refine if cfg.type == "ivfpq" and cfg.refine > 0 else k
    ids = np.empty((len(rows), k), dtype=np.int64)
    sims = np.empty((len(rows), k), dtype=np.float32)
    for start in range(0, len(rows), cfg.batch_size):
        q = np.asarray(emb[rows[start : start + cfg.batch_size]])
        found, found_sims = search_index(index, q, fetch, cfg.batch_size)
        if fetch > k:
            found, found_sims = refine_exact(emb, q, found, k)
        ids[start : start + len(q)], sims[start : start + len(q)] = found, found_sims
    return ids, sims


def sort_rows(ids: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row by similarity descending, ties by id ascending (missing ids, -inf, stay last)."""
    order = np.lexsort((ids, -sims), axis=1)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / k for ids [Q, k]; a missing id (-1) is a miss."""
    if approx_ids.shape != exact_ids.shape:
        raise ValueError(f"shapes differ: {approx_ids.shape} vs {exact_ids.shape}")
    hit = (approx_ids[:, :, None] == exact_ids[:, None, :]).any(-1) & (approx_ids >= 0)  # [Q, k]
    return float(hit.mean()) if hit.size else float("nan")


def recall_sample(n: int, cfg: IndexConfig) -> np.ndarray:
    """The seeded, sorted rows whose neighbours are checked against exact search."""
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(n, size=min(cfg.recall_sample, n), replace=False))


@dataclass(frozen=True)
class Neighbours:
    """Neighbours of every row, found in one process (`search_neighbours`)."""

    ids: np.ndarray  # [N, L] int64, row i = neighbours of manifest row i (itself normally first)
    sims: np.ndarray  # [N, L] float32
    recall: float | None  # recall@L of an approximate index on `recall_sample` queries; None for flat
    missing: int  # number of -1 ids


def search_neighbours(emb: np.ndarray, cfg: IndexConfig) -> Neighbours:
    """Top-L neighbours of every row of `emb` [N, D] among all rows (exact or approximate), in
    this process: what the `index` stage's jobs (`train_index`, `query_positions`) compute.

    `flat` is exact: `exact_self_knn` on the CPU, faiss's IndexFlatIP on a GPU; rows in
    `exact_knn`'s order either way (similarity descending, ties by id).
    """
    k = cfg.num_neighbours
    if cfg.type == "flat" and faiss.get_num_gpus() == 0:
        return Neighbours(*exact_self_knn(emb, k, cfg.block_size, cfg.seed), None, 0)
    index = build_index(emb, cfg)
    if cfg.type == "flat":
        ids, sims = sort_rows(*search_index(index, emb, k, cfg.batch_size))
        return Neighbours(ids, sims, None, 0)
    ids, sims = search_rows(index, emb, np.arange(len(emb)), cfg)
    recall = None
    if cfg.recall_sample > 0:
        sample = recall_sample(len(emb), cfg)
        exact, _ = exact_knn(emb, emb[sample], k, cfg.block_size, cfg.batch_size)
        recall = recall_at_k(ids[sample], exact)
        log.info("%s index: recall@%d = %.4f on %d queries", cfg.type, k, recall, len(sample))
    missing = int((ids < 0).sum())
    if missing:
        log.warning("%s index: %d missing neighbours (id -1); curation ignores them", cfg.type, missing)
    return Neighbours(ids, sims, recall, missing)


# ----------------------------------------------------------------------------------------------
# the `index` stage as jobs: train once, queries as an array


INDEX_FILE = "index.faiss"  # ivf, ivfpq, hnsw: the populated index every query task reads
ORDER_FILE = "order.npy"  # flat: the row order the blocked exact search cuts into blocks
META_FILE = "meta.json"


def query_unit(cfg: IndexConfig) -> int:
    """Rows per unit of query work: a block of the exact search (flat), else a search batch."""
    return cfg.block_size if cfg.type == "flat" else cfg.batch_size


def train_index(emb: np.ndarray, cfg: IndexConfig, folder: Path | str) -> dict[str, Any]:
    """The one training job: writes into `folder` what the query tasks read, and returns the meta.

    flat: `order.npy` (the similarity order of `exact_self_knn`); ivf, ivfpq, hnsw: `index.faiss`,
    the index trained on a sample and holding every row (trained and filled once; the query tasks
    only read it), and recall@L on `recall_sample` queries against exact search.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in (INDEX_FILE, ORDER_FILE, META_FILE):
        (folder / old).unlink(missing_ok=True)
    n, dim = emb.shape
    k = cfg.num_neighbours
    meta: dict[str, Any] = {"type": cfg.type, "rows": n, "dim": dim, "num_neighbours": k, "recall_at_l": None}
    if cfg.type == "flat":
        _atomic_save(folder / ORDER_FILE, self_knn_order(emb, k, cfg.block_size, cfg.seed))
    else:
        t0 = time.perf_counter()
        index = build_index(emb, cfg, to_gpu=False)
        meta["train_seconds"] = time.perf_counter() - t0
        tmp = folder / (INDEX_FILE + ".tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, folder / INDEX_FILE)
        if cfg.recall_sample > 0:
            sample = recall_sample(n, cfg)
            approx, _ = search_rows(_on_gpu(index, cfg), emb, sample, cfg)
            exact, _ = exact_knn(emb, emb[sample], k, cfg.block_size, cfg.batch_size)
            meta["recall_at_l"] = recall_at_k(approx, exact)
            meta["recall_sample"] = len(sample)
            log.info("%s index: recall@%d = %.4f on %d queries", cfg.type, k, meta["recall_at_l"], len(sample))
    (folder / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def row_order(folder: Path | str, n: int) -> np.ndarray:
    """[N] the order in which query units cut the rows: flat's similarity order, else the identity."""
    path = Path(folder) / ORDER_FILE
    return np.load(path) if path.is_file() else np.arange(n)


def query_positions(emb: np.ndarray, cfg: IndexConfig, folder: Path | str, lo: int, hi: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # rows [m], ids [m, L], sims [m, L]
    """One query task: the neighbours of rows `order[lo:hi]` (lo a multiple of `query_unit(cfg)`)
    from what `train_index` wrote."""
    k = cfg.num_neighbours
    order = row_order(folder, len(emb))
    rows = order[lo:hi]
    if cfg.type == "flat":
        if faiss.get_num_gpus() > 0:  # exact on the GPU: every row in a GPU flat index
            ids, sims = search_index(build_index(emb, cfg), emb[rows], k, cfg.batch_size)
            return rows, *sort_rows(ids, sims)
        unit = query_unit(cfg)
        if lo % unit:
            raise ValueError(f"flat: query range starts at {lo}, not a multiple of index.block_size={unit}")
        return self_knn_blocks(emb, k, unit, order, range(lo // unit, -(-hi // unit)))
    index = faiss.read_index(str(Path(folder) / INDEX_FILE))
    if cfg.type == "hnsw":
        index.hnsw.efSearch = cfg.ef_search
    else:
        index.nprobe = cfg.nprobe
    return rows, *search_rows(_on_gpu(index, cfg), emb, rows, cfg)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def train_index_job(emb_path: Path, cfg: IndexConfig, folder: Path) -> dict[str, Any]:
    """`train_index` on the memory-mapped embeddings (a job of the `index` stage)."""
    return train_index(np.load(emb_path, mmap_mode="r"), cfg, folder)


def query_job(emb_path: Path, cfg: IndexConfig, folder: Path, work: Path, part: tuple[int, int, int]) -> dict[str, Any]:
    """One array task: `query_positions` of positions [lo, hi), written to `work/part-<t>-{ids,sims}.npy`."""
    t, lo, hi = part
    rows, ids, sims = query_positions(np.load(emb_path, mmap_mode="r"), cfg, folder, lo, hi)
    paths = {"ids": work / f"part-{t:05d}-ids.npy", "sims": work / f"part-{t:05d}-sims.npy"}
    _atomic_save(paths["ids"], ids)
    _atomic_save(paths["sims"], sims)
    return {"lo": lo, "hi": hi, **{k: str(v) for k, v in paths.items()}}


def run_index(emb_path: Path | str, cfg: IndexConfig, launcher: Any, trained: Path | str,
              neighbours_out: Path | str, sims_out: Path | str) -> dict[str, Any]:
    """The `index` stage: train once (one job), query in `launcher.stages.index.tasks` array tasks,
    join the parts in row order into `[N, L]` neighbour ids and similarities. Returns the metrics."""
    from cocu.launch.executor import deal, map_shards, run_job, stage_launcher, stage_resources

    emb_path, trained = Path(emb_path), Path(trained)
    neighbours_out, sims_out = Path(neighbours_out), Path(sims_out)
    n = np.load(emb_path, mmap_mode="r").shape[0]
    job_cfg = stage_launcher(launcher, "index")
    meta = run_job(functools.partial(train_index_job, emb_path, cfg, trained), cfg=job_cfg, name="index-train")
    unit = query_unit(cfg)
    runs = deal(-(-n // unit), stage_resources(launcher, "index").tasks)
    work = neighbours_out.with_name(f"{neighbours_out.stem}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    parts = map_shards(functools.partial(query_job, emb_path, cfg, trained, work),
                       [(t, r.start * unit, min(n, r.stop * unit)) for t, r in enumerate(runs)], job_cfg, "index")
    order = row_order(trained, n)
    k = cfg.num_neighbours
    outs = {}
    for key, path, dtype in (("ids", neighbours_out, np.int64), ("sims", sims_out, np.float32)):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, k))
        for part in parts:
            mm[order[part["lo"] : part["hi"]]] = np.load(part[key])
        mm.flush()
        del mm
        os.replace(tmp, path)
        outs[key] = np.load(path, mmap_mode="r")
    shutil.rmtree(work)
    ids, sims = outs["ids"], outs["sims"]
    missing = int((ids < 0).sum())
    if missing:
        log.warning("%s index: %d missing neighbours (id -1); curation ignores them", cfg.type, missing)
    self_first = float(np.mean(ids[:, 0] == np.arange(n)))
    mean_sim = float(sims[:, 1:].mean()) if k > 1 else None
    return {"num_images": n, "num_neighbours": k, "type": cfg.type, "recall_at_l": meta["recall_at_l"],
            "missing": missing, "self_is_first": float(self_first), "mean_similarity": mean_sim,
            "tasks": len(runs)}
