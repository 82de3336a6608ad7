"""Memory of one pre-training data worker per pair: 100k vs 1M synthetic pairs (a memory, not a
timing, measurement).

    python benchmarks/data_memory.py                        # 100k and 1M, flat (what the code holds)
    python benchmarks/data_memory.py --layouts flat objects # + the former per-key Python objects

For each size and layout a fresh Python process builds the per-key data of pre-training as the
`pretrain` stage does: the manifest (`key`, `shard`, `caption`) as `PretrainData` holds it and
the concept archives (`load_archives`' layout, about `--concepts` entries per pair), then starts
one real DataLoader worker (forked, as `PretrainData.make_batches` does). The worker passes
once over every pair, as an epoch does, in a scattered order that needs no per-pair list: finds
the key's row, reads the caption and the archive. It then reports its own memory (psutil): RSS
(resident, including the pages it shares with the training process), USS (pages only it holds:
what each additional worker costs) and PSS. `objects` rebuilds the former layout for comparison:
keys and captions as Python lists, a dict key -> row for the manifest and one for the archives
(the archives' arrays stay flat, as they were), whose reference counts the pass writes, so
copy-on-write copies their pages into the worker.

Bytes per pair: the structures' own size / N (`arrays`), the worker's RSS / N and USS / N, and
the marginal RSS per pair between the two sizes, (RSS(1M) - RSS(100k)) / 900k, which removes the
interpreter's and torch's fixed cost.

Synthetic pairs: source-qualified keys (`cc12m/000000042`, 15 bytes), captions of 6-14 words
(about 60 bytes, CC3M's mean), 10,000 pairs per shard, archive sizes uniform in
[0, 2 * concepts] over a 5,000-concept vocabulary.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
import pyarrow.compute as pc

WORDS = ("a photo of the small red large blue old new man woman dog cat car tree house street city "
         "beach sky water people group standing sitting on in with near next to at during day night "
         "view front white black green young two three some field road building table room").split()


def synthetic_manifest(n: int, seed: int = 0) -> pa.Table:
    """`key`, `shard`, `caption` of n pairs, built in arrow (no Python object per pair)."""
    rng = np.random.default_rng(seed)
    index = pa.array(np.arange(n))
    keys = pc.binary_join_element_wise("cc12m/", pc.utf8_lpad(pc.cast(index, pa.string()), 9, "0"), "")
    shards = pc.binary_join_element_wise(pc.utf8_lpad(pc.cast(pa.array(np.arange(n) // 10_000), pa.string()),
                                                      6, "0"), ".tar", "")
    lengths = rng.integers(6, 15, n)
    words = pa.array(WORDS).take(pa.array(rng.integers(0, len(WORDS), int(lengths.sum()))))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    captions = pc.binary_join(pa.ListArray.from_arrays(offsets, words), " ")
    return pa.table({"key": keys, "shard": shards, "caption": captions})


def synthetic_archives(keys: pa.Array, concepts: int, seed: int = 1) -> Any:
    from cocu.training.prompts import ConceptArchives

    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 2 * concepts + 1, len(keys))
    m = int(sizes.sum())
    return ConceptArchives(keys, [f"concept {i}" for i in range(5000)],
                           np.concatenate([[0], np.cumsum(sizes)]), rng.integers(0, 5000, m).astype(np.int32),
                           rng.random(m, dtype=np.float32), rng.integers(0, 8, m).astype(np.int32))


class ObjectLayout:
    """The former layout of the same data: Python lists and dicts, one object (or more) per pair."""

    def __init__(self, manifest: pa.Table, archives: Any) -> None:
        self.keys: list[str] = manifest.column("key").to_pylist()
        self.captions: list[str] = manifest.column("caption").to_pylist()
        self.row_of = {k: i for i, k in enumerate(self.keys)}
        self.archive_index = {k: i for i, k in enumerate(self.keys)}
        self.archives = archives

    def visit(self, key: str) -> int:
        row = self.row_of[key]
        caption = self.captions[row]
        i = self.archive_index[key]
        lo, hi = self.archives.offsets[i], self.archives.offsets[i + 1]
        return len(caption) + len(self.archives.ids[lo:hi])


class FlatLayout:
    """What `PretrainData` and `ConceptArchives` hold (cocu.training.flat)."""

    def __init__(self, manifest: pa.Table, archives: Any) -> None:
        from cocu.config import load_params
        from cocu.training.data import PretrainData

        shards = [f"/nonexistent/{s}" for s in pc.unique(manifest.column("shard")).to_pylist()]  # names only
        self.data = PretrainData(shards, manifest, lambda key, caption, rng: [caption], lambda texts: None,
                                 load_params(REPO / "params.yaml").data, image_size=8, batch_size=64)
        self.archives = archives

    def visit(self, key: str) -> int:
        row = self.data.key_index.find(key)
        caption = self.data.captions[row]
        return len(caption) + len(self.archives.lookup(key).concepts)

    @property
    def nbytes(self) -> int:
        d = self.data
        return d.key_index.nbytes + d.captions.nbytes + d.row_shard.nbytes + self.archives.nbytes


def measure(n: int, layout: str, concepts: int) -> dict[str, Any]:
    """In this process: build the data, fork one DataLoader worker, pass over every pair there."""
    import psutil
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    import cocu.training.data  # noqa: F401 (both layouts: the same modules loaded, the same fixed cost)

    manifest = synthetic_manifest(n)
    archives = synthetic_archives(manifest.column("key").combine_chunks(), concepts)
    held = FlatLayout(manifest, archives) if layout == "flat" else ObjectLayout(manifest, archives)
    arrays = held.nbytes if layout == "flat" else None
    del manifest
    gc.collect()
    pa.default_memory_pool().release_unused()  # the synthetic table's buffers, freed above

    step = next(a for a in range(n // 2 + 1, n) if math.gcd(a, n) == 1)  # i -> i * step % n: a permutation

    class Pass(IterableDataset):
        def __iter__(self) -> Iterator[dict[str, Any]]:
            total = 0
            for k in range(n):  # every pair once, scattered, without storing an order per pair
                total += held.visit(f"cc12m/{k * step % n:09d}")
            mem = psutil.Process().memory_full_info()
            yield {"rss": mem.rss, "uss": mem.uss, "pss": mem.pss, "checksum": total}

    parent_rss = psutil.Process().memory_info().rss
    loader = DataLoader(Pass(), batch_size=None, num_workers=1, multiprocessing_context="fork",
                        generator=torch.Generator().manual_seed(0))
    worker = next(iter(loader))
    return {"n": n, "layout": layout, "arrays": arrays, "parent_rss": parent_rss,
            **{k: int(v) for k, v in worker.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--layouts", nargs="+", choices=["flat", "objects"], default=["flat"])
    parser.add_argument("--concepts", type=int, default=8, help="mean archive entries per pair")
    parser.add_argument("--one", nargs=2, metavar=("N", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], args.concepts)))
        return
    rows = {}
    for layout in args.layouts:
        for n in args.sizes:
            command = [sys.executable, __file__, "--one", str(n), layout, "--concepts", str(args.concepts)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows[layout, n] = json.loads(out.strip().splitlines()[-1])
    mib = 2 ** 20
    print(f"one DataLoader worker after a pass over every pair "
          f"({args.concepts} archive entries per pair on average)")
    print(f"{'layout':8} {'pairs':>9} {'arrays B/pair':>13} {'RSS MiB':>8} {'USS MiB':>8} {'PSS MiB':>8} "
          f"{'RSS B/pair':>10} {'USS B/pair':>10}")
    for (layout, n), r in rows.items():
        arrays = f"{r['arrays'] / n:13.1f}" if r["arrays"] is not None else f"{'-':>13}"
        print(f"{layout:8} {n:9,d} {arrays} {r['rss'] / mib:8.1f} {r['uss'] / mib:8.1f} "
              f"{r['pss'] / mib:8.1f} "
              f"{r['rss'] / n:10.1f} {r['uss'] / n:10.1f}")
    for layout in args.layouts:
        sizes = sorted(n for lay, n in rows if lay == layout)
        if len(sizes) >= 2:
            lo, hi = rows[layout, sizes[0]], rows[layout, sizes[-1]]
            d = sizes[-1] - sizes[0]
            print(f"{layout}: marginal per pair from {sizes[0]:,} to {sizes[-1]:,}: "
                  f"RSS {(hi['rss'] - lo['rss']) / d:.1f} B, "
                  f"USS {(hi['uss'] - lo['uss']) / d:.1f} B")


if __name__ == "__main__":
    main()
