"""Curation metrics (docs/method.md §11): archive sizes, rewrite rate, ground-truth recovery, leakage audit.

All counts are micro-averaged (summed over pairs, then divided) and additive over shards, so
`curation_metrics` streams the archive shards. Sets per pair are CSR rows of concept ids; a
set operation on many rows at once is an `np.isin` over keys `row * width + id`.

Ground truth (synthetic world only): `present` = concepts in the image, `mentioned` = those the
caption generator named. "Missed" = present minus the caption concepts (what CoCu should add);
"new" = archive concepts not among the caption concepts. The caption alone recovers no missed
concept by definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cocu.concepts.archive import CaptionConcepts, iter_archive_ids
from cocu.concepts.curation import CSR
from cocu.concepts.vocabulary import Vocabulary


def size_stats(sizes: np.ndarray) -> dict[str, float]:
    """Distribution of archive sizes [N]: mean, median, p10, p90, max, share of empty archives."""
    if len(sizes) == 0:
        return {k: float("nan") for k in ("mean", "median", "p10", "p90", "max", "share_empty")}
    p10, p50, p90 = np.percentile(sizes, [10, 50, 90])
    return {"mean": float(sizes.mean()), "median": float(p50), "p10": float(p10), "p90": float(p90),
            "max": float(sizes.max()), "share_empty": float((sizes == 0).mean())}


def names_to_csr(rows: Sequence[Sequence[str]], concept_names: Sequence[str]) -> CSR:
    """Lists of concept strings -> CSR ids; a name outside `concept_names` gets its own id >= V."""
    index = {c: i for i, c in enumerate(concept_names)}
    extra: dict[str, int] = {}
    for name in (c for r in rows for c in r if c not in index):
        extra.setdefault(name, len(index) + len(extra))
    return CSR.from_lists([[index[c] if c in index else extra[c] for c in r] for r in rows])


def _keys(csr: CSR, width: int) -> np.ndarray:
    """[nnz] int64 row * width + id."""
    return np.repeat(np.arange(len(csr), dtype=np.int64), csr.lengths()) * width + csr.ids


def _rank_in_row(csr: CSR, flags: np.ndarray) -> np.ndarray:
    """[nnz] 0-based rank of each flagged entry among the flagged entries of its row."""
    cum = np.cumsum(flags)
    before = np.concatenate([[0], cum])[csr.offsets[:-1]]  # flagged entries before each row
    return cum - 1 - np.repeat(before, csr.lengths())


def ground_truth_counts(
    archive: CSR,  # archive concept ids per pair, ranked (score descending)
    captions: CSR,  # caption concept ids per pair
    present: CSR | None,  # ground truth: concepts in the image
    mentioned: CSR | None = None,  # ground truth: concepts the caption generator named
    top_k: int = 3,
) -> dict[str, int]:
    """Additive counts behind `rates_from_counts` (rows of all CSRs are the same pairs)."""
    width = int(max([archive.ids.max(initial=0), captions.ids.max(initial=0)]
                    + [x.ids.max(initial=0) for x in (present, mentioned) if x is not None])) + 1
    akeys, ckeys = _keys(archive, width), _keys(captions, width)
    is_new = ~np.isin(akeys, ckeys)  # [nnz_a]
    in_top = (np.arange(len(akeys)) - np.repeat(archive.offsets[:-1], archive.lengths())) < top_k
    top_new = is_new & (_rank_in_row(archive, is_new) < top_k)
    out = {"pairs": len(archive), "archive": len(akeys), "archive_new": int(is_new.sum()),
           "caption": len(ckeys), "top_new": int(top_new.sum()), "top_added": int((is_new & in_top).sum())}
    if present is not None:
        pkeys = _keys(present, width)
        a_hit, c_hit = np.isin(akeys, pkeys), np.isin(ckeys, pkeys)
        out |= {"present": len(pkeys), "missed": len(pkeys) - int(c_hit.sum()),
                "caption_hit": int(c_hit.sum()),
                "new_hit": int((is_new & a_hit).sum()), "top_new_hit": int((top_new & a_hit).sum()),
                "top_added_hit": int((is_new & in_top & a_hit).sum())}
    if mentioned is not None:
        mkeys = _keys(mentioned, width)
        out |= {"mentioned": len(mkeys), "caption_mentioned": int(np.isin(ckeys, mkeys).sum())}
    return out


def rates_from_counts(c: Mapping[str, int], top_k: int = 3) -> dict[str, float]:
    """Recall / precision / rewrite rate from (summed) `ground_truth_counts`."""

    def div(a: str | int, b: str | int) -> float:
        num, den = (c[a] if isinstance(a, str) else a), (c[b] if isinstance(b, str) else b)
        return float(num / den) if den else float("nan")

    out = {"rewrite_rate": div("archive_new", "archive")}
    if "present" in c:
        added_k = c["caption"] + c["top_added"]  # |caption ∪ archive top-K|
        out |= {
            "missed_recall/archive": div("new_hit", "missed"),
            "missed_precision/archive": div("new_hit", "archive_new"),
            f"missed_recall/top{top_k}_new": div("top_new_hit", "missed"),
            f"missed_precision/top{top_k}_new": div("top_new_hit", "top_new"),
            "missed_recall/caption": 0.0,
            "present_recall/caption": div("caption_hit", "present"),
            "present_precision/caption": div("caption_hit", "caption"),
            f"present_recall/caption+top{top_k}": div(c["caption_hit"] + c["top_added_hit"], "present"),
            f"present_precision/caption+top{top_k}": div(c["caption_hit"] + c["top_added_hit"], added_k),
        }
    if "mentioned" in c:
        out |= {"extraction_recall": div("caption_mentioned", "mentioned"),
                "extraction_precision": div("caption_mentioned", "caption")}
    return out


def curation_metrics(
    out_dir: Path | str,
    captions: CaptionConcepts,
    concept_names: Sequence[str],
    present: CSR | None = None,  # ground truth, same rows as captions (names_to_csr)
    mentioned: CSR | None = None,
    top_k: int = 3,
) -> dict[str, float]:
    """Every metric of the `curate` stage, streamed over the archive shards."""
    totals: dict[str, int] = {}
    sizes = []
    for start, archive in iter_archive_ids(out_dir, concept_names):
        rows = slice(start, start + len(archive))
        counts = ground_truth_counts(archive, _rows(captions.ids, rows), _rows(present, rows),
                                     _rows(mentioned, rows), top_k)
        totals = {k: totals.get(k, 0) + v for k, v in counts.items()}
        sizes.append(archive.lengths())
    all_sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    stats = {f"archive_size/{k}": v for k, v in size_stats(all_sizes).items()}
    return stats | rates_from_counts(totals, top_k)


def _rows(csr: CSR | None, rows: slice) -> CSR | None:
    if csr is None:
        return None
    offsets = csr.offsets[rows.start : rows.stop + 1]
    return CSR(offsets - offsets[0], csr.ids[offsets[0] : offsets[-1]])


def leakage_audit(vocab: Vocabulary, benchmarks: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """Benchmark class names that the vocabulary names (any surface form: plural, synonym)."""
    out = {}
    for bench, classes in benchmarks.items():
        hits = [c for c in classes if vocab.lookup(c) is not None]
        out[bench] = {"classes": len(classes), "count": len(hits),
                      "fraction": len(hits) / len(classes) if classes else float("nan"), "names": hits}
    return out
