"""GroupViT image encoder, written from the paper's description (Xu et al., CVPR 2022).

A ViT whose token set shrinks stage by stage: each stage appends learnable group tokens to the
current tokens, runs transformer blocks over both, and then a grouping block assigns every token to
one group (straight-through Gumbel-softmax, hard) and merges the tokens of each group into a new
segment token. The last stage has no group tokens; the image feature is the average of the final
segment tokens.

Shapes: B batch, N tokens entering a grouping block, G group tokens, O output groups, D width,
h x w the patch grid.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocu.config import ImageEncoderConfig, InitScheme
from cocu.models.layers import Block, CrossBlock, Mlp, TokenMixer, init_weights

ASSIGN_EPS = 1.0  # added to a group's assigned-token count so that an empty group merges to zero


def hard_assignment(logits: Tensor, dim: int, tau: float = 1.0, gumbel: bool = False) -> Tensor:
    """One-hot argmax of `logits` along `dim`, with the gradient of softmax((logits + g) / tau).

    With `gumbel`, g is Gumbel(0, 1) noise (training); without it g = 0 (inference), so the
    forward value is the plain argmax and the gradient is that of the softmax.
    """
    if gumbel:
        logits = logits - torch.empty_like(logits).exponential_().log()  # + Gumbel(0, 1)
    soft = (logits / tau).softmax(dim)
    hard = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return hard - soft.detach() + soft


class GroupAssign(nn.Module):
    """Assign tokens [B, N, D] to groups [B, O, D] and average the tokens of each group.

    Returns the merged groups [B, O, D] and the soft assignment [B, O, N] (softmax over groups
    without noise: each token's distribution over the O groups, summing to 1 over O).
    """

    def __init__(self, dim: int, tau: float = 1.0, gumbel: bool = True) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.scale = dim**-0.5
        self.tau = tau
        self.gumbel = gumbel  # Gumbel noise on the assignment logits in training (GroupViT: yes)

    def forward(self, groups: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.q(groups) @ self.k(tokens).transpose(1, 2) * self.scale  # [B, O, N]
        soft = logits.softmax(dim=1)
        assign = hard_assignment(logits, dim=1, tau=self.tau, gumbel=self.training and self.gumbel)  # [B, O, N]
        weights = assign / (assign.sum(dim=-1, keepdim=True) + ASSIGN_EPS)  # mean over own tokens
        return self.proj(weights @ self.v(tokens)), soft


class GroupingBlock(nn.Module):
    """Tokens [B, N, D] + group tokens [B, G, D] -> segments [B, O, D] and soft assignment [B, O, N].

    The group tokens are mixed along the token axis into O queries, refined by cross-attention to
    the tokens (+ MLP), then each token is hard-assigned to one query and merged; an MLP follows.
    """

    def __init__(self, dim: int, num_heads: int, num_group_tokens: int, num_output_groups: int,
                 mlp_ratio: float = 4.0, token_mlp_ratio: float = 0.5, tau: float = 1.0,
                 gumbel: bool = True) -> None:
        super().__init__()
        self.norm_tokens = nn.LayerNorm(dim)
        self.norm_groups = nn.LayerNorm(dim)
        self.mix = TokenMixer(num_group_tokens, int(dim * token_mlp_ratio), num_output_groups)
        self.norm_mixed = nn.LayerNorm(dim)
        self.pre_assign = CrossBlock(dim, num_heads, mlp_ratio)
        self.assign = GroupAssign(dim, tau, gumbel)
        self.norm_out = nn.LayerNorm(dim)
        self.mlp_out = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.norm_tokens(tokens)
        queries = self.norm_mixed(self.mix(self.norm_groups(groups)))  # [B, O, D]
        queries = self.pre_assign(queries, tokens)
        merged, soft = self.assign(queries, tokens)
        out = merged + queries
        return out + self.mlp_out(self.norm_out(out)), soft


class GroupingStage(nn.Module):
    """Transformer blocks over [tokens, group tokens], then (if it has group tokens) a grouping block.

    The group tokens of a stage after the first are its own learnable tokens plus a token-mixed
    projection of the previous stage's group tokens (as they left that stage's blocks).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, num_group_tokens: int,
                 num_output_groups: int, num_prev_group_tokens: int, drop_paths: list[float],
                 mlp_ratio: float, token_mlp_ratio: float, tau: float, gumbel: bool = True) -> None:
        super().__init__()
        self.num_group_tokens = num_group_tokens
        self.group_tokens: Optional[nn.Parameter] = None
        self.group_projector: Optional[nn.Module] = None
        self.grouping: Optional[GroupingBlock] = None
        if num_group_tokens:
            self.group_tokens = nn.Parameter(torch.zeros(1, num_group_tokens, dim))
            self.grouping = GroupingBlock(dim, num_heads, num_group_tokens, num_output_groups,
                                          mlp_ratio, token_mlp_ratio, tau, gumbel)
            if num_prev_group_tokens:
                self.group_projector = nn.Sequential(
                    nn.LayerNorm(dim),
                    TokenMixer(num_prev_group_tokens, int(dim * token_mlp_ratio), num_group_tokens))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, p) for p in drop_paths)

    def forward(self, x: Tensor, prev_groups: Optional[Tensor]
                ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """x [B, N, D] -> (x [B, O, D] or [B, N, D], group tokens [B, G, D] | None, soft [B, O, N] | None)."""
        if self.group_tokens is None:
            for blk in self.blocks:
                x = blk(x)
            return x, None, None
        groups = self.group_tokens.expand(x.shape[0], -1, -1)
        if self.group_projector is not None and prev_groups is not None:
            groups = groups + self.group_projector(prev_groups)
        x = torch.cat([x, groups], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x, groups = x.split([x.shape[1] - self.num_group_tokens, self.num_group_tokens], dim=1)
        assert self.grouping is not None
        x, soft = self.grouping(x, groups)
        return x, groups, soft


class GroupViT(nn.Module):
    """Image [B, 3, H, W] -> pooled feature [B, D]; `forward_groups` gives segments and assignments."""

    def __init__(self, cfg: ImageEncoderConfig, init: InitScheme = "groupvit") -> None:
        super().__init__()
        n_stages = len(cfg.depths)
        if not (len(cfg.num_heads) == len(cfg.num_group_tokens) == n_stages
                and len(cfg.num_output_groups) == n_stages - 1 and cfg.num_group_tokens[-1] == 0):
            raise ValueError(f"inconsistent per-stage values in {cfg}")
        self.cfg = cfg
        self.grid = cfg.img_size // cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_chans, cfg.width, cfg.patch_size, cfg.patch_size)
        self.patch_norm = nn.LayerNorm(cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, cfg.width))
        n_blocks = sum(cfg.depths)
        rates = [cfg.drop_path * i / max(1, n_blocks - 1) for i in range(n_blocks)]  # 0 -> drop_path
        self.stages = nn.ModuleList()
        start = 0
        for i, depth in enumerate(cfg.depths):
            self.stages.append(GroupingStage(
                cfg.width, depth, cfg.num_heads[i], cfg.num_group_tokens[i],
                cfg.num_output_groups[i] if i < n_stages - 1 else 0,
                cfg.num_group_tokens[i - 1] if i > 0 else 0, rates[start : start + depth],
                cfg.mlp_ratio, cfg.token_mlp_ratio, cfg.gumbel_tau, cfg.gumbel_noise))
            start += depth
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(partial(init_weights, scheme=init))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for stage in self.stages:
            if stage.group_tokens is not None:
                nn.init.trunc_normal_(stage.group_tokens, std=cfg.group_token_std)

    def _pos_embed(self, h: int, w: int) -> Tensor:
        """The learned [1, h*w, D] position embedding, bicubically resized if the grid differs."""
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        d = self.pos_embed.shape[-1]
        grid = self.pos_embed.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, h * w, d)

    def forward_groups(self, image: Tensor) -> tuple[Tensor, list[Tensor], tuple[int, int]]:
        """image [B, 3, H, W] -> (final segment tokens [B, O_last, D] after the final norm,
        soft assignments per grouping block [[B, O_1, h*w], [B, O_2, O_1], ...], (h, w))."""
        x = self.patch_embed(image)  # [B, D, h, w]
        h, w = x.shape[-2:]
        x = self.patch_norm(x.flatten(2).transpose(1, 2)) + self._pos_embed(h, w)  # [B, h*w, D]
        groups: Optional[Tensor] = None
        softs: list[Tensor] = []
        for stage in self.stages:
            x, groups, soft = stage(x, groups)
            if soft is not None:
                softs.append(soft)
        return self.norm(x), softs, (h, w)

    def forward(self, image: Tensor) -> Tensor:
        tokens, _, _ = self.forward_groups(image)
        return tokens.mean(dim=1)  # [B, D]


def assignment_maps(softs: list[Tensor], hw: tuple[int, int]) -> Tensor:
    """Chain the soft assignments [B, O_1, h*w], [B, O_2, O_1], ... into [B, O_last, h, w].

    Each stage's soft assignment sums to 1 over its groups, so the product does too.
    """
    assign = softs[0]
    for soft in softs[1:]:
        assign = soft @ assign  # [B, O_k, h*w]
    return assign.reshape(assign.shape[0], assign.shape[1], *hw)
