"""One benchmark end to end: class embeddings, segmentation of every image, metrics, demo overlays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cocu.config import IMAGENET_MEAN, IMAGENET_STD
from cocu.data.readers import Benchmark
from cocu.eval.metrics import SegEvaluator
from cocu.eval.overlay import write_overlay
from cocu.eval.protocol import card_text, templates_for
from cocu.eval.segmenter import class_embeddings, segment

log = logging.getLogger(__name__)


def benchmark_text_embeddings(model: object, tokenize: Callable[[list[str]], Tensor], bench: Benchmark,
                              device: Optional[torch.device] = None) -> Tensor:
    """[K, C] embeddings of the benchmark's foreground classes under its card's templates."""
    encode_text = model.encode_text  # type: ignore[attr-defined]
    templates = templates_for(bench.card)
    return class_embeddings(encode_text, tokenize, bench.prompt_names, templates, device=device)


def evaluate_benchmark(model: object, bench: Benchmark, text_emb: Tensor, *, scale: float,
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                       overlay_dir: Optional[Path] = None, num_overlays: int = 0, progress: bool = False,
                       name: str = "", counts_path: Optional[Path] = None) -> dict[str, float]:
    """Segment every image of `bench` and return the metrics (x 100).

    Writes up to `num_overlays` overlays `<overlay_dir>/<id>.png` of the first images, and with
    `counts_path` the per-image counts (`write_image_counts`), which paired comparisons of two
    checkpoints resample (cocu.reports.stats.paired_bootstrap).
    """
    log.info("%s", card_text(bench.card, name or None))
    evaluator = SegEvaluator(bench.num_classes, bench.card.ignore_index, bench.class_names)
    for i, (image_id, image, label) in enumerate(tqdm(bench, total=len(bench), disable=not progress,
                                                      desc=f"eval {name}", mininterval=5.0)):
        pred = segment(model, image, text_emb, bench.card, scale=scale, mean=mean, std=std)
        evaluator.process(pred, label)
        if overlay_dir is not None and i < num_overlays:
            path = Path(overlay_dir) / f"{image_id.replace('/', '_')}.png"
            write_overlay(image, pred, bench.class_names, path, label=label)
    scores = evaluator.evaluate()
    if counts_path is not None:
        write_image_counts(counts_path, evaluator.image_counts, [it.id for it in bench.items])
    log.info("%s: mIoU %.2f aAcc %.2f over %d images", name or bench.card.root, scores["mIoU"],
             scores["aAcc"], evaluator.num_images)
    return scores


def write_image_counts(path: Path, counts: np.ndarray, image_ids: Sequence[str]) -> None:
    """Per-image counts [N, 3, K] (true positives, labelled, predicted pixels per class; benchmark
    order) and the image ids, as a compressed .npz (uint32: pixel counts)."""
    if counts.size and counts.max() >= 2**32:
        raise ValueError(f"{path}: a pixel count does not fit uint32")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, counts=counts.astype(np.uint32), image_ids=np.asarray(list(image_ids), dtype=str))


def read_image_counts(path: Path | str) -> tuple[np.ndarray, list[str]]:
    """(counts [N, 3, K] int64, image ids) written by `write_image_counts`."""
    with np.load(path) as z:
        return z["counts"].astype(np.int64), [str(i) for i in z["image_ids"]]
