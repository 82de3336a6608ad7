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
from cocu.data.shards import RawSample, ShardRef, SkipCounter, as_shard_ref, encode_jpeg, write_shards
from cocu.launch.executor import deal, map_shards, stage_launcher, stage_tasks

log = logging.getLogger(__name__)


@dataclass
class CorpusStats:
    """What a corpus build wrote and read back: the stage's metrics, details and MLflow run."""

    name: str
    shards: int = 0
    written: int = 0  # samples written (synthetic) or found (real)
    valid: int = 0  # rows of the manifest
    skipped: dict[str, int] = field(default_factory=dict)
    mention_rate: float | None = None  # synthetic: named / present concepts
    present_per_image: float | None = None
    seconds: float = 0.0  # wall clock: MLflow only, never a committed file

    def as_details(self) -> dict[str, object]:
        """Everything but the wall clock, for the committed details file (same inputs: same bytes)."""
        out: dict[str, object] = {"shards": self.shards, "written": self.written, "valid": self.valid,
                                  "skipped": dict(self.skipped)}
        if self.mention_rate is not None:
            out["mention_rate"] = self.mention_rate
            out["present_per_image"] = float(self.present_per_image or 0.0)
        return out

    def as_metrics(self) -> dict[str, float]:
        """Flat `<name>/...` numbers for MLflow, the wall clock included."""
        out: dict[str, float] = {f"{self.name}/{k}": float(v) for k, v in
                                 (("shards", self.shards), ("written", self.written), ("valid", self.valid),
                                  ("seconds", self.seconds))}
        out.update({f"{self.name}/skipped/{k}": float(v) for k, v in self.skipped.items()})
        if self.mention_rate is not None:
            out[f"{self.name}/mention_rate"] = self.mention_rate
            out[f"{self.name}/present_per_image"] = float(self.present_per_image or 0.0)
        return out


def headline(stats: CorpusStats) -> dict[str, int]:
    """The `pairs` stage's DVC metrics (kept short: `dvc metrics show` is one table of every file):
    the manifest's rows and how many samples and shards were skipped; reasons are in the details."""
    return {"pairs": stats.valid, "skipped": int(sum(stats.skipped.values()))}


def world_key(stream: str, index: int) -> str:
    """The shard key of sample `index` of a world stream: `pairs00000042`."""
    return f"{stream}{index:08d}"


def world_index(stream: str, key: str) -> int:
    """Inverse of `world_key`; a key of another stream or form is a ValueError naming it."""
    digits = key.removeprefix(stream)
    if digits == key or len(digits) != 8 or not digits.isdigit():
        raise ValueError(f"{key!r} is not a key of the synthetic stream {stream!r}")
    return int(digits)


def _world_samples(
    cfg: WorldConfig, n: int, stream: str, truth: list[tuple[str, tuple[str, ...], tuple[str, ...]]]
) -> Iterator[RawSample]:
    for i, sample in enumerate(world.generate(cfg, n, stream)):
        key = world_key(stream, i)
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
    written = PairsConfig(source="synthetic", shards_glob=None, caption_key="txt", image_keys=("jpg",))  # write_shards' keys
    stats = index_corpus(shards, written, manifest_path, name=stream, launcher=launcher,
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


def synthetic_gallery(cfg: WorldConfig, manifest_path: Path, path: Path, stream: str = "pairs",
                      n: int = 12) -> list[str]:
    """The first `n` manifest rows of a synthetic corpus with their hidden label maps, as a PNG grid.

    Only manifest rows are shown (a sample the validator dropped never is): each row's world
    sample is redrawn from its key, with the caption the manifest holds. Returns the keys shown.
    """
    import dataclasses

    from cocu.data.gallery import write_gallery

    rows = manifest.read_manifest(manifest_path).head(n)
    samples = [dataclasses.replace(next(world.generate(cfg, 1, stream, start=world_index(stream, key))), caption=caption)
               for key, caption in zip(rows["key"], rows["caption"])]
    write_gallery(samples, path, n)
    return rows["key"].tolist()


def real_gallery(shards: list[Path | ShardRef], cfg: PairsConfig, manifest_path: Path, path: Path,
                 n: int = 12) -> list[str]:
    """The first `n` manifest rows of real shards (image and caption), as a PNG grid; returns their keys.

    Samples are read back from the shards and shown only where (key, shard) is a manifest row, so a
    repeat the manifest dropped is not shown in its place.
    """
    import numpy as np

    from cocu.data.gallery import write_pair_gallery
    from cocu.data.shards import iter_samples

    frame = manifest.read_manifest(manifest_path)
    rows = set(zip(frame["key"], frame["shard"]))
    samples = []
    for s in iter_samples(shards, None, cfg.image_keys, cfg.caption_key):
        if (s.key, s.shard) in rows:
            samples.append(s)
            if len(samples) == n:
                break
    write_pair_gallery([np.asarray(s.image) for s in samples], [s.caption for s in samples], path, n)
    return [s.key for s in samples]


def index_corpus(
    shards: list[Path | ShardRef],
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
    shards: Sequence[Path | ShardRef],
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
    shards = [as_shard_ref(p) for p in shards]  # keeps each shard's source (qualified keys)
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


def validate_part(part: tuple[int, list[ShardRef]], cfg: PairsConfig, work: Path, name: str) -> dict:
    """One array task: index its run of shards into `work/part-<t>.parquet`; return the path and
    the skip counts (reason -> count, reason -> first example)."""
    index, shards = part
    counter = SkipCounter()
    with tqdm(desc=f"{name}: validate", unit="pair", mininterval=2.0) as bar:
        frame = manifest.index_shards(shards, counter, cfg.image_keys, cfg.caption_key, progress=bar)
    path = work / f"part-{index:05d}.parquet"
    manifest.write_manifest(frame, path)
    return {"path": path, "rows": len(frame), "skipped": dict(Counter(counter.counts)), "examples": dict(counter.examples)}
