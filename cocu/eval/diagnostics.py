"""Where zero-shot segmentation loses its mIoU: the grouping, the recognition, or the background rule.

`diagnose_benchmark` segments every image of a benchmark once, exactly as `segment` does, and
scores several predictions built from the same segments against the same labels:

- `protocol`: the card's rule, what the `evaluate` stage reports;
- `no_background_rule` (cards with a background): every segment keeps its class;
- `true_background` (cards with a background): every segment keeps its class and the labelled
  background is given, so only the foreground's grouping and recognition are scored;
- `grouping_bound`: every segment takes the majority label of its pixels, what a perfect
  classifier of these segments would score: the grouping's ceiling.

and two summaries of the model: `segments_per_image` (distinct segments that own a pixel: 1
means the grouping collapsed) and `presence_auc`, the ROC AUC with which the image embedding's
zero-shot score of each class (its cosine with the class text) tells the images that contain the
class from those that do not, averaged over the classes present in some but not all images.

Cards with a background add where the protocol's foreground lands: `foreground_on_background`,
the share (%) of the labelled pixels it calls foreground that are labelled background, and
`images_foreground_mostly_background`, the share (%) of the images with a labelled foreground
prediction in which most of it lies on the background (the rule kept a background segment).

Only for cards whose images are segmented in one window at their own size (no resize, one slide
window: the synthetic cards), so the segments are those of one forward pass.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from cocu.config import IMAGENET_MEAN, IMAGENET_STD, ProtocolCard
from cocu.data.readers import Benchmark
from cocu.eval.metrics import SegEvaluator
from cocu.eval.segmenter import capped_size, group_class_probs, group_logits, pixel_groups, preprocess, rescale_size

PREDICTIONS = ("protocol", "no_background_rule", "true_background", "grouping_bound")
_WITH_BACKGROUND_ONLY = ("no_background_rule", "true_background")
# where the protocol's foreground lands (cards with a background): result keys, in % (module doc)
FOREGROUND_SHARES = ("foreground_on_background", "images_foreground_mostly_background")


def predictions_for(card: ProtocolCard) -> list[str]:
    """The predictions of `PREDICTIONS` that apply under `card` (two need a background)."""
    return [p for p in PREDICTIONS if card.has_background or p not in _WITH_BACKGROUND_ONLY]


def majority_labels(group: np.ndarray, label: np.ndarray, num_groups: int, num_classes: int,
                    ignore_index: int) -> np.ndarray:
    """[G] the most frequent label of each group's labelled pixels (ties: lowest id; a group with
    no labelled pixel: 0). `group`, `label`: [H, W] ints."""
    valid = label != ignore_index
    counts = np.bincount(group[valid].astype(np.int64) * num_classes + label[valid].astype(np.int64),
                         minlength=num_groups * num_classes).reshape(num_groups, num_classes)
    return counts.argmax(axis=1)


def presence_auc(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[K] ROC AUC of `scores` [N, K] for the binary `present` [N, K], per column (Mann-Whitney U
    with average ranks for ties); NaN for a column whose class is in no image or in all of them."""
    present = present.astype(bool)
    n_pos = present.sum(axis=0)
    n_neg = present.shape[0] - n_pos
    ranks = rankdata(scores, axis=0)  # [N, K], average ranks
    u = np.where(present, ranks, 0.0).sum(axis=0) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def check_single_window(card: ProtocolCard, h: int, w: int, name: str = "") -> None:
    """ValueError unless an h x w image is segmented in one window at its own size."""
    h0, w0 = capped_size(h, w, card.long_side_cap)
    if rescale_size(h0, w0, card.resize, card.max_long_side) != (h, w) or max(h, w) > card.crop:
        raise ValueError(f"diagnostics need a card that segments each image in one window at its own size "
                         f"(the synthetic cards); {name or card.root}: image {h}x{w}, resize {card.resize}, "
                         f"crop {card.crop}")


def diagnose_benchmark(model: object, bench: Benchmark, text_emb: Tensor, *, scale: float,
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                       max_images: int | None = None) -> dict[str, float]:
    """mIoU (x 100) of each prediction of `PREDICTIONS` that applies, `segments_per_image`,
    `presence_auc` (mean over classes), `images` and, with a background, the two shares of the
    foreground (module doc). The model is in eval mode; `text_emb` [K, C]
    holds the foreground classes."""
    card = bench.card
    offset = int(card.has_background)
    n_cls = bench.num_classes
    names = predictions_for(card)
    bg = card.bg_thresh if card.has_background else None
    evaluators = {p: SegEvaluator(n_cls, card.ignore_index, bench.class_names) for p in names}
    segments, scores, present = [], [], []
    fg_pixels = fg_on_bg = 0  # the protocol's foreground, labelled pixels: all, and on the background
    fg_images = fg_images_on_bg = 0
    device = text_emb.device
    for i, (image_id, image, label) in enumerate(bench):
        if max_images is not None and i >= max_images:
            break
        h, w = label.shape
        check_single_window(card, h, w, image_id)
        with torch.inference_mode():
            out = model.encode_image_groups(preprocess(image, (h, w), mean, std, device))  # type: ignore[attr-defined]
            probs = group_class_probs(out["group_features"][0].float(), out["image_features"][0].float(),
                                      text_emb.float(), scale)  # [G, K]
            group = pixel_groups(out["assignment"][0], (h, w)).cpu().numpy()  # [H, W], once per image
            # a pixel's logits are its group's row (`pixel_logits`), so the argmax per group is the pixel's
            preds = {"protocol": group_logits(probs, bg).argmax(dim=1).cpu().numpy()[group]}
            if card.has_background:
                keep = probs.argmax(dim=1).cpu().numpy()[group] + 1  # label ids
                preds["no_background_rule"] = keep
                preds["true_background"] = np.where(label == 0, 0, keep)
            majority = majority_labels(group, label, probs.shape[0], n_cls, card.ignore_index)
            preds["grouping_bound"] = majority[group]
            scores.append((out["image_features"][0].float() @ text_emb.float().T).cpu().numpy())  # [K]
        for p in names:
            evaluators[p].process(preds[p], label)
        if card.has_background:
            fg = (preds["protocol"] != 0) & (label != card.ignore_index)
            n_fg, n_bg = int(fg.sum()), int((fg & (label == 0)).sum())
            fg_pixels, fg_on_bg = fg_pixels + n_fg, fg_on_bg + n_bg
            fg_images, fg_images_on_bg = fg_images + (n_fg > 0), fg_images_on_bg + (2 * n_bg > n_fg)
        segments.append(len(np.unique(group)))
        ids = np.unique(label[label != card.ignore_index]).astype(np.int64) - offset
        row = np.zeros(n_cls - offset, bool)
        row[ids[ids >= 0]] = True
        present.append(row)
    if not segments:
        raise ValueError(f"{card.root}: no image to diagnose")
    auc = presence_auc(np.stack(scores), np.stack(present))
    result = {p: float(evaluators[p].evaluate()["mIoU"]) for p in names}
    result["segments_per_image"] = float(np.mean(segments))
    result["presence_auc"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
    result["images"] = float(len(segments))
    if card.has_background:
        for key, part, whole in zip(FOREGROUND_SHARES, (fg_on_bg, fg_images_on_bg), (fg_pixels, fg_images)):
            result[key] = 100.0 * part / whole if whole else float("nan")
    return result
