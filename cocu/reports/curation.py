"""Curation-quality table: whatever keys the `curate` (and teacher) metrics hold, grouped and labelled.

The keys are rendered generically, grouped by prefix; the known ones get readable labels (both the
`cocu.concepts.metrics` names, e.g. `missed_recall/archive`, and the `missed/recall_archive` form).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Optional

import pandas as pd

from cocu.reports.tables import Table

# (key pattern, group title), first match wins; the group order of the table follows this list
GROUPS = (
    (r"^archive", "archive size (concepts per pair)"),
    (r"^rewrite", "archive composition"),
    (r"^missed", "concepts the caption missed (hidden ground truth)"),
    (r"^present", "concepts present in the image (hidden ground truth)"),
    (r"^extraction", "caption concept extraction vs the captioner's mentions"),
    (r"^leakage", "leakage audit: vocabulary ∩ benchmark class names"),
)
TEACHER_GROUP = "teacher CLIP quality"
# (key pattern, label template); groups of the pattern fill the template
LABELS = (
    (r"^archive(?:_size/|/size_)(mean|median|p10|p90|max)$", "archive size: {0}"),
    (r"^archive(?:_size/share_empty|/empty_fraction|_size/empty_fraction)$", "share of empty archives"),
    (r"^rewrite_rate$", "rewrite rate: share of archive concepts not in the caption"),
    (r"^missed(?:_recall/|/recall_)archive$", "recall of missed concepts by the full archive"),
    (r"^missed(?:_precision/|/precision_)archive$", "precision of the archive's new concepts"),
    (r"^missed(?:_recall/|/recall_)top(\d+)(?:_new)?$", "recall of missed concepts by the top-{0} new concepts"),
    (r"^missed(?:_precision/|/precision_)top(\d+)(?:_new)?$", "precision of the top-{0} new concepts"),
    (r"^missed(?:_recall/|/recall_)topk$", "recall of missed concepts by the top-k new concepts"),
    (r"^missed(?:_precision/|/precision_)topk$", "precision of the top-k new concepts"),
    (r"^missed(?:_recall/|/recall_)caption$", "recall of missed concepts by the caption (0 by definition)"),
    (r"^present(?:_recall/|/recall_)caption$", "recall of present concepts by the caption"),
    (r"^present(?:_precision/|/precision_)caption$", "precision of the caption concepts"),
    (r"^present(?:_recall/|/recall_)caption\+top(\d+)$",
     "recall of present concepts by caption + top-{0} archive"),
    (r"^present(?:_precision/|/precision_)caption\+top(\d+)$", "precision of caption + top-{0} archive"),
    (r"^present(?:_recall/|/recall_)caption_topk$", "recall of present concepts by caption + top-k archive"),
    (r"^extraction_recall$", "recall of the captioner's mentions"),
    (r"^extraction_precision$", "precision of the extracted caption concepts"),
    (r"^leakage/(.+)/fraction$", "{0}: share of class names in the vocabulary"),
    (r"^leakage/(.+)/count$", "{0}: class names in the vocabulary"),
    (r"^leakage/(.+)/classes$", "{0}: class names"),
    (r"^(?:teacher/)?zeroshot_top1_present$", "zero-shot top-1 concept is present in the image"),
    (r"^(?:teacher/)?zeroshot_random_present$", "same, for a uniformly random concept"),
    (r"^(?:teacher/)?zeroshot_top1_salient$", "zero-shot top-1 concept is the most salient one"),
    (r"^(?:teacher/)?zeroshot_random_salient$", "same, for a uniformly random concept"),
    (r"^(?:teacher/)?neighbour_jaccard$", "concept-set Jaccard of image neighbours"),
    (r"^(?:teacher/)?neighbour_random_jaccard$", "same, for random neighbours"),
    (r"^(?:teacher/)?neighbour_share_any$", "share of neighbours sharing a concept"),
    (r"^(?:teacher/)?neighbour_random_share_any$", "same, for random neighbours"),
)


def metric_group(key: str) -> str:
    for pattern, title in GROUPS:
        if re.search(pattern, key):
            return title
    return key.split("/")[0] if "/" in key else "other"


def metric_label(key: str) -> tuple[int, str]:
    """(rank of the matching label pattern, label); unknown keys rank last and keep their key."""
    for rank, (pattern, template) in enumerate(LABELS):
        m = re.match(pattern, key)
        if m:
            return rank, template.format(*m.groups())
    return len(LABELS), key


_RATE = re.compile(r"fraction|rate|recall|precision|share|jaccard|zeroshot")


def fmt_value(value: float, key: str = "") -> str:
    """Counts as integers, rates (by key name) and sizes with 3 decimals, missing as n/a."""
    if not math.isfinite(value):
        return "n/a"
    if float(value).is_integer() and abs(value) >= 1 and not _RATE.search(key):
        return str(int(value))
    return f"{value:.3f}"


def curation_table(curate: Optional[Mapping[str, float]], teacher: Optional[Mapping[str, float]],
                   curate_path: Optional[str] = None, teacher_path: Optional[str] = None) -> Table:
    """One row per metric: group, label, value (display); source, key, group, label, value (CSV)."""
    rows = []
    for source, metrics in (("curate", curate), ("teacher", teacher)):
        for key in sorted(metrics or {}):
            group = TEACHER_GROUP if source == "teacher" else metric_group(key)
            label_rank, label = metric_label(key)
            rows.append({"source": source, "key": key, "group": group, "label": label, "rank": label_rank,
                         "value": float(metrics[key])})  # type: ignore[index]
    rank = {title: i for i, (_, title) in enumerate(GROUPS)}
    rows.sort(key=lambda r: (r["source"], rank.get(r["group"], len(rank)), r["group"], r["rank"], r["key"]))
    data = pd.DataFrame(rows, columns=["source", "key", "group", "label", "value"])
    display = pd.DataFrame([{"group": r["group"], "metric": r["label"], "key": r["key"],
                             "value": fmt_value(r["value"], r["key"])} for r in rows],
                           columns=["group", "metric", "key", "value"])
    notes = []
    for what, metrics, path in (("curation", curate, curate_path), ("teacher", teacher, teacher_path)):
        if metrics is None:
            why = f"`{path}` does not exist" if path else "not configured"
            notes.append(f"No {what} metrics: {why} (omitted).")
    notes.append("Rates are micro-averaged over pairs (0-1). Ground-truth rows exist on the synthetic world only.")
    return Table("Curation quality", display, data, tuple(notes), text_columns=3)
