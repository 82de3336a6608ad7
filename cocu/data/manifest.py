"""The manifest: one row per valid pair, in shard order; the row index is every later array's row.

Columns `key`, `shard`, `caption` are what training and curation read. On the synthetic world the
hidden ground truth sits in separate `gt_*` columns that only metrics and the explicitly labelled
oracle variant read, through `read_ground_truth`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cocu.data.shards import SkipCounter, iter_samples

TRAINING_COLUMNS = ("key", "shard", "caption")
GROUND_TRUTH_COLUMNS = ("gt_present", "gt_mentioned")


def index_shards(
    shards: Sequence[Path],
    counter: SkipCounter,
    image_keys: Sequence[str] = ("jpg", "jpeg", "png", "webp"),
    caption_key: str = "txt",
    progress: Iterable | None = None,
) -> pd.DataFrame:
    """Validate every sample (key, full image decode, UTF-8 caption) and index the valid ones.

    A key's row is its first valid sample in shard order; a valid sample whose key already has a
    row is skipped and counted as `duplicate_key` (repeats inside one shard are counted by the
    reader, `cocu.data.shards.iter_samples`).
    """
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for sample in iter_samples(shards, counter, image_keys=image_keys, caption_key=caption_key, decode=False):
        if sample.key in seen:
            counter.add("duplicate_key", f"{sample.shard}:{sample.key}")
            continue
        seen.add(sample.key)
        rows.append((sample.key, sample.shard, sample.caption))
        if progress is not None:
            progress.update(1)
    return pd.DataFrame(rows, columns=list(TRAINING_COLUMNS))


def write_manifest(frame: pd.DataFrame, path: Path | str) -> None:
    """Write the manifest as parquet (byte-deterministic for the same content and library versions)."""
    fields = [pa.field(c, pa.string()) for c in TRAINING_COLUMNS]
    fields += [pa.field(c, pa.list_(pa.string())) for c in GROUND_TRUTH_COLUMNS if c in frame.columns]
    table = pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def read_manifest(path: Path | str) -> pd.DataFrame:
    """The training view of the manifest: `key`, `shard`, `caption` only (never the ground truth)."""
    return read_manifest_table(path).to_pandas()


def read_manifest_table(path: Path | str) -> pa.Table:
    """`read_manifest` as an arrow table: no Python object per row (what pre-training holds)."""
    return pq.read_table(_existing(path), columns=list(TRAINING_COLUMNS))


def read_ground_truth(path: Path | str) -> pd.DataFrame:
    """`key` + the hidden ground-truth columns, for metrics and the oracle variant only."""
    path = _existing(path)
    names = pq.read_schema(path).names
    missing = [c for c in GROUND_TRUTH_COLUMNS if c not in names]
    if missing:
        raise KeyError(f"{path}: no ground-truth columns {missing}: only the synthetic world has them")
    frame = pq.read_table(path, columns=["key", *GROUND_TRUTH_COLUMNS]).to_pandas()
    for c in GROUND_TRUTH_COLUMNS:
        frame[c] = frame[c].map(lambda v: tuple(v))
    return frame


def _existing(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (run the `pairs` stage first: dvc repro pairs)")
    return path
