"""The `evaluate` stage's library: one pre-trained checkpoint on its benchmarks, and the demo.

Loads the exported weights (`pretrain` stage), builds the class embeddings under the benchmark's
protocol card, segments every image, and returns the result that the stage writes to
`results/<variant>/s<seed>/<benchmark>.json` (mIoU, per-class IoU, the card, the checkpoint's
sha256) and logs to MLflow with example predictions beside the ground truth.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cocu.config import ModelConfig, ProtocolCard, from_dict
from cocu.data.readers import open_benchmark
from cocu.eval.protocol import card_text, protocol_deviations, templates_for
from cocu.eval.runner import benchmark_text_embeddings, evaluate_benchmark
from cocu.eval.segmenter import class_embeddings, segment
from cocu.models.factory import build_model
from cocu.models.text import build_tokenizer
from cocu.training.checkpoint import load_model_state, sha256_file

log = logging.getLogger(__name__)


def load_model(checkpoint: Path | str, device: torch.device) -> tuple[torch.nn.Module, ModelConfig]:
    """The model of an exported checkpoint (weights + its own model config), in eval mode."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint} (run `dvc repro pretrain` first)")
    state, raw = load_model_state(checkpoint)
    if raw is None:
        raise ValueError(f"{checkpoint}: no model_config inside; export it with cocu.training.pretrain")
    if isinstance(raw, dict) and "init" not in raw:  # exported before `model.init` existed (2026-12-06):
        raw = {**raw, "init": "groupvit"}  # their weights were drawn that way; loading does not depend on it
    cfg = from_dict(ModelConfig, raw, source=str(checkpoint))
    model = build_model(cfg)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg


def evaluate_checkpoint(checkpoint: Path | str, cards: Mapping[str, ProtocolCard],
                        root: Path | str | Mapping[str, Path | str],
                        mean: Sequence[float], std: Sequence[float], overlay_root: Path | None = None,
                        num_overlays: int = 0, device: torch.device = torch.device("cpu"),
                        counts_root: Path | None = None) -> dict[str, dict[str, Any]]:
    """mIoU etc. of one checkpoint on each benchmark of `cards` (name -> protocol card), each
    result with its card beside the numbers. The model is loaded once; each benchmark runs under
    its own card, exactly as it would alone. `root`: the benchmarks root, or one per benchmark name
    (synthetic sets live in the repo, real ones outside it). Overlays go to
    `<overlay_root>/<name>_examples`, per-image counts (for paired comparisons) to
    `<counts_root>/<name>.counts.npz`."""
    model, cfg = load_model(checkpoint, device)
    tokenizer = build_tokenizer(cfg.text)
    sha = sha256_file(Path(checkpoint))
    results = {}
    for name, card in cards.items():
        bench = open_benchmark(card, root[name] if isinstance(root, Mapping) else root)
        text = benchmark_text_embeddings(model, tokenizer, bench, device)
        overlay_dir = None if overlay_root is None else Path(overlay_root) / f"{name}_examples"
        counts = None if counts_root is None else Path(counts_root) / f"{name}.counts.npz"
        scores = evaluate_benchmark(model, bench, text, scale=model.scale(), mean=mean, std=std,
                                    overlay_dir=overlay_dir, num_overlays=num_overlays, progress=True, name=name,
                                    counts_path=counts)
        iou = {k[len("IoU/"):]: v for k, v in scores.items() if k.startswith("IoU/")}
        results[name] = {"benchmark": name, "mIoU": scores["mIoU"], "aAcc": scores["aAcc"], "mAcc": scores.get("mAcc"),
                         "mIoU_ci95": [scores["mIoU_ci_lo"], scores["mIoU_ci_hi"]], "IoU": iou,
                         "num_images": len(bench), "protocol": card_text(card, name),
                         "protocol_deviations": protocol_deviations(name, card), "checkpoint_sha256": sha}
    return results


def segment_image(image: np.ndarray, classes: Sequence[str], checkpoint: Path | str, card: ProtocolCard,
                  mean: Sequence[float], std: Sequence[float], device: torch.device = torch.device("cpu")) -> np.ndarray:
    """The demo: segment one image [H, W, 3] uint8 into `classes` (ids index `classes`).

    No class to segment into (none given, or only `background` under a card with a background) and
    an image that is not [H, W, 3] uint8 are ValueErrors saying so, before the model is loaded.
    """
    names = [c for c in classes if c != "background"] if card.has_background else list(classes)
    if not names:
        raise ValueError(f"no class to segment into: got {list(classes)} (give at least one class name"
                         + (" besides background)" if card.has_background else ")"))
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"expected an image array [H, W, 3] uint8, got {image.dtype} {list(image.shape)}")
    model, cfg = load_model(checkpoint, device)
    text = class_embeddings(model.encode_text, build_tokenizer(cfg.text), names, templates_for(card), device=device)
    return segment(model, image, text, card, scale=model.scale(), mean=mean, std=std)
