"""Transformer building blocks shared by the image and the text towers.

Shapes: B batch, N tokens (queries), M tokens (keys), D width.
"""

from __future__ import annotations

from typing import Optional, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocu.config import InitScheme


class Mlp(nn.Module):
    """Linear -> GELU -> Linear over the last dimension."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: Optional[int] = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenMixer(nn.Module):
    """An `Mlp` over the token axis: [B, N_in, D] -> [B, N_out, D]."""

    def __init__(self, num_in: int, hidden_dim: int, num_out: int) -> None:
        super().__init__()
        self.mlp = Mlp(num_in, hidden_dim, num_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x.transpose(1, 2)).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head attention with a fused qkv projection (self-attention)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # backward: one stack (each qkv[i] would zero-fill a whole qkv gradient)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [B, h, N, d/h]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward_at(self, x: Tensor, pos: Tensor) -> Tensor:
        """Causal self-attention of x [B, N, D] read at one position per sequence, pos [B] -> [B, D]:
        equal to `forward(x, causal=True)[arange(B), pos]`, with the query and the output
        projection computed for those positions only."""
        b, n, d = x.shape
        h = self.num_heads
        w_q, w_kv = self.qkv.weight.split([d, 2 * d])
        b_q, b_kv = self.qkv.bias.split([d, 2 * d])
        q = F.linear(x[torch.arange(b, device=x.device), pos], w_q, b_q).view(b, h, 1, d // h)
        k, v = F.linear(x, w_kv, b_kv).reshape(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        visible = (torch.arange(n, device=x.device) <= pos[:, None]).view(b, 1, 1, n)  # causal row `pos`
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # [B, h, 1, d/h]
        return self.proj(out.reshape(b, d))


class CrossAttention(nn.Module):
    """Multi-head attention of queries [B, N, D] over keys/values [B, M, D] (separate projections)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        b, n, d = query.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:  # [B, L, D] -> [B, h, L, D/h]
            return t.reshape(b, t.shape[1], h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(key)), heads(self.v(key)))
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), causal=causal))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_at(self, x: Tensor, pos: Tensor) -> Tensor:
        """The causal block's output x [B, N, D] at one position per sequence, pos [B] -> [B, D]
        (`forward(x, causal=True)[arange(B), pos]`): keys and values need every position, the
        query, the output projection and the MLP only the positions read."""
        y = x[torch.arange(x.shape[0], device=x.device), pos]
        y = y + self.drop_path(self.attn.forward_at(self.norm1(x), pos))
        return y + self.drop_path(self.mlp(self.norm2(y)))


class CrossBlock(nn.Module):
    """Queries attend to keys, then an MLP, then a final LayerNorm (post-norm) on the queries."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_post = nn.LayerNorm(dim)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        x = query + self.attn(query, key)
        x = x + self.mlp(self.norm2(x))
        return self.norm_post(x)


INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)


def init_weights(module: nn.Module, std: float = 0.02, scheme: InitScheme = "groupvit") -> None:
    """Truncated-normal linear/conv weights, zero biases, unit norms (apply with `model.apply`).

    `scheme`: `groupvit` draws every weight with `std` (0.02, GroupViT's and timm's choice, made for
    widths of 384 and more); `fan_in` with std = fan_in^-1/2 (LeCun), which keeps the activations'
    scale through the layers at any width: at width 64, 0.125 for a 64-wide input.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r} (expected one of {INIT_SCHEMES})")
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        if scheme == "fan_in":
            std = module.weight[0].numel() ** -0.5  # fan_in: in_features, or in_chans * kh * kw
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Attention", "Block", "CrossAttention", "CrossBlock", "DropPath", "Mlp", "TokenMixer",
           "INIT_SCHEMES", "count_parameters", "init_weights"]
