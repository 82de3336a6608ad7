"""The pre-training input pipeline: webdataset shards -> augmented, tokenised batches, resumable.

Shards are the `pairs` stage's webdataset tars (`<key>.jpg` + `<key>.txt`), read by the shard
reader of `cocu.data.shards` (`shard_images`: only the image members are read) and shuffled by
webdataset's `shuffle` buffer.
Captions come from the manifest. Decoding and augmentation run in the DataLoader workers.
Per-key data (keys, captions, shard of each row) is held in flat arrays, not Python objects
(`cocu.training.flat`): forked workers share it instead of copying it.

Epoch plan (everything is computed from the manifest, nothing from a hard-coded length):

- Each rank divides its epoch into `V = data.streams` *streams*. Batch `j` of an epoch (per rank)
  is local batch `j // V` of stream `j % V`.
- `split: shards`: every stream owns whole shards (the same ones every epoch; greedy largest-first
  balancing by the manifest's per-shard counts), reads them in a per-epoch random order and
  shuffles its samples with a buffer. `split: samples`: every stream reads all shards and keeps
  the rows a per-epoch permutation of the manifest assigns to it (exact balance, but every
  stream reads every shard: use it only when there are few shards). `auto` takes `shards` when
  it loses at most 2% of the batches of an epoch, else `samples`.
- Steps per epoch (per rank) `S = len(manifest) // (world_size * batch_size)` in `samples` mode,
  and at most that in `shards` mode (bounded by what the smallest stream can fill). Every rank
  gets exactly `S` batches, the remainder is dropped, and no sample is used twice in an epoch,
  so DDP ranks never wait on each other at an epoch's end.
- Workers serve streams, they do not define them: a DataLoader with `W = data.workers` processes
  hands out batches round robin, so worker `w` serves positions `start + w, start + w + W, ...`;
  `W` must divide `V`, so that all batches of a stream in an epoch fall to one worker, which
  reads its `V / W` streams interleaved. `W = 0` reads every stream in the training process. The
  batch sequence is therefore a function of (manifest, shards, `streams`, `split`,
  `shuffle_buffer`, seed, batch size, world size, rank) and the same for every worker count.
- Randomness is seeded, never global: the shard order and shuffle buffer by (seed, epoch, rank,
  stream), the crop/flip/jitter/erasing and the prompt sampling of a sample by (seed, epoch, key).
  Nothing draws from the global RNGs of the training process: the DataLoader takes the worker
  base seed from its own generator (seeded by (seed, rank)), not from torch's global generator,
  so that creating the iterator at step 0 or on resume leaves the training RNG stream (Gumbel
  noise, drop path) where an uninterrupted run has it. The workers' own global RNGs (which torch
  seeds from that base seed) are not used either: in process or in workers, the same batches.
- Only samples whose (shard, key) is a manifest row are used (the `pairs` stage validated those);
  others are skipped and counted. A shard that yields fewer manifest rows than recorded is an error.
- Resume: `make_batches(s)` yields exactly `make_batches(0)` from its item `s` on; the skipped
  batches are read but not decoded.

Shapes: B batch per rank, K prompts, T context length, S output image side.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
import webdataset as wds
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_image

from cocu.config import DataConfig
from cocu.data.shards import ShardRef, as_shard_ref, shard_images
from cocu.training.augment import NUM_UNIFORMS, augment, erase_boxes
from cocu.training.flat import KeyIndex, StringTable, read_only

log = logging.getLogger(__name__)

Tokenizer = Callable[[list[str]], Tensor]  # texts -> int64 [n, T]
PromptFn = Callable[[str, str, np.random.Generator], list[str]]  # (key, caption, rng) -> [caption] + K
BALANCE_TOLERANCE = 0.02  # `auto` split: shards mode if it drops at most this fraction of an epoch


def _seed(*parts: object) -> int:
    """A 63-bit seed from any values, stable across processes (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


# --------------------------------------------------------------------------------------------
# epoch plan


@dataclass(frozen=True)
class SplitPlan:
    mode: str  # "shards" | "samples"
    streams: int  # V per rank
    steps_per_epoch: int  # S batches per rank
    shards_of_slot: tuple[tuple[int, ...], ...]  # shards mode: [world * V] shard indices per stream


def plan_split(shard_counts: Sequence[int], world_size: int, streams: int, batch_size: int,
               mode: str = "auto") -> SplitPlan:
    """Divide an epoch among `world_size * streams` streams (module docstring)."""
    counts = np.asarray(shard_counts, dtype=np.int64)  # [n_shards] manifest rows per shard
    nominal = int(counts.sum()) // (world_size * batch_size)
    if nominal == 0:
        raise ValueError(f"{int(counts.sum())} samples are fewer than one global batch "
                         f"({world_size} ranks x {batch_size})")
    slots = world_size * streams
    load = np.zeros(slots, dtype=np.int64)
    owned: list[list[int]] = [[] for _ in range(slots)]
    for shard in np.argsort(-counts, kind="stable"):  # largest first onto the least loaded stream
        slot = int(np.argmin(load))
        owned[slot].append(int(shard))
        load[slot] += counts[shard]
    full = (load // batch_size).reshape(world_size, streams)  # whole batches each stream can fill
    by_shards = min(nominal, int((full * streams + np.arange(streams)).min()))  # j%V == v needs j <= a*V+v
    if mode == "auto":
        mode = "shards" if by_shards >= (1 - BALANCE_TOLERANCE) * nominal and by_shards > 0 else "samples"
    if mode == "shards":
        if by_shards == 0:
            raise ValueError(f"split 'shards': {len(counts)} shards cannot fill a batch on each of "
                             f"{slots} streams")
        return SplitPlan("shards", streams, by_shards, tuple(tuple(sorted(o)) for o in owned))
    if mode != "samples":
        raise ValueError(f"unknown split mode {mode!r} (auto | shards | samples)")
    return SplitPlan("samples", streams, nominal, ())


def check_workers(streams: int, workers: int) -> None:
    """`workers` (0 = in process) must divide `streams`: each worker then serves whole streams."""
    if streams < 1:
        raise ValueError(f"data.streams must be >= 1, got {streams}")
    if workers < 0 or (workers > 0 and streams % workers):
        fits = max(w for w in range(1, min(max(workers, 1), streams) + 1) if streams % w == 0)
        raise ValueError(f"data.workers ({workers}) cannot serve data.streams ({streams}): the worker count "
                         f"must be 0 or divide the stream count (e.g. data.workers: {fits}); changing "
                         f"data.streams changes the batch order, changing data.workers does not")


def _column(manifest: pd.DataFrame | pa.Table, name: str) -> pa.ChunkedArray:
    """A string column of the manifest as arrow (from a pandas frame: no new Python objects)."""
    if isinstance(manifest, pa.Table):
        return manifest.column(name).cast(pa.large_string())
    return pa.chunked_array([pa.array(manifest[name], type=pa.large_string())])


# --------------------------------------------------------------------------------------------
# tokens


class TokenCache:
    """Tokenise texts through an LRU cache of rows (int32 [T]): template x concept strings recur."""

    def __init__(self, tokenizer: Tokenizer, maxsize: int) -> None:
        self.tokenizer, self.maxsize = tokenizer, maxsize
        self.rows: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:  # [n, T] int32
        missing = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if missing:
            new = self.tokenizer(missing).numpy().astype(np.int32)  # [m, T]
            self.rows.update(zip(missing, new))
        for t in texts:
            self.rows.move_to_end(t)
        out = np.stack([self.rows[t] for t in texts])
        while len(self.rows) > self.maxsize:
            self.rows.popitem(last=False)
        return out


# --------------------------------------------------------------------------------------------
# the pipeline


class PretrainData:
    """The pre-training batch stream of one rank; `make_batches(start)` is the loop's BatchFactory.

    Batches: `image` float [B, 3, S, S], `text` int64 [B, T] (captions), `prompts` int64 [B, K, T]
    (when K > 0) and `key` list[str] (when `with_keys`).

    `manifest` (`key`, `shard`, `caption`; a pandas frame or, with no Python object per row at
    all, an arrow table) is kept as flat arrays (`cocu.training.flat`): a key index (key -> row),
    a caption table and the row's shard index int32 [N], so that DataLoader workers share them.
    """

    def __init__(self, shards: Sequence[Path | str | ShardRef], manifest: pd.DataFrame | pa.Table, prompts: PromptFn,
                 tokenizer: Tokenizer, cfg: DataConfig, *, image_size: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0, pin_memory: bool = False,
                 with_keys: bool = True, image_keys: Sequence[str] = ("jpg", "jpeg", "png", "webp")) -> None:
        self.cfg, self.prompts, self.tokenizer = cfg, prompts, tokenizer
        self.image_size, self.batch_size, self.seed = int(image_size), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.pin_memory, self.with_keys, self.image_keys = pin_memory, with_keys, tuple(image_keys)
        by_id = {r.id: r for r in map(as_shard_ref, shards)}  # the manifest's `shard` column -> file
        shard_codes = pc.dictionary_encode(_column(manifest, "shard").combine_chunks())  # a string per shard
        names = sorted(shard_codes.dictionary.to_pylist())
        missing = [n for n in names if n not in by_id]
        if missing:
            raise FileNotFoundError(f"{len(missing)} shards of the manifest are not among the shard files, "
                                    f"e.g. {missing[0]} (re-run the `pairs` stage?)")
        self.shard_paths = [str(by_id[n].path) for n in names]  # shard index -> path
        self.shard_refs = [by_id[n] for n in names]  # shard index -> source (qualifies the tar's keys)
        position = {n: i for i, n in enumerate(names)}
        rank_of_code = np.array([position[n] for n in shard_codes.dictionary.to_pylist()], np.int32)
        # per key: flat arrays only (flat.py), shared by forked DataLoader workers without copies
        self.row_shard = read_only(rank_of_code[shard_codes.indices.to_numpy()])  # [N] int32
        self.key_index = KeyIndex(_column(manifest, "key"), what="manifest keys")  # key -> row
        self.captions = StringTable(_column(manifest, "caption"))  # row -> caption
        self.num_rows = len(self.row_shard)
        self.shard_of_url = {p: i for i, p in enumerate(self.shard_paths)}
        counts = np.bincount(self.row_shard, minlength=len(names))
        self.plan = plan_split(counts, world_size, cfg.streams, batch_size, cfg.split)
        self.steps_per_epoch = self.plan.steps_per_epoch
        self._tokens: TokenCache | None = None
        log.info("data: %d pairs in %d shards, split %s, %d streams/rank, %d steps/epoch of %d x %d",
                 self.num_rows, len(names), self.plan.mode, self.plan.streams, self.steps_per_epoch,
                 world_size, batch_size)

    @property
    def samples_per_epoch(self) -> int:
        """Samples used per epoch over all ranks (the loop's `samples_per_epoch`)."""
        return self.steps_per_epoch * self.batch_size * self.world_size

    def __call__(self, start_batch: int) -> Iterator[dict]:
        return self.make_batches(start_batch)

    def make_batches(self, start_batch: int = 0, stop_batch: int | None = None) -> Iterator[dict]:
        """Batches `start_batch`, `start_batch + 1`, ... (endless, or up to `stop_batch`), counted
        in this rank's batches since the start of training (epoch = index // steps_per_epoch)."""
        if self.cfg.workers == 0:
            return self._worker_batches(0, 1, start_batch, stop_batch)
        # its own generator: DataLoader draws the workers' base seed from it when the iterator is
        # made; by default it would draw from torch's global RNG, one draw at step 0 in an
        # uninterrupted run and one at step s after a resume, shifting the training RNG stream
        loader_rng = torch.Generator().manual_seed(_seed(self.seed, self.rank, "loader"))
        loader = DataLoader(_Batches(self, start_batch, stop_batch), batch_size=None,
                            num_workers=self.cfg.workers, pin_memory=self.pin_memory,
                            prefetch_factor=self.cfg.prefetch, generator=loader_rng)
        return iter(loader)

    # -- inside a worker -------------------------------------------------------------------

    def _worker_batches(self, worker: int, workers: int, start: int, stop: int | None) -> Iterator[dict]:
        """The batches that server `worker` of `workers` yields: positions start + worker,
        start + worker + workers, ... (a DataLoader's round robin). `workers` divides V, so the
        positions of one stream within an epoch all fall to one server: it keeps each of its
        streams open and takes their batches in turn."""
        steps, streams = self.steps_per_epoch, self.plan.streams
        check_workers(streams, workers)
        open_streams: dict[int, tuple[Iterator[dict], list[int]]] = {}  # stream -> (batches, [left])
        epoch_open = -1
        g = start + worker
        while stop is None or g < stop:
            epoch, j = divmod(g, steps)
            if epoch != epoch_open:
                open_streams.clear()
                epoch_open = epoch
            stream = j % streams
            if stream not in open_streams:
                end = steps if stop is None else min(steps, stop - epoch * steps)
                count = len(range(j, end, streams))  # all of them are this server's (workers | V)
                open_streams[stream] = self._stream_batches(epoch, stream, j // streams, count), [count]
            batches, left = open_streams[stream]
            yield next(batches)
            left[0] -= 1
            if left[0] == 0:  # run the stream to its end (it logs what it skipped)
                next(batches, None)
                del open_streams[stream]
            g += workers

    def _stream_rows(self, epoch: int, stream: int) -> tuple[list[str], np.ndarray | None]:
        """(shard paths in this epoch's order, the rows the stream keeps or None = all rows read)."""
        slot = self.rank * self.plan.streams + stream
        rng = np.random.default_rng(_seed(self.seed, epoch, self.rank, stream, "shards"))
        if self.plan.mode == "shards":
            shards = list(self.plan.shards_of_slot[slot])
            return [self.shard_paths[i] for i in rng.permutation(shards).tolist()], None
        b, world = self.batch_size, self.world_size
        order = np.random.default_rng(_seed(self.seed, epoch, "rows")).permutation(self.num_rows)
        used = order[: self.steps_per_epoch * world * b].reshape(self.steps_per_epoch, world, b)
        mine = used[stream:: self.plan.streams, self.rank].ravel()  # batches j = stream (mod V)
        keep = np.zeros(self.num_rows, dtype=bool)
        keep[mine] = True
        return [self.shard_paths[i] for i in rng.permutation(len(self.shard_paths)).tolist()], keep

    def _members(self, urls: list[str], keep: np.ndarray | None,
                 skipped: dict[str, int]) -> Iterator[tuple[int, str, bytes]]:
        """(manifest row, key, image bytes) of the stream's samples, in file order."""
        for url in urls:
            shard = self.shard_of_url[url]
            ref = self.shard_refs[shard]
            for raw_key, image in shard_images(url, self.image_keys, skipped):
                key = ref.qualify(raw_key)  # as the manifest holds it: `<source>/<key>` for a named source
                row = self.key_index.find(key)
                if row < 0 or self.row_shard[row] != shard:
                    skipped["not_in_manifest"] = skipped.get("not_in_manifest", 0) + 1
                    continue
                if keep is not None and not keep[row]:
                    continue
                if image is None:
                    raise RuntimeError(f"{url}:{key}: no image member (shards changed since the manifest "
                                       "was written? re-run the `pairs` stage)")
                yield row, key, image

    def _stream_batches(self, epoch: int, stream: int, first: int, count: int) -> Iterator[dict]:
        """Local batches first .. first + count - 1 of one stream in one epoch."""
        urls, keep = self._stream_rows(epoch, stream)
        skipped: dict[str, int] = {}
        samples = self._members(urls, keep, skipped)
        if self.cfg.shuffle_buffer > 0:
            rng = random.Random(_seed(self.seed, epoch, self.rank, stream, "buffer"))
            samples = wds.shuffle(self.cfg.shuffle_buffer, initial=self.cfg.shuffle_buffer, rng=rng)(samples)
        b = self.batch_size
        samples = islice(samples, first * b, (first + count) * b)  # skipped batches: read, not decoded
        for i in range(count):
            chunk = list(islice(samples, b))
            if len(chunk) < b:
                raise RuntimeError(f"epoch {epoch}, rank {self.rank}, stream {stream}: the shards held fewer "
                                   f"samples than the manifest lists ({urls[0]}, ...); re-run `pairs`")
            yield self._collate(epoch, chunk)
        if skipped:
            log.warning("epoch %d rank %d stream %d: skipped %s", epoch, self.rank, stream, skipped)

    def _collate(self, epoch: int, chunk: list[tuple[int, str, bytes]]) -> dict:
        if self._tokens is None:
            self._tokens = TokenCache(self.tokenizer, self.cfg.token_cache)
        keys = [key for _, key, _ in chunk]
        rngs = [np.random.default_rng(_seed(self.seed, epoch, k)) for k in keys]  # per (seed, epoch, key)
        u = np.stack([r.random(NUM_UNIFORMS) for r in rngs])  # [B, NUM_UNIFORMS], first draws
        texts = [self.prompts(k, self.captions[row], r) for (row, k, _), r in zip(chunk, rngs)]
        images = [self._decode(key, data) for _, key, data in chunk]
        image = augment(images, u, self.cfg, self.image_size)  # [B, 3, S, S]
        if self.cfg.random_erasing > 0:
            for i, (top, left, h, w) in enumerate(erase_boxes(self.image_size, u, self.cfg.random_erasing)):
                if h > 0:  # timm "pixel" mode: per-pixel standard normal noise
                    noise = rngs[i].standard_normal((3, h, w), dtype=np.float32)
                    image[i, :, top:top + h, left:left + w] = torch.from_numpy(noise)
        n_texts = len(texts[0])
        tokens = torch.from_numpy(self._tokens([t for ts in texts for t in ts])).long()  # [B * (1 + K), T]
        tokens = tokens.view(len(chunk), n_texts, -1)
        batch = {"image": image, "text": tokens[:, 0].contiguous()}
        if n_texts > 1:
            batch["prompts"] = tokens[:, 1:].contiguous()  # [B, K, T]
        if self.with_keys:
            batch["key"] = keys
        return batch

    @staticmethod
    def _decode(key: str, data: bytes) -> Tensor:
        try:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError as e:
            raise RuntimeError(f"{key}: image does not decode although the manifest lists it: {e}") from e


class _Batches(IterableDataset):
    """What each DataLoader worker iterates: its share of the batch sequence (round robin)."""

    def __init__(self, data: PretrainData, start: int, stop: int | None) -> None:
        self.data, self.start, self.stop = data, start, stop

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.data._worker_batches(worker, workers, self.start, self.stop)
