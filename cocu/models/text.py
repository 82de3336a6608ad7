"""CLIP-style text transformer: causal self-attention, final LayerNorm, end-of-text feature.

Shapes: N texts, T tokens (<= context_length), W width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cocu.config import TextEncoderConfig
from cocu.models.layers import Block, init_weights


class TextTransformer(nn.Module):
    """Tokens [N, T] (CLIP BPE ids, zero-padded) -> feature at the end-of-text token [N, W].

    The end-of-text token has the largest id in CLIP's vocabulary, so its position is the argmax
    of each row, as in CLIP.
    """

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.width)
        self.apply(init_weights)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.shape[1] > self.cfg.context_length:
            raise ValueError(f"{tokens.shape[1]} tokens exceed the context length {self.cfg.context_length}")
        # Columns after the last end-of-text token of the batch are padding that no kept feature
        # can see (causal attention): dropping them changes nothing but the cost.
        eot = tokens.argmax(dim=-1)  # [N]
        tokens = tokens[:, : int(eot.max()) + 1]
        n, t = tokens.shape
        x = self.token_embedding(tokens) + self.positional_embedding[:t]  # [N, T', W]
        for blk in self.blocks:
            x = blk(x, causal=True)
        x = self.ln_final(x)
        return x[torch.arange(n, device=x.device), eot]  # [N, W]


def build_tokenizer(cfg: TextEncoderConfig) -> Any:
    """open_clip's CLIP BPE tokenizer padding/truncating to the model's context length.

    Call it on a list of strings to get LongTensor [N, context_length].
    """
    from open_clip.tokenizer import SimpleTokenizer  # imported here: heavy, and only data code needs it

    tokenizer = SimpleTokenizer(context_length=cfg.context_length)
    if len(tokenizer.encoder) != cfg.vocab_size:
        raise ValueError(f"tokenizer vocabulary {len(tokenizer.encoder)} != vocab_size {cfg.vocab_size}")
    return tokenizer
