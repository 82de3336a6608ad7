"""Teacher quality on the synthetic world, from embeddings and hidden ground truth (pure).

- zero-shot image->concept: the top-1 concept by cosine with the prompt embeddings is among the
  image's present concepts (and is the most salient one), against a uniformly random concept;
- image->image neighbours (top-L, self excluded): mean Jaccard of the ground-truth concept sets
  and the share of neighbours sharing at least one concept, against random neighbours.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from cocu.concepts.retrieval import exact_self_knn


def multi_hot(sets: Sequence[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """[N, V] bool: sets[i] contains names[v] (strings outside `names` are ignored)."""
    index = {c: v for v, c in enumerate(names)}
    out = np.zeros((len(sets), len(names)), dtype=bool)
    for i, s in enumerate(sets):
        out[i, [index[c] for c in s if c in index]] = True
    return out


def zero_shot_concepts(
    image_emb: np.ndarray,  # [N, D] unit-norm
    concept_emb: np.ndarray,  # [V, D] unit-norm prompt embeddings
    names: Sequence[str],  # [V] concept names, row order of concept_emb
    present: Sequence[Sequence[str]],  # [N] ground-truth present concepts per image
    salient: Optional[Sequence[str]] = None,  # [N] the most salient present concept per image
) -> dict[str, float]:
    """Top-1 zero-shot concept accuracy, with the accuracy a uniformly random concept would get."""
    sims = image_emb.astype(np.float32) @ concept_emb.astype(np.float32).T  # [N, V]
    top1 = np.argmax(sims, axis=1)  # [N]
    gt = multi_hot(present, names)  # [N, V]
    out = {
        "zeroshot_top1_present": float(gt[np.arange(len(top1)), top1].mean()),
        "zeroshot_random_present": float(gt.sum(1).mean() / len(names)),
        "zeroshot_map_present": float(average_precision(sims, gt).mean()),
        "zeroshot_random_map_present": float(random_average_precision(gt.sum(1), len(names)).mean()),
        "zeroshot_concept_auc": float(np.nanmean(concept_auc(sims, gt))),  # macro over concepts; chance 0.5
    }
    if salient is not None:
        out["zeroshot_top1_salient"] = float(np.mean(np.asarray(names)[top1] == np.asarray(salient)))
        out["zeroshot_random_salient"] = 1.0 / len(names)
    return out


def concept_auc(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """[V] ROC AUC per concept: how well the column `scores[:, v]` [N] ranks the images that
    contain concept v (`relevant[:, v]`) above those that do not (ties count half); NaN for a
    concept present in all or none of the images. 0.5 = chance."""
    n = len(scores)
    order = np.argsort(scores, axis=0, kind="stable")  # [N, V]
    ranks = np.empty_like(order, dtype=np.float64)
    np.put_along_axis(ranks, order, np.arange(1, n + 1, dtype=np.float64)[:, None], 0)
    # average ranks over ties
    sorted_scores = np.take_along_axis(scores, order, 0)
    for v in range(scores.shape[1]):  # V is the vocabulary (tens to thousands): one pass per concept
        uniq, start, counts = np.unique(sorted_scores[:, v], return_index=True, return_counts=True)
        if len(uniq) < n:
            mean_rank = start + (counts + 1) / 2.0
            ranks[order[:, v], v] = np.repeat(mean_rank, counts)
    pos = relevant.sum(0).astype(np.float64)  # [V]
    neg = n - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * relevant).sum(0) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """[N] average precision of ranking the V items of each row by `scores` [N, V] (descending,
    ties by index), `relevant` [N, V] bool; rows without a relevant item get NaN."""
    order = np.argsort(-scores, axis=1, kind="stable")  # [N, V]
    rel = np.take_along_axis(relevant, order, 1)  # [N, V] relevance in rank order
    hits = np.cumsum(rel, axis=1)  # [N, V]
    precision = hits / np.arange(1, rel.shape[1] + 1)  # precision at each rank
    n_rel = rel.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, (precision * rel).sum(1) / n_rel, np.nan)


def random_average_precision(n_relevant: np.ndarray, num_items: int) -> np.ndarray:
    """[N] expected average precision of a uniformly random ranking with R = `n_relevant` [N]
    relevant items among V = `num_items`: (R - 1)/(V - 1) + (V - R)/(V (V - 1)) * H_V, where H_V
    is the V-th harmonic number."""
    r = np.asarray(n_relevant, dtype=np.float64)
    v = float(num_items)
    if v == 1:
        return np.ones_like(r)
    harmonic = np.sum(1.0 / np.arange(1, num_items + 1))
    return np.where(r > 0, (r - 1) / (v - 1) + (v - r) / (v * (v - 1)) * harmonic, np.nan)


def knn_excluding_self(emb: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """[N, k] ids of the top-k inner-product neighbours of each row, the row itself excluded."""
    ids, _ = exact_self_knn(emb, min(k + 1, len(emb)), block_size=block)  # [N, k+1]
    is_self = ids == np.arange(len(ids))[:, None]
    ids = np.take_along_axis(ids, np.argsort(is_self, axis=1, kind="stable"), 1)  # self moves last
    return ids[:, :k]


def random_neighbours(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """[n, k] ids drawn uniformly from the other n - 1 rows."""
    ids = rng.integers(0, n - 1, size=(n, k))
    return ids + (ids >= np.arange(n)[:, None])


def neighbour_overlap(neighbours: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean Jaccard of ground-truth concept sets of each (anchor, neighbour) pair, and the share of
    pairs sharing at least one concept. neighbours [N, L] int, gt [N, V] bool."""
    a = gt[:, None, :]  # [N, 1, V]
    b = gt[neighbours]  # [N, L, V]
    inter = (a & b).sum(-1)
    union = (a | b).sum(-1)
    jac = np.where(union > 0, inter / np.maximum(union, 1), 1.0)  # two empty sets are identical
    return {"jaccard": float(jac.mean()), "share_any": float((inter > 0).mean())}


def neighbour_quality(
    image_emb: np.ndarray,  # [N, D] unit-norm
    present: Sequence[Sequence[str]],  # [N]
    k: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """Precision@k of image->image neighbours against random neighbours (self excluded)."""
    names = sorted({c for s in present for c in s})
    gt = multi_hot(present, names)
    knn = neighbour_overlap(knn_excluding_self(image_emb, k), gt)
    rnd = neighbour_overlap(random_neighbours(len(gt), k, np.random.default_rng(seed)), gt)
    return {
        "neighbour_jaccard": knn["jaccard"],
        "neighbour_share_any": knn["share_any"],
        "neighbour_random_jaccard": rnd["jaccard"],
        "neighbour_random_share_any": rnd["share_any"],
    }


def teacher_quality(
    image_emb: np.ndarray,  # [N, D]
    concept_emb: np.ndarray,  # [V, D]
    names: Sequence[str],  # [V]
    present: Sequence[Sequence[str]],  # [N]
    salient: Optional[Sequence[str]] = None,  # [N]
    k: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """All teacher-quality metrics in one flat dict."""
    return {**zero_shot_concepts(image_emb, concept_emb, names, present, salient),
            **neighbour_quality(image_emb, present, k, seed)}
