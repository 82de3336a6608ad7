"""Vision-driven expansion and text-to-vision-guided ranking, batched over anchors (docs/method.md §2-3).

For anchor a with neighbours N(a) (its own row normally first), the archive A(a) is the union of
the neighbours' caption concepts; each concept c gets

    S_c = [u_c . v_j for j in N(a) if c is a concept of t_j] ++ [u_c . v_a]     (anchor last)
    g   = u_c . v_a,   l = g / mean(S_c),   M = max(0.0, max over c of max(S_c))
    score = g / M + l

and the archive is sorted by score, descending (ties: first appearance over neighbours in rank
order, then caption order). Quirk 2 of the official code (the anchor counted twice in S_c when
it is its own neighbour and names c) holds by construction. Guard for quirk 3: M = 0 happens only
when every similarity is <= 0; the g/M term is then undefined and is dropped (score = l). A
missing neighbour (id -1, quirk 4) is ignored. Scores are unbounded: mean(S_c) = 0 gives +-inf
(NaN if g = 0 too, ranked last), as in the official formula. Quirks: docs/method.md §10.

Everything is vectorised over a batch of anchors: caption concepts are CSR arrays of vocabulary
ids, archives are padded [B, A] arrays, and scores come from batched matrix products.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cocu.concepts.clustering import cluster_archives
from cocu.config import CurationConfig


@dataclass(frozen=True)
class CSR:
    """Variable-length rows of ints: row i is ids[offsets[i]:offsets[i + 1]]."""

    offsets: np.ndarray  # [N + 1] int64
    ids: np.ndarray  # [nnz] int32

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> CSR:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(offsets[-1]))
        return cls(offsets, ids)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


@dataclass(frozen=True)
class ArchiveBatch:
    """Curated archives of B anchors, padded to the largest archive A of the batch."""

    concepts: np.ndarray  # [B, A] int32 vocabulary ids, sorted by score descending, -1 = padding
    scores: np.ndarray  # [B, A] float32, NaN on padding
    clusters: np.ndarray  # [B, A] int32 cluster ids (0 = the top concept's cluster), -1 on padding
    sizes: np.ndarray  # [B] int64 archive sizes |A(a)|

    def to_csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(offsets [B + 1], concepts [nnz], scores [nnz], clusters [nnz]), row-major."""
        mask = self.concepts >= 0
        offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        return offsets, self.concepts[mask], self.scores[mask], self.clusters[mask]


def substring_relation(concepts: Sequence[str]) -> np.ndarray:
    """[V, V] bool, rel[x, y] = concept x is a substring of concept y (docs/method.md §10, quirk 1).

    With concepts free of ", " this reproduces the official membership test
    `c in ", ".join(concepts(t_j))` as: any concept y of t_j with rel[c, y].
    """
    if any("," in c or "\n" in c for c in concepts):
        raise ValueError("concepts must not contain ',' or newlines for the substring relation")
    text = "\n".join(concepts)
    starts = np.cumsum([0] + [len(c) + 1 for c in concepts[:-1]])  # [V] start offset of each line
    rel = np.zeros((len(concepts), len(concepts)), dtype=bool)
    for x, concept in enumerate(concepts):
        pos = text.find(concept)
        while pos >= 0:
            rel[x, np.searchsorted(starts, pos, side="right") - 1] = True
            pos = text.find(concept, pos + 1)
    return rel


def score_concepts(
    g: np.ndarray,  # [B, A] u_c . v_a, anchor-concept similarity
    s_ref: np.ndarray,  # [B, A, L] u_c . v_j for every neighbour j
    present: np.ndarray,  # [B, A, L] bool, j is a reference image of c (c among concepts(t_j))
    amask: np.ndarray,  # [B, A] bool, real archive entries
) -> tuple[np.ndarray, np.ndarray]:  # score [B, A], M [B]
    """The official score g / M + l of docs/method.md §3 for padded archives (M = 0: g / M dropped)."""
    mean = (np.where(present, s_ref, 0.0).sum(-1) + g) / (present.sum(-1) + 1)  # mean(S_c), anchor last
    s_max = np.maximum(np.where(present, s_ref, -np.inf).max(-1, initial=-np.inf), g)  # max(S_c)
    m = np.maximum(0.0, np.where(amask, s_max, -np.inf).max(-1, initial=-np.inf))  # running max from 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        over_m = np.where(m[:, None] > 0, g / np.where(m > 0, m, 1.0)[:, None], 0.0)
        return over_m + g / mean, m


def curate_batch(
    images: np.ndarray,  # [B, 1 + L, D] unit-norm image embeddings: the anchor, then its neighbours
    neigh_ids: np.ndarray,  # [B, L] int64 neighbour rows (-1 = missing; their image rows arbitrary)
    captions: CSR,  # caption concept ids of all N pairs (rows indexed by neigh_ids)
    concept_emb: np.ndarray,  # [V, D] unit-norm text embeddings u_c
    cfg: CurationConfig,
    relation: np.ndarray | None = None,  # [V, V] bool substring relation (membership="substring")
) -> ArchiveBatch:
    """Expansion, ranking (and clustering if `cfg.cluster`) of B anchors; see the module doc.

    Arithmetic runs in the floating type of the inputs (float32 embeddings -> float32).
    """
    bsz, num_l = neigh_ids.shape
    vocab = len(concept_emb)
    if cfg.membership == "substring" and relation is None:
        raise ValueError("membership='substring' needs the [V, V] relation (substring_relation)")

    # --- expansion: one row per (anchor b, neighbour j, caption concept c), in appearance order
    nb, nj = np.nonzero(neigh_ids >= 0)  # [P] valid (b, j), row-major = rank order
    rows = neigh_ids[nb, nj]
    starts, counts = captions.offsets[rows], captions.offsets[rows + 1] - captions.offsets[rows]
    tb, tj = np.repeat(nb, counts), np.repeat(nj, counts)  # [T]
    within = np.arange(len(tb)) - np.repeat(np.cumsum(counts) - counts, counts)
    tc = captions.ids[np.repeat(starts, counts) + within].astype(np.int64)  # [T]

    # --- archive = unique (b, c), ordered by first appearance
    key, first, inv = np.unique(tb * vocab + tc, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # [U] grouped by b (first is increasing in b)
    slot_of = np.empty_like(order)
    slot_of[order] = np.arange(len(order))
    ub, uc = key[order] // vocab, key[order] % vocab  # [U]
    sizes = np.bincount(ub, minlength=bsz).astype(np.int64)  # [B]
    uslot = np.arange(len(ub)) - (np.cumsum(sizes) - sizes)[ub]  # [U] position in its archive
    amax = int(sizes.max(initial=0))
    arch = np.full((bsz, amax), -1, dtype=np.int64)  # [B, A] concept ids, appearance order
    arch[ub, uslot] = uc
    amask = arch >= 0  # [B, A]

    # --- membership: present[b, a, j] = concept a of archive b is a concept of neighbour j
    present = np.zeros((bsz, amax, num_l), dtype=bool)  # [B, A, L]
    if cfg.membership == "exact":
        present[tb, uslot[slot_of[inv]], tj] = True
    else:
        hit = relation[arch[tb].clip(0), tc[:, None]] & amask[tb]  # [T, A]
        t, a = np.nonzero(hit)
        present[tb[t], a, tj[t]] = True

    # --- ranking (docs/method.md §3)
    dtype = np.result_type(images, concept_emb, np.float32)
    emb = torch.from_numpy(concept_emb[arch.clip(0)].astype(dtype, copy=False))  # [B, A, D] u_c
    # one product for anchor and neighbours, so that u_c.v_a is bit-identical to u_c.v_j when the
    # anchor is its own neighbour j (l = 1 exactly for a concept only the anchor names)
    sims = torch.bmm(emb, torch.from_numpy(images.astype(dtype, copy=False)).transpose(1, 2)).numpy()
    # sims: [B, A, 1 + L], the anchor first
    score, _ = score_concepts(sims[..., 0], sims[..., 1:], present, amask)  # [B, A]

    # --- sort by score descending; ties by first appearance; padding last
    neg = np.where(np.isnan(score), np.inf, -score)  # a NaN score (mean(S_c) = 0 = g) ranks last
    appearance = np.broadcast_to(np.arange(amax), arch.shape)
    perm = np.lexsort((appearance, neg, ~amask), axis=1)  # [B, A] last key is the primary one
    arch = np.take_along_axis(arch, perm, 1)
    score = np.where(amask, np.take_along_axis(score, perm, 1), np.nan)  # amask is a prefix
    if cfg.cluster:
        gram = torch.bmm(emb, emb.transpose(1, 2)).numpy()  # [B, A, A] u_c . u_c', appearance order
        gram = np.take_along_axis(np.take_along_axis(gram, perm[:, :, None], 1), perm[:, None, :], 2)
        clusters = cluster_archives(gram, amask, cfg.cluster_ratio, cfg.min_cluster_size, cfg.kmeans_iters)
    else:
        clusters = np.where(amask, 0, -1).astype(np.int32)
    return ArchiveBatch(arch.astype(np.int32), score.astype(np.float32), clusters, sizes)


def gather_rows(emb: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """emb[ids] -> [..., D] for ids [...] (-1 -> a zero row); float16 is widened to float32 by torch
    (about 3x faster than numpy's conversion)."""
    rows = np.asarray(emb[ids.clip(0).ravel()]).reshape(*ids.shape, emb.shape[1])
    if rows.dtype == np.float16:
        rows = torch.from_numpy(rows).float().numpy()
    else:
        rows = rows.astype(np.result_type(rows.dtype, np.float32), copy=False)
    rows[ids < 0] = 0.0
    return rows


def with_anchor(start: int, neigh_ids: np.ndarray) -> np.ndarray:
    """[B, 1 + L] image rows of a batch of anchors start, start + 1, ...: the anchor, then its neighbours."""
    anchors = np.arange(start, start + len(neigh_ids), dtype=np.int64)
    return np.concatenate([anchors[:, None], neigh_ids], axis=1)


def curate_all(
    image_emb: np.ndarray,  # [N, D] (memory-mapped .npy is fine)
    neigh_ids: np.ndarray,  # [N, L] int64
    captions: CSR,
    concept_emb: np.ndarray,  # [V, D]
    cfg: CurationConfig,
    start: int = 0,
    stop: int | None = None,
    relation: np.ndarray | None = None,
) -> Iterator[ArchiveBatch]:
    """`curate_batch` over rows [start, stop) in batches of `cfg.batch_size` (memory ~ one batch)."""
    stop = len(neigh_ids) if stop is None else stop
    concept_emb = np.asarray(concept_emb, dtype=np.float32)
    for b0 in range(start, stop, cfg.batch_size):
        ids = np.asarray(neigh_ids[b0 : min(b0 + cfg.batch_size, stop)], dtype=np.int64)  # [B, L]
        images = gather_rows(image_emb, with_anchor(b0, ids))  # [B, 1 + L, D]
        yield curate_batch(images, ids, captions, concept_emb, cfg, relation)
