"""The `pairs` stage's library: write the synthetic corpora, or index existing img2dataset shards.

Both profiles end in the same place: the shards on disk are read back by the validating reader
(`manifest.index_shards`), so the manifest lists exactly the samples that later stages can read,
and every skipped sample is counted by reason.

Validation (a full decode of every image) is a job array (`launcher.stages.pairs.tasks`): the
shard files are dealt to the tasks in contiguous runs, each task indexes its run into a parquet
part, and the parts are joined in shard order, a key already seen in an earlier part counted as a
`duplicate_key` as the serial reader counts it. The manifest and the counts are those of one
serial pass, whatever the number of tasks.
"""

from __future__ import annotations

import functools
import glob
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cocu.config import LauncherConfig, PairsConfig, WorldConfig
from cocu.data import manifest, world
from cocu.data.shards import RawSample, SkipCounter, encode_jpeg, list_shards, write_shards
from cocu.launch.executor import deal, map_shards, stage_launcher, stage_tasks

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
    cfg: WorldConfig, n: int, stream: str, shards_dir: Path, manifest_path: Path, launcher: LauncherConfig
) -> CorpusStats:
    """Generate `n` pairs of the world's `stream`, write shards, read them back into a manifest."""
    start = time.perf_counter()
    truth: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    samples = tqdm(_world_samples(cfg, n, stream, truth), total=n, desc=f"{stream}: generate", unit="pair",
                   mininterval=2.0)
    shards = write_shards(samples, shards_dir, cfg.shard_size)
    stats = index_corpus(shards, PairsConfig(source="synthetic"), manifest_path, name=stream, launcher=launcher,
                         ground_truth=pd.DataFrame(truth, columns=["key", *manifest.GROUND_TRUTH_COLUMNS]))
    stats.written = n
    stats.seconds = time.perf_counter() - start
    return stats


def write_empty_corpus(shards_dir: Path, manifest_path: Path) -> None:
    """The real profile has no teacher corpus (CLIP comes from a weights file): empty outputs keep
    the DVC stage's outputs identical across profiles."""
    shards_dir.mkdir(parents=True, exist_ok=True)
    for old in shards_dir.glob("*.tar"):
        old.unlink()
    manifest.write_manifest(pd.DataFrame({c: pd.Series(dtype=str) for c in manifest.TRAINING_COLUMNS}), manifest_path)


def real_gallery(shards: list[Path], cfg: PairsConfig, path: Path, n: int = 12) -> None:
    """The first `n` readable pairs of real shards, as a PNG grid."""
    from itertools import islice

    import numpy as np

    from cocu.data.gallery import write_pair_gallery
    from cocu.data.shards import iter_samples

    samples = list(islice(iter_samples(shards, None, cfg.image_keys, cfg.caption_key), n))
    write_pair_gallery([np.asarray(s.image) for s in samples], [s.caption for s in samples], path, n)


def find_real_shards(cfg: PairsConfig, shards_dir: Path) -> list[Path]:
    """Existing img2dataset shards: `pairs.shards_glob` if set, else every `*.tar` in the folder."""
    if cfg.shards_glob:
        paths = sorted(Path(p) for p in glob.glob(cfg.shards_glob, recursive=True))
        if not paths:
            raise FileNotFoundError(f"pairs.shards_glob matches no shard: {cfg.shards_glob}")
        return paths
    paths = list_shards(shards_dir)
    if not paths:
        raise FileNotFoundError(f"no *.tar shard in {shards_dir} (paths.pairs_shards)")
    return paths


def index_corpus(
    shards: list[Path],
    cfg: PairsConfig,
    manifest_path: Path,
    name: str,
    launcher: LauncherConfig,
    ground_truth: pd.DataFrame | None = None,
) -> CorpusStats:
    """Validate and index shards into `manifest_path`; join the hidden ground truth if given.

    The validation runs as `launcher.stages.pairs.tasks` array tasks (`validate_shards`).
    """
    start = time.perf_counter()
    counter = SkipCounter()
    frame = validate_shards(shards, cfg, counter, launcher, name, Path(manifest_path))
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


# ----------------------------------------------------------------------------------------------
# validation as a job array


def partial_dir(manifest_path: Path) -> Path:
    """Scratch folder of the validation parts, beside the manifest (`<stem>.partial/`)."""
    return manifest_path.with_name(f"{manifest_path.stem}.partial")


def validate_shards(
    shards: Sequence[Path],
    cfg: PairsConfig,
    counter: SkipCounter,
    launcher: LauncherConfig,
    name: str,
    manifest_path: Path,
) -> pd.DataFrame:
    """`manifest.index_shards(shards)` as a job array: the same rows and the same skip counts.

    The shards are dealt to `launcher.stages.pairs.tasks` tasks in contiguous runs; task t writes
    `<manifest>.partial/part-<t>.parquet` (its valid samples, its own duplicates dropped) and
    returns its skip counts. The parts are joined in shard order and a key that an earlier part
    already has is dropped and counted as `duplicate_key`, exactly as one serial pass keeps the
    first copy. The parts are removed once joined. Adds every skip to `counter`.
    """
    shards = [Path(p) for p in shards]
    work = partial_dir(manifest_path)
    if work.exists():
        shutil.rmtree(work)  # parts of an earlier, unfinished run: validation is not resumable
    work.mkdir(parents=True)
    runs = deal(len(shards), stage_tasks(launcher, "pairs"))
    job = functools.partial(validate_part, cfg=cfg, work=work, name=name)
    parts = map_shards(job, [(t, [shards[i] for i in run]) for t, run in enumerate(runs)],
                       stage_launcher(launcher, "pairs"), f"pairs-{name}")
    if len(runs) > 1:
        log.info("%s: validated %d shards in %d array tasks", name, len(shards), len(runs))
    frames = []
    for part in parts:  # in shard order
        for reason, count in part["skipped"].items():
            counter.counts[reason] += count
        for reason, where in part["examples"].items():
            counter.examples.setdefault(reason, where)
        frames.append(pd.read_parquet(part["path"]))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(manifest.TRAINING_COLUMNS))
    repeated = frame["key"].duplicated(keep="first").to_numpy()
    for key, shard in zip(frame["key"][repeated], frame["shard"][repeated]):  # across parts
        counter.add("duplicate_key", f"{shard}:{key}")
    shutil.rmtree(work)
    return frame.loc[~repeated].reset_index(drop=True).astype({c: str for c in manifest.TRAINING_COLUMNS})


def validate_part(part: tuple[int, list[Path]], cfg: PairsConfig, work: Path, name: str) -> dict:
    """One array task: index its run of shards into `work/part-<t>.parquet`; return the path and
    the skip counts (reason -> count, reason -> first example)."""
    index, shards = part
    counter = SkipCounter()
    with tqdm(desc=f"{name}: validate", unit="pair", mininterval=2.0) as bar:
        frame = manifest.index_shards(shards, counter, cfg.image_keys, cfg.caption_key, progress=bar)
    path = work / f"part-{index:05d}.parquet"
    manifest.write_manifest(frame, path)
    return {"path": path, "rows": len(frame), "skipped": dict(Counter(counter.counts)), "examples": dict(counter.examples)}
