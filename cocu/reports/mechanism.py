"""Where do the gains come from? Per-concept IoU gains against how often captions name the concept
and how often curation recovers it (synthetic world only: it needs the hidden ground truth).

Per concept c of the world:
- `mention_rate`: of the pre-training pairs whose image shows c, the share whose caption names c;
- `archive_recall`: of the pairs whose image shows c and whose caption does not name it, the share
  whose curated archive holds c (vision-driven expansion found it);
- `prompt_recall`: over the same pairs, the mean probability that CoCu's cluster-guided sampling puts
  c among the K prompts of a training step (exact, from the stored scores and clusters: a cluster is
  drawn by the softmax of its mean score, a concept by the softmax of scores inside it, K times);
- `gain/<variant>`: the mean over seeds of IoU(variant) - IoU(baseline) of c (paired by seed), with
  its 95% t-interval, in two views: on the benchmark that holds every concept (`concept_gains`), where
  stuff and things compete for the same pixels, and on the benchmark of c's own kind only
  (`kind_gains`: stuff among the stuff classes with thing pixels ignored, things among the things and
  the background), which isolates whether the model recognises c from the things-vs-stuff contest.

`kind_contrast` condenses the second view into one paired statistic per seed: the mean gain over the
concepts of one kind minus the mean gain over the other kind's. `kind_pixel_shares` measures the
contest of the first view: the share of the pixels each kind holds and each kind is predicted on.

The paper's thesis predicts that the oracle's and CoCu's gains sit on under-named concepts (low
mention rate) and, for CoCu, on concepts curation recovers (high prompt recall).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy import stats as sps

from cocu.reports import stats

GT_COLUMNS = ("gt_present", "gt_mentioned")


def has_ground_truth(manifest: Path | str) -> bool:
    """Whether the manifest carries the synthetic world's hidden ground truth (schema only)."""
    path = Path(manifest)
    return path.is_file() and set(GT_COLUMNS) <= set(pq.read_schema(path).names)


def mention_rates(manifest: Path | str) -> pd.DataFrame:
    """concept, present (pairs showing it), named (of those, captions naming it), mention_rate."""
    table = pq.read_table(manifest, columns=["key", *GT_COLUMNS])
    present = pd.Series([c for row in table.column("gt_present").to_pylist() for c in row]).value_counts()
    named = pd.Series([c for row in table.column("gt_mentioned").to_pylist() for c in row]).value_counts()
    out = pd.DataFrame({"present": present, "named": named.reindex(present.index).fillna(0)})
    out["mention_rate"] = out["named"] / out["present"]
    return out.rename_axis("concept").reset_index()


def inclusion_probabilities(scores: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """[A] probability that each archive concept is among k cluster-guided draws with replacement
    (cocu.concepts.sampling.sample_cluster): 1 - (1 - p(cluster) p(concept | cluster))^k."""
    if len(scores) == 0:
        return np.zeros(0)
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(clusters, dtype=np.int64)
    ids, inv = np.unique(c, return_inverse=True)
    means = np.bincount(inv, weights=s) / np.bincount(inv)
    p_cluster = np.exp(means - means.max())
    p_cluster /= p_cluster.sum()  # [C]
    e = np.exp(s - s.max())
    p_in = e / np.bincount(inv, weights=e)[inv]  # softmax within the concept's cluster
    p = p_cluster[inv] * p_in
    return 1.0 - (1.0 - p) ** k


def curation_recall(manifest: Path | str, archives: Path | str, k: int) -> pd.DataFrame:
    """concept, missed (pairs showing it that captions do not name), archive_recall, prompt_recall."""
    from cocu.concepts.archive import read_archives

    truth = pq.read_table(manifest, columns=["key", *GT_COLUMNS]).to_pydict()
    arch = read_archives(archives, columns=["key", "concepts", "scores", "clusters"]).to_pydict()
    index = {key: i for i, key in enumerate(arch["key"])}
    missed: dict[str, int] = {}
    in_archive: dict[str, float] = {}
    in_prompts: dict[str, float] = {}
    for key, present, named in zip(truth["key"], truth["gt_present"], truth["gt_mentioned"]):
        i = index.get(key)
        if i is None:
            probs: dict[str, float] = {}
        else:
            p = inclusion_probabilities(np.asarray(arch["scores"][i]), np.asarray(arch["clusters"][i]), k)
            probs = dict(zip(arch["concepts"][i], p.tolist()))
        for c in set(present) - set(named):
            missed[c] = missed.get(c, 0) + 1
            in_archive[c] = in_archive.get(c, 0.0) + float(c in probs)
            in_prompts[c] = in_prompts.get(c, 0.0) + probs.get(c, 0.0)
    rows = [{"concept": c, "missed": n, "archive_recall": in_archive[c] / n, "prompt_recall": in_prompts[c] / n}
            for c, n in sorted(missed.items())]
    return pd.DataFrame(rows, columns=["concept", "missed", "archive_recall", "prompt_recall"])


def class_iou(results_dir: Path | str, variant: str, seed: int, benchmark: str) -> Optional[dict[str, float]]:
    """Per-class IoU (x 100) of one result file; None when it is missing."""
    path = Path(results_dir) / variant / f"s{seed}" / f"{benchmark}.json"
    if not path.is_file():
        return None
    iou = json.loads(path.read_text()).get("IoU") or {}
    return {str(k): (math.nan if v is None else float(v)) for k, v in iou.items()}


def _finite_mean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    ok = [v for v in values if math.isfinite(v)]
    return float(np.mean(ok)) if ok else math.nan


def seed_gains(results_dir: Path | str, seeds: dict[str, Sequence[int]], benchmark: str,
               variant: str) -> dict[int, dict[str, float]]:
    """seed -> concept -> IoU(variant) - IoU(baseline) of that seed (finite gains only), for the
    seeds of `variant` (in `seeds` order) whose result file exists for both."""
    out = {}
    for s in seeds.get(variant, ()):
        if s not in seeds.get("baseline", ()):
            continue
        v, b = class_iou(results_dir, variant, s, benchmark), class_iou(results_dir, "baseline", s, benchmark)
        if v is not None and b is not None:
            out[s] = {c: v[c] - b[c] for c in v if c in b and math.isfinite(v[c] - b[c])}
    return out


def concept_gains(results_dir: Path | str, seeds: dict[str, Sequence[int]], benchmark: str,
                  variants: Sequence[str]) -> pd.DataFrame:
    """concept, iou/baseline, and per variant gain/<v>, gain_lo/<v>, gain_hi/<v>, n/<v> (paired by seed)."""
    base = {s: class_iou(results_dir, "baseline", s, benchmark) for s in seeds.get("baseline", ())}
    base = {s: v for s, v in base.items() if v is not None}
    concepts = sorted({c for v in base.values() for c in v})
    frame = pd.DataFrame({"concept": concepts})
    frame["iou/baseline"] = [_finite_mean([b.get(c, math.nan) for b in base.values()]) for c in concepts]
    for v in variants:
        gains = seed_gains(results_dir, seeds, benchmark, v)
        ivs = [stats.t_interval([g[c] for g in gains.values() if c in g]) for c in concepts]
        frame[f"gain/{v}"] = [iv.estimate for iv in ivs]
        frame[f"gain_lo/{v}"] = [iv.lo for iv in ivs]
        frame[f"gain_hi/{v}"] = [iv.hi for iv in ivs]
        frame[f"n/{v}"] = [iv.n for iv in ivs]
    return frame


def kind_gains(results_dir: Path | str, seeds: dict[str, Sequence[int]], kind_benchmarks: Mapping[str, str],
               kinds: Mapping[str, str], variants: Sequence[str]) -> pd.DataFrame:
    """`concept_gains` with each concept judged on its own kind's benchmark (kind -> benchmark):
    the concepts of kind k from `kind_benchmarks[k]`, plus a `benchmark` column. Classes that are no
    concept of that kind (the background) are left out."""
    parts = []
    for kind, bench in kind_benchmarks.items():
        g = concept_gains(results_dir, seeds, bench, variants)
        parts.append(g[g["concept"].map(kinds.get) == kind].assign(benchmark=bench))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["concept", "benchmark"])


def kind_contrast(results_dir: Path | str, seeds: dict[str, Sequence[int]], kind_benchmarks: Mapping[str, str],
                  kinds: Mapping[str, str], variant: str, first: str, second: str) -> stats.Interval:
    """`kind_contrasts` with its 95% t-interval over the seeds."""
    return stats.t_interval(list(kind_contrasts(results_dir, seeds, kind_benchmarks, kinds, variant, first,
                                                second).values()))


def kind_contrasts(results_dir: Path | str, seeds: dict[str, Sequence[int]], kind_benchmarks: Mapping[str, str],
                   kinds: Mapping[str, str], variant: str, first: str, second: str) -> dict[int, float]:
    """seed -> (paired with the baseline's seed) the mean IoU gain of `variant` over the concepts of
    kind `first`, each on its kind's benchmark, minus the same over kind `second`; only seeds where
    both kinds have a finite gain."""
    per_kind = [(kind, seed_gains(results_dir, seeds, kind_benchmarks[kind], variant)) for kind in (first, second)]
    diffs = {}
    for s in sorted(set.intersection(*(set(g) for _, g in per_kind))):
        means = [[d for c, d in g[s].items() if kinds.get(c) == kind] for kind, g in per_kind]
        if all(means):
            diffs[s] = float(np.mean(means[0])) - float(np.mean(means[1]))
    return diffs


def kind_pixel_shares(results_dir: Path | str, variant: str, seeds: Sequence[int], benchmark: str,
                      class_names: Sequence[str], kinds: Mapping[str, str]) -> pd.DataFrame:
    """From the per-image counts of `benchmark` (classes in `class_names` order), per kind: its share
    of the labelled pixels (`labelled`), of the predicted pixels (`predicted`), and its pixel recall
    and precision, each the mean over the seeds whose counts exist; `n` = those seeds."""
    from cocu.eval.runner import read_image_counts

    kind_of = np.array([kinds.get(c, "") for c in class_names])
    rows: dict[str, list[list[float]]] = {}
    for s in seeds:
        path = Path(results_dir) / variant / f"s{s}" / f"{benchmark}.counts.npz"
        if not path.is_file():
            continue
        tp, lab, pred = read_image_counts(path)[0].sum(axis=0).astype(np.float64)  # [K] each
        if len(tp) != len(class_names):
            raise ValueError(f"{path}: {len(tp)} classes, {len(class_names)} class names")
        for kind in sorted(set(kind_of) - {""}):
            m = kind_of == kind
            rows.setdefault(kind, []).append([lab[m].sum() / max(lab.sum(), 1.0), pred[m].sum() / max(pred.sum(), 1.0),
                                              tp[m].sum() / max(lab[m].sum(), 1.0),
                                              tp[m].sum() / max(pred[m].sum(), 1.0)])
    cols = ["labelled", "predicted", "recall", "precision"]
    out = [{"kind": k, **dict(zip(cols, np.mean(v, axis=0))), "n": len(v)} for k, v in rows.items()]
    return pd.DataFrame(out, columns=["kind", *cols, "n"])


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(rho, two-sided p) over the finite pairs; NaN with fewer than 3 or a constant side."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:  # undefined for a constant input
        return math.nan, math.nan
    res = sps.spearmanr(a[ok], b[ok])
    return float(res.statistic), float(res.pvalue)
