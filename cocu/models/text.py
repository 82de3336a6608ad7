"""CLIP-style text transformer: causal self-attention, final LayerNorm, end-of-text feature.

Shapes: N texts, T tokens (<= context_length), W width.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from cocu.config import InitScheme, TextEncoderConfig
from cocu.models.layers import Block, init_weights


class TextTransformer(nn.Module):
    """Tokens [N, T] (CLIP BPE ids, zero-padded) -> feature at the end-of-text token [N, W].

    The end-of-text token has the largest id in CLIP's vocabulary, so its position is the argmax
    of each row, as in CLIP.
    """

    def __init__(self, cfg: TextEncoderConfig, init: InitScheme = "groupvit") -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.width)
        self.apply(partial(init_weights, scheme=init))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.shape[1] > self.cfg.context_length:
            raise ValueError(f"{tokens.shape[1]} tokens exceed the context length {self.cfg.context_length}")
        eot = tokens.argmax(dim=-1)  # [N] end-of-text position of each text
        buckets = length_buckets(eot + 1)
        if len(buckets) == 1:
            t = int(eot.max()) + 1
            return self._encode(self.token_embedding(tokens[:, :t]), eot)
        # Texts of similar length together: padding costs compute, not results. Each bucket is
        # trimmed after its own longest text; the token embedding is looked up once for all
        # buckets (each lookup's backward writes a dense [vocab, W] gradient, the largest tensor
        # of a small model), then split back into the buckets.
        lengths = [int(eot[rows].max()) + 1 for rows in buckets]
        flat = torch.cat([tokens[rows, :t].reshape(-1) for rows, t in zip(buckets, lengths)])
        embedded = self.token_embedding(flat).split([len(rows) * t for rows, t in zip(buckets, lengths)])
        feats = [self._encode(x.view(len(rows), t, -1), eot[rows])
                 for x, rows, t in zip(embedded, buckets, lengths)]
        order = torch.cat(buckets)  # row of the stacked bucket features -> text index
        return torch.cat(feats)[order.argsort()]  # [N, W] in the input order

    def _encode(self, x: Tensor, eot: Tensor) -> Tensor:
        """Token embeddings [n, T', W] of texts whose end-of-text tokens sit at `eot` [n] (all
        < T') -> features [n, W]. Columns after the last end-of-text token are padding that no
        kept feature can see (causal attention): dropping them changes nothing but the cost. Only
        the end-of-text outputs are kept, so the last block computes its queries, output
        projection and MLP at those positions only, and the final LayerNorm (per token) too."""
        t = x.shape[1]
        x = x + self.positional_embedding[:t]  # [n, T', W]
        for blk in self.blocks[:-1]:
            x = blk(x, causal=True)
        return self.ln_final(self.blocks[-1].forward_at(x, eot))  # [n, W]


def length_buckets(lengths: Tensor, max_buckets: int = 4, min_saving: float = 0.2) -> list[Tensor]:
    """Row indices of texts grouped by length, so that each group is padded only to its own longest.

    Sorts the lengths [N] and cuts the sorted order into at most `max_buckets` equal-count groups;
    keeps one group (all rows) unless bucketing removes at least `min_saving` of the padded tokens
    (each extra group costs kernel launches). Captions (long) and templated prompts (short) share a
    batch, so this roughly halves the text tower's work in pre-training.
    """
    n = lengths.shape[0]
    everything = [torch.arange(n, device=lengths.device)]
    if n < 2 * max_buckets:
        return everything
    order = lengths.argsort(stable=True)
    groups = [g for g in order.tensor_split(max_buckets) if len(g)]
    padded_all = n * int(lengths.max())
    padded_groups = sum(len(g) * int(lengths[g].max()) for g in groups)
    return groups if padded_groups <= (1 - min_saving) * padded_all else everything


def build_tokenizer(cfg: TextEncoderConfig) -> Any:
    """open_clip's CLIP BPE tokenizer padding/truncating to the model's context length.

    Call it on a list of strings to get LongTensor [N, context_length].
    """
    from open_clip.tokenizer import SimpleTokenizer  # imported here: heavy, and only data code needs it

    tokenizer = SimpleTokenizer(context_length=cfg.context_length)
    if len(tokenizer.encoder) != cfg.vocab_size:
        raise ValueError(f"tokenizer vocabulary {len(tokenizer.encoder)} != vocab_size {cfg.vocab_size}")
    return tokenizer
