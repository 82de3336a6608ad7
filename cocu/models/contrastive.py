"""The image-text model: GroupViT + text transformer + projectors + two learned logit scales.

Features out, no loss inside (the losses are in `cocu.training.losses`).
Shapes: B images, K prompts per image, T tokens, C joint width, G final groups, h x w patch grid.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocu.config import ModelConfig
from cocu.models.groupvit import GroupViT, assignment_maps
from cocu.models.heads import ProjectionHead
from cocu.models.text import TextTransformer


class ContrastiveModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = GroupViT(cfg.image, cfg.init)
        self.text_encoder = TextTransformer(cfg.text, cfg.init)
        self.image_projector = ProjectionHead(cfg.image.width, cfg.projector, cfg.init)
        self.text_projector = ProjectionHead(cfg.text.width, cfg.projector, cfg.init)
        init = math.log(1.0 / cfg.temperature)
        self.logit_scale = nn.Parameter(torch.tensor(init))  # image-caption loss
        self.multi_label_logit_scale = nn.Parameter(torch.tensor(init))  # image-prompt loss

    def forward(self, image: Tensor, text: Tensor, prompts: Optional[Tensor] = None) -> dict[str, Tensor]:
        """image [B, 3, H, W], text [B, T], prompts [B, K, T] or None -> dict of

        image_features [B, C], text_features [B, C], prompt_features [B, K, C] (only with prompts),
        group_features [B, G, C] (only with prompts and `prompt_pool: max`), all unit-norm; logit_scale and multi_label_logit_scale: scalars exp(.) clamped to the max.
        """
        b = text.shape[0]
        texts = text if prompts is None else torch.cat([text, prompts.flatten(0, 1)])  # [B(1+K), T]
        text_all = self._embed_text(texts)
        if prompts is not None and self.cfg.prompt_pool == "max":
            image_features, group_features = self._encode_pooled_and_groups(image)
        else:
            image_features, group_features = self.encode_image(image), None
        out = {
            "image_features": image_features,
            "text_features": text_all[:b],
            "logit_scale": self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale),
            "multi_label_logit_scale": self.multi_label_logit_scale.exp().clamp(max=self.cfg.max_logit_scale),
        }
        if prompts is not None:
            out["prompt_features"] = text_all[b:].reshape(b, prompts.shape[1], -1)
        if group_features is not None:
            out["group_features"] = group_features
        return out

    def _encode_pooled_and_groups(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """image [B, 3, H, W] -> (unit-norm pooled feature [B, C], unit-norm segment features [B, G, C]).

        One projector call on [mean, segments] so that the BatchNorm sees (and keeps running
        statistics of) both the pooled tokens and the single segments the evaluation projects.
        """
        tokens, _, _ = self.image_encoder.forward_groups(image)  # [B, G, D]
        both = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # [B, 1 + G, D]
        feats = F.normalize(self.image_projector(both), dim=-1)
        return feats[:, 0], feats[:, 1:]

    def _embed_text(self, tokens: Tensor) -> Tensor:
        return F.normalize(self.text_projector(self.text_encoder(tokens)), dim=-1)

    def encode_image(self, image: Tensor) -> Tensor:
        """image [B, 3, H, W] -> unit-norm [B, C]."""
        return F.normalize(self.image_projector(self.image_encoder(image)), dim=-1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """tokens [K, T] -> unit-norm [K, C]."""
        return self._embed_text(tokens)

    def encode_image_groups(self, image: Tensor) -> dict[str, Tensor]:
        """image [B, 3, H, W] -> dict of

        group_features [B, G, C]: projected final group (segment) tokens, unit-norm;
        image_features [B, C]: projected average of the group tokens, unit-norm;
        assignment [B, G, h, w]: soft assignment of each patch to the G final groups (product of
        the grouping blocks' noise-free softmaxes; sums to 1 over G).
        In eval mode the forward features use hard argmax assignment, without Gumbel noise.
        """
        tokens, softs, hw = self.image_encoder.forward_groups(image)  # [B, G, D]
        return {
            "group_features": F.normalize(self.image_projector(tokens), dim=-1),
            "image_features": F.normalize(self.image_projector(tokens.mean(dim=1)), dim=-1),
            "assignment": assignment_maps(softs, hw),
        }

    def scale(self) -> float:
        """The clamped image-text logit scale as a float (used by zero-shot evaluation)."""
        return float(self.logit_scale.detach().exp().clamp(max=self.cfg.max_logit_scale))
