"""Projection heads into the joint image-text space."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from cocu.config import InitScheme, ProjectorConfig
from cocu.models.layers import init_weights


class ProjectionHead(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear: [..., in_dim] -> [..., out_dim] (GroupViT's head;
    `activation: none` leaves out the ReLU, making the head affine in eval mode).

    Leading dimensions are flattened for the BatchNorm, so group tokens [B, G, D] are normalised
    with statistics over all B*G of them.
    """

    def __init__(self, in_dim: int, cfg: ProjectorConfig, init: InitScheme = "groupvit") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.BatchNorm1d(cfg.hidden_dim),
            nn.ReLU(inplace=True) if cfg.activation == "relu" else nn.Identity(),
            nn.Linear(cfg.hidden_dim, cfg.out_dim),
        )
        self.apply(partial(init_weights, scheme=init))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        return self.net(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)
