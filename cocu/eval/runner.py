"""One benchmark end to end: class embeddings, segmentation of every image, metrics, demo overlays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from cocu.config import IMAGENET_MEAN, IMAGENET_STD
from cocu.eval.metrics import SegEvaluator
from cocu.eval.overlay import write_overlay
from cocu.eval.protocol import card_text, templates_for
from cocu.eval.readers import Benchmark
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
                       rank: int = 0, world_size: int = 1, overlay_dir: Optional[Path] = None,
                       num_overlays: int = 0, progress: bool = False, name: str = "") -> dict[str, float]:
    """Segment this rank's share of `bench` and return the metrics over all ranks (x 100).

    Every rank must call this (the confusion matrix is all-reduced in `evaluate()`). Rank 0 writes
    up to `num_overlays` overlays `<overlay_dir>/<id>.png` of its first images.
    """
    log.info("%s", card_text(bench.card, name or None))
    evaluator = SegEvaluator(bench.num_classes, bench.card.ignore_index, bench.class_names)
    shard = bench.shard(rank, world_size)
    for i, (image_id, image, label) in enumerate(tqdm(shard, total=len(shard), disable=not progress,
                                                      desc=f"eval {name}", mininterval=5.0)):
        pred = segment(model, image, text_emb, bench.card, scale=scale, mean=mean, std=std)
        evaluator.process(pred, label)
        if rank == 0 and overlay_dir is not None and i < num_overlays:
            path = Path(overlay_dir) / f"{image_id.replace('/', '_')}.png"
            write_overlay(image, pred, bench.class_names, path, label=label)
    scores = evaluator.evaluate()
    log.info("%s: mIoU %.2f aAcc %.2f over %d images (this rank)", name or bench.card.root, scores["mIoU"],
             scores["aAcc"], evaluator.num_images)
    return scores
