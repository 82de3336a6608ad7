"""The `pairs` stage's library: write the synthetic corpora, or index existing img2dataset shards.

Both profiles end in the same place: the shards on disk are read back by the validating reader
(`manifest.index_shards`), so the manifest lists exactly the samples that later stages can read,
and every skipped sample is counted by reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cocu.config import PairsConfig, WorldConfig
from cocu.data import manifest, world
from cocu.data.shards import RawSample, ShardRef, SkipCounter, encode_jpeg, write_shards

log = logging.getLogger(__name__)


@dataclass
class CorpusStats:
    """What a corpus build wrote and read back; goes to the stage metrics and MLflow."""

    name: str
    shards: int = 0
    written: int = 0  # samples written (synthetic) or found (real)
    valid: int = 0  # rows of the manifest
    skipped: dict[str, int] = field(default_factory=dict)
    mention_rate: float | None = None  # synthetic: named / present concepts
    present_per_image: float | None = None
    seconds: float = 0.0

    def as_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {f"{self.name}/{k}": float(v) for k, v in
                                 (("shards", self.shards), ("written", self.written), ("valid", self.valid),
                                  ("seconds", self.seconds))}
        out.update({f"{self.name}/skipped/{k}": float(v) for k, v in self.skipped.items()})
        if self.mention_rate is not None:
            out[f"{self.name}/mention_rate"] = self.mention_rate
            out[f"{self.name}/present_per_image"] = float(self.present_per_image or 0.0)
        return out


def _world_samples(
    cfg: WorldConfig, n: int, stream: str, truth: list[tuple[str, tuple[str, ...], tuple[str, ...]]]
) -> Iterator[RawSample]:
    for i, sample in enumerate(world.generate(cfg, n, stream)):
        key = f"{stream}{i:08d}"
        truth.append((key, sample.present, sample.mentioned))
        yield RawSample(key=key, image=encode_jpeg(sample.image, cfg.jpeg_quality), caption=sample.caption)


def build_synthetic_corpus(
    cfg: WorldConfig, n: int, stream: str, shards_dir: Path, manifest_path: Path
) -> CorpusStats:
    """Generate `n` pairs of the world's `stream`, write shards, read them back into a manifest."""
    start = time.perf_counter()
    truth: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    samples = tqdm(_world_samples(cfg, n, stream, truth), total=n, desc=f"{stream}: generate", unit="pair",
                   mininterval=2.0)
    shards = write_shards(samples, shards_dir, cfg.shard_size)
    stats = index_corpus(shards, PairsConfig(source="synthetic"), manifest_path, name=stream,
                         ground_truth=pd.DataFrame(truth, columns=["key", *manifest.GROUND_TRUTH_COLUMNS]))
    stats.written = n
    stats.seconds = time.perf_counter() - start
    return stats


def write_empty_corpus(shards_dir: Path, manifest_path: Path | None) -> None:
    """An empty shard folder (and manifest) inside the repo: on a real profile there are no synthetic
    pairs and no teacher corpus (CLIP comes from a weights file), and empty outputs keep the DVC
    stage's outputs the same across profiles."""
    shards_dir.mkdir(parents=True, exist_ok=True)
    for old in shards_dir.glob("*.tar"):
        old.unlink()
    if manifest_path is not None:
        manifest.write_manifest(pd.DataFrame({c: pd.Series(dtype=str) for c in manifest.TRAINING_COLUMNS}),
                                manifest_path)


def real_gallery(shards: list[Path | ShardRef], cfg: PairsConfig, path: Path, n: int = 12) -> None:
    """The first `n` readable pairs of real shards, as a PNG grid."""
    from itertools import islice

    import numpy as np

    from cocu.data.gallery import write_pair_gallery
    from cocu.data.shards import iter_samples

    samples = list(islice(iter_samples(shards, None, cfg.image_keys, cfg.caption_key), n))
    write_pair_gallery([np.asarray(s.image) for s in samples], [s.caption for s in samples], path, n)


def index_corpus(
    shards: list[Path | ShardRef],
    cfg: PairsConfig,
    manifest_path: Path,
    name: str,
    ground_truth: pd.DataFrame | None = None,
) -> CorpusStats:
    """Validate and index shards into `manifest_path`; join the hidden ground truth if given."""
    start = time.perf_counter()
    counter = SkipCounter()
    with tqdm(desc=f"{name}: validate", unit="pair", mininterval=2.0) as bar:
        frame = manifest.index_shards(shards, counter, cfg.image_keys, cfg.caption_key, progress=bar)
    stats = CorpusStats(name=name, shards=len(shards), written=len(frame) + counter.total_samples,
                        valid=len(frame), skipped=counter.as_dict())
    if ground_truth is not None:
        frame = frame.merge(ground_truth, on="key", how="left", validate="one_to_one")
        present = frame["gt_present"].map(len)
        stats.mention_rate = float(frame["gt_mentioned"].map(len).sum() / max(1, present.sum()))
        stats.present_per_image = float(present.mean()) if len(frame) else 0.0
    manifest.write_manifest(frame, manifest_path)
    stats.seconds = time.perf_counter() - start
    if counter.total_samples:
        log.warning("%s: skipped %d samples: %s", name, counter.total_samples, counter.as_dict())
    log.info("%s: %d valid pairs in %d shards -> %s", name, len(frame), len(shards), manifest_path)
    return stats
