"""Training-time choice of K concepts from a stored archive (docs/method.md §6).

Pure functions with an explicit `np.random.Generator`. Each returns at most k concept strings;
with fewer available it returns what there is and the caller pads with the caption.

- `sample_topk`: the official code's default, the top-k by score, deterministic.
- `sample_cluster`: the paper's cluster-guided sampling, k draws with replacement:
  cluster ~ softmax over clusters of the mean score in the cluster, then concept ~ softmax of
  the scores inside the drawn cluster. The same concept can be drawn twice (docs/method.md §6).
- `sample_uniform`: the expansion-only ablation, k concepts uniformly *without* replacement
  (like the baseline's caption nouns, docs/method.md §7), so no concept repeats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def sample_topk(concepts: Sequence[str], scores: Sequence[float], k: int) -> list[str]:
    """The k highest-scored concepts (ties: archive order)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    return [concepts[i] for i in order]


def cluster_probabilities(scores: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids [C] of the non-empty clusters, p [C] = softmax over clusters of their mean score)."""
    counts = np.bincount(clusters)
    ids = np.flatnonzero(counts)
    means = np.bincount(clusters, weights=scores)[ids] / counts[ids]
    return ids, _softmax(means)


def sample_cluster(
    concepts: Sequence[str],
    scores: Sequence[float],  # [A]
    clusters: Sequence[int],  # [A] cluster id per concept (>= 0)
    k: int,
    rng: np.random.Generator,
) -> list[str]:
    """k cluster-guided draws with replacement (paper, docs/method.md §6); [] for an empty archive.

    The concept inside each drawn cluster is sampled by the Gumbel-max trick, which is exactly
    a draw from the softmax of the member scores, for all k draws at once.
    """
    if len(concepts) == 0:
        return []
    s = np.asarray(scores, dtype=np.float64)  # [A]
    c = np.asarray(clusters, dtype=np.int64)  # [A]
    if not np.isfinite(s).all():  # a NaN would turn every probability into NaN (or choice() would fail)
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"sample_cluster: score of concept {concepts[bad]!r} is {s[bad]} (scores must be finite)")
    if len(s) != len(concepts) or len(c) != len(concepts) or (c < 0).any():
        raise ValueError(f"sample_cluster: {len(concepts)} concepts, {len(s)} scores, {len(c)} clusters "
                         f"(one non-negative cluster id and one score per concept)")
    ids, p = cluster_probabilities(s, c)
    drawn = rng.choice(ids, size=k, p=p)  # [k] cluster of each draw
    logits = np.where(c[None, :] == drawn[:, None], s[None, :] + rng.gumbel(size=(k, len(s))), -np.inf)
    return [concepts[i] for i in np.argmax(logits, axis=1)]


def sample_uniform(concepts: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    """min(k, |A|) concepts uniformly without replacement (expansion-only ablation)."""
    pick = rng.choice(len(concepts), size=min(k, len(concepts)), replace=False)
    return [concepts[i] for i in pick]

