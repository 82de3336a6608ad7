"""Frozen configs of the concept-curation library (method.md §1-4, DESIGN §6).

The lead registers these in `cocu/config.py` / `params.yaml`; every field has a comment, and a
default only where one is natural (the official value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class VocabularyConfig:
    """How the concept list file becomes the set of matchable strings (method.md §1)."""

    plural: bool = True  # add the inflect plural of each concept's last word (official: yes)
    max_ngram: int = 4  # caption n-grams matched against the vocabulary: 1..max_ngram words


@dataclass(frozen=True)
class IndexConfig:
    """Image->image neighbour search (method.md §2; the `index` stage)."""

    type: Literal["flat", "ivf", "ivfpq", "hnsw"] = "flat"  # flat = exact inner product (the reference)
    num_neighbours: int = 8  # L in the paper: neighbours per anchor, the anchor itself included
    nlist: int = 1024  # ivf: number of inverted lists (coarse centroids)
    nprobe: int = 16  # ivf, ivfpq: lists visited per query
    pq_m: int = 64  # ivfpq: product-quantiser sub-vectors (bytes a vector at 8 bits); divides the dimension
    pq_bits: int = 8  # ivfpq: bits per sub-vector code
    refine: int = 4  # ivfpq: fetch refine * L candidates by code distance, re-rank them exactly (0: codes only)
    hnsw_m: int = 32  # hnsw: graph degree
    ef_construction: int = 80  # hnsw: candidate list size while building
    ef_search: int = 64  # hnsw: candidate list size while searching
    train_size: int = 100_000  # ivf, ivfpq: vectors sampled (seeded) to train the quantisers
    batch_size: int = 4096  # queries per search call / query block of the exact search
    block_size: int = 4096  # exact search: rows per matrix-multiply block (memory ~ block_size^2 floats)
    recall_sample: int = 1000  # approximate indexes: queries checked against exact search (0: skip)
    seed: int = 0  # training sample and recall sample


@dataclass(frozen=True)
class CurationConfig:
    """Expansion, ranking and clustering of the archives (method.md §2-4, DESIGN §6)."""

    membership: Literal["exact", "substring"] = "exact"  # substring = official quirk 1 ("cat" in "cattle")
    cluster: bool = True  # k-means over each archive's concept embeddings (method.md §4)
    cluster_ratio: float = 0.5  # clusters = ceil(ratio * |A|), only when |A| > min_cluster_size
    min_cluster_size: int = 2  # archives this small or smaller: each concept is its own cluster
    kmeans_iters: int = 20  # Lloyd iterations at most (stops earlier once no assignment changes)
    batch_size: int = 1024  # anchors curated together (memory ~ batch * max archive * D floats)
    shard_size: int = 100_000  # anchors per parquet shard (the unit of resume)
    top_k: int = 3  # K: concepts per sample at training time; metrics use the top-K new concepts


@dataclass(frozen=True)
class SamplingConfig:
    """Which concepts of the stored archive enter pre-training (method.md §4-5)."""

    method: Literal["topk", "cluster", "uniform"] = "topk"  # topk = official default; cluster = paper
    num_concepts: int = 3  # K prompts per sample; fewer available -> the caller pads with the caption
