"""Build the model from its config; the named configurations live in one plain dict."""

from __future__ import annotations

from typing import Callable

from torch import nn

from cocu.config import ModelConfig, paper_model_config, tiny_model_config
from cocu.models.contrastive import ContrastiveModel
from cocu.models.layers import count_parameters

CONFIGS: dict[str, Callable[[], ModelConfig]] = {"paper": paper_model_config, "tiny": tiny_model_config}

# Parameter counts of the paper configuration (the official GroupViT checkpoint's counts).
PAPER_PARAMETER_COUNTS = {
    "image_encoder": 28_837_136,
    "text_encoder": 22_145_792,
    "image_projector": 2_633_984,
    "text_projector": 2_109_696,
    "total": 55_726_610,  # the four parts + the 2 logit scales
}


def build_model(cfg: ModelConfig) -> ContrastiveModel:
    return ContrastiveModel(cfg)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level part of a `ContrastiveModel`, plus the total."""
    parts = ("image_encoder", "text_encoder", "image_projector", "text_projector")
    counts = {name: count_parameters(getattr(model, name)) for name in parts}
    counts["total"] = count_parameters(model)
    return counts
