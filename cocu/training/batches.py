"""The batch-stream contract of `train`, and an in-memory implementation (tests, benchmarks).

Contract. A `BatchFactory` is called as `make_batches(start_batch)` where `start_batch` is the
number of micro-batches this process has already consumed (optimizer step x accum_steps). It
returns an iterator over this process's micro-batches from that position on, each a dict

    image   float [b, 3, H, W]
    text    int64 [b, T]      caption tokens
    prompts int64 [b, K, T]   (optional) K prompt tokens per image

with b = TrainConfig.batch_size on every process. Determinism: `make_batches(s)` must yield
exactly what `make_batches(0)` yields after its first `s` items, so that a resumed run sees the
same data as an uninterrupted one. The stream must not end before training does (repeat epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

Batch = dict[str, Tensor]
BatchFactory = Callable[[int], Iterator[Batch]]


@dataclass(frozen=True)
class InMemoryBatches:
    """Endless epochs over in-memory tensors, reshuffled per epoch from (seed, epoch), split by rank.

    Each global batch of world_size x batch_size samples is cut into contiguous per-rank slices
    (rank r gets slice r), so the concatenation over ranks is the single-process batch of the
    same global size. The last incomplete global batch of an epoch is dropped.
    """

    images: Tensor  # [N, 3, H, W]
    texts: Tensor  # [N, T]
    prompts: Optional[Tensor]  # [N, K, T]
    batch_size: int  # per process
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.images) // (self.batch_size * self.world_size)
        if n == 0:
            raise ValueError(f"{len(self.images)} samples < one global batch of "
                             f"{self.batch_size * self.world_size}")
        return n

    def __call__(self, start_batch: int) -> Iterator[Batch]:
        index = start_batch
        global_batch = self.batch_size * self.world_size
        while True:
            epoch, within = divmod(index, self.batches_per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
            lo = within * global_batch + self.rank * self.batch_size
            take = torch.from_numpy(order[lo : lo + self.batch_size])
            batch = {"image": self.images[take], "text": self.texts[take]}
            if self.prompts is not None:
                batch["prompts"] = self.prompts[take]
            yield batch
            index += 1


def random_pairs(n: int, img_size: int, context_length: int, num_prompts: int, seed: int = 0,
                 vocab_size: int = 49408, max_tokens: Optional[int] = None
                 ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Random images [n, 3, S, S] and distinct token sequences shaped like CLIP BPE output
    (start token, 1..max_tokens ids, end-of-text = vocab_size - 1, zero padding): texts [n, T],
    prompts [n, K, T]. max_tokens defaults to the whole context. For tests and benchmarks only."""
    longest = min(max_tokens or context_length, context_length - 2)
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, img_size, img_size, generator=g)

    def tokens(count: int) -> Tensor:
        out = torch.zeros(count, context_length, dtype=torch.long)
        lengths = torch.randint(1, longest + 1, (count,), generator=g)
        for i, length in enumerate(lengths.tolist()):
            out[i, 0] = vocab_size - 2  # start of text
            out[i, 1 : 1 + length] = torch.randint(1, vocab_size - 2, (length,), generator=g)
            out[i, 1 + length] = vocab_size - 1  # end of text
        return out

    texts = tokens(n)
    prompts = tokens(n * num_prompts).reshape(n, num_prompts, context_length) if num_prompts else None
    return images, texts, prompts
