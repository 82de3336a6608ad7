"""Batched k-means over the concept embeddings of many archives at once (docs/method.md §4).

Each archive, given by the Gram matrix of its concept embeddings (a padded row of a [B, A, A]
tensor with a [B, A] mask: k-means needs nothing else), gets its own k-means with
`ceil(ratio * |A|)` clusters when |A| > `min_size`; smaller archives put each concept in its own
cluster. The official code uses scikit-learn with a fixed `random_state`; here the
initialisation is deterministic farthest-point (Gonzalez) seeding, so there is no seed at all:
the first centre is the archive's first concept (the top-scored one, archives arrive sorted),
each next centre the concept farthest from the centres so far (ties: lowest index).

Lloyd iterations run in the Gram space of each archive: a centre is a weight vector over the
archive's points (one-hot at init, 1/n_k over its members after an update), so
`|x_a - c_k|^2 = G[a,a] - 2 (G W^T)[a,k] + (W G W^T)[k,k]` with `G = X X^T` [A, A]. This is the
same k-means as in embedding space, with per-iteration cost A*A*K instead of A*D*K. An emptied
cluster keeps its previous centre (as scikit-learn's Lloyd does not: it relocates; a documented
difference). Labels are finally renumbered by first occurrence in the archive order, so the
top concept is always in cluster 0.
"""

from __future__ import annotations

import numpy as np


def cluster_archives(
    gram: np.ndarray,  # [B, A, A] Gram matrices X X^T of the concept embeddings, archive order
    mask: np.ndarray,  # [B, A] bool
    ratio: float,
    min_size: int,
    iters: int,
) -> np.ndarray:  # [B, A] int32 cluster ids, -1 on padding
    """k-means with ceil(ratio * |A|) clusters per archive; |A| <= min_size: one cluster per concept."""
    sizes = mask.sum(axis=1)
    labels = kmeans_batched(gram, mask, num_clusters(sizes, ratio, min_size), iters)
    own = np.broadcast_to(np.arange(mask.shape[1], dtype=np.int32), mask.shape)
    return np.where(mask & (sizes <= min_size)[:, None], own, labels)


def num_clusters(sizes: np.ndarray, ratio: float, min_size: int) -> np.ndarray:
    """[B] clusters per archive: ceil(ratio * |A|) if |A| > min_size, else |A| (one per concept)."""
    k = np.ceil(ratio * sizes - 1e-9).astype(np.int64)  # tolerance: 0.5 * 4 must stay 2
    return np.where(sizes > min_size, np.clip(k, 1, None), sizes)


def kmeans_batched(
    gram: np.ndarray,  # [B, A, A] Gram matrices X X^T of the concept embeddings (padding arbitrary)
    mask: np.ndarray,  # [B, A] bool, True = a real concept
    k: np.ndarray,  # [B] int, clusters per archive (<= archive size)
    iters: int,
) -> np.ndarray:  # [B, A] int32 cluster ids, -1 on padding
    """Deterministic Lloyd k-means of every archive in the batch at once (see module doc)."""
    bsz, amax = mask.shape
    labels = np.full((bsz, amax), -1, dtype=np.int32)
    kmax = int(k.max(initial=0))
    if kmax == 0:
        return labels
    sq = np.einsum("baa->ba", gram)  # [B, A] squared norms
    # farthest-point init: centres[b, i] = index of the point chosen as centre i
    centres = np.zeros((bsz, kmax), dtype=np.int64)  # [B, K]
    min_d = np.where(mask, _sq_dist_to_point(gram, sq, centres[:, 0]), -np.inf)  # [B, A]
    for i in range(1, kmax):
        centres[:, i] = np.argmax(min_d, axis=1)
        min_d = np.minimum(min_d, _sq_dist_to_point(gram, sq, centres[:, i]))
    valid_c = np.arange(kmax)[None, :] < k[:, None]  # [B, K] centre exists
    weights = np.zeros((bsz, kmax, amax), dtype=gram.dtype)  # [B, K, A] centre = weights @ X
    np.put_along_axis(weights, centres[:, :, None], 1.0, axis=2)
    weights *= valid_c[:, :, None]

    assign = np.full((bsz, amax), -1, dtype=np.int64)
    for _ in range(iters):
        gw = np.matmul(gram, weights.transpose(0, 2, 1))  # [B, A, K] x_a . c_k
        c_sq = np.einsum("bka,bak->bk", weights, gw)  # [B, K] |c_k|^2
        dist = sq[:, :, None] - 2.0 * gw + c_sq[:, None, :]  # [B, A, K]
        dist = np.where(valid_c[:, None, :], dist, np.inf)
        new = np.where(mask, np.argmin(dist, axis=2), -1)  # [B, A]
        if np.array_equal(new, assign):
            break
        assign = new
        onehot = (assign[:, None, :] == np.arange(kmax)[None, :, None]) & mask[:, None, :]  # [B, K, A]
        counts = onehot.sum(axis=2, keepdims=True)  # [B, K, 1]
        weights = np.where(counts > 0, onehot / np.maximum(counts, 1), weights).astype(gram.dtype)
    return _renumber(assign, mask, kmax)


def _sq_dist_to_point(gram: np.ndarray, sq: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """[B, A] squared distance of every point to point idx[b] of its own archive."""
    rows = np.arange(len(idx))
    return sq - 2.0 * gram[rows, :, idx] + sq[rows, idx][:, None]


def _renumber(assign: np.ndarray, mask: np.ndarray, kmax: int) -> np.ndarray:
    """Cluster ids by first occurrence in archive order: [2, 2, 0, 1] -> [0, 0, 1, 2]."""
    bsz, amax = assign.shape
    first = np.full((bsz, kmax), amax, dtype=np.int64)  # [B, K] first position of each cluster
    rows, cols = np.nonzero(mask)
    np.minimum.at(first, (rows, assign[rows, cols]), cols)
    rank = np.argsort(np.argsort(first, axis=1, kind="stable"), axis=1)  # [B, K] new id of old id
    out = np.take_along_axis(rank, np.clip(assign, 0, None), axis=1).astype(np.int32)
    return np.where(mask, out, -1)
