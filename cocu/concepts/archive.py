"""Archive and caption-concept files: parquet IO, and the resumable sharded curation run.

Archives are parquet shards `archive-00000.parquet`, ... with columns `key` (str), `concepts`
(list<str>, sorted by score descending), `scores` (list<float32>) and `clusters` (list<int32>);
shard i holds manifest rows [i * shard_size, (i + 1) * shard_size).

Resume: `_manifest.json` records a fingerprint of the inputs and config. Each shard is written
to a temporary file, renamed atomically, then marked by `archive-00000.done` (row count and the
shard's sha256). A re-run keeps every shard whose marker matches its file and redoes the rest;
a different fingerprint starts over. Batches never cross shard boundaries, so an interrupted and
resumed run writes the same bytes as an uninterrupted one. Under DVC the output folder must be
`persist: true`, or DVC deletes it before the stage runs.

Scale-out: the shard is also the unit of a job array (`run_curation_jobs`): one job prepares
(checks, fingerprint, which shards are finished), the shards still to do are dealt to
`launcher.stages.curate.tasks` tasks, and each task commits its shards as above, so a pre-empted
task resumes and the archives are the same bytes for any number of tasks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from cocu.config import CurationConfig
from cocu.concepts.curation import CSR, ArchiveBatch, curate_all, substring_relation
from cocu.provenance import source_digest

log = logging.getLogger(__name__)

ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("concepts", pa.list_(pa.string())),
        pa.field("scores", pa.list_(pa.float32())),
        pa.field("clusters", pa.list_(pa.int32())),
    ]
)
CAPTION_SCHEMA = pa.schema([pa.field("key", pa.string()), pa.field("concepts", pa.list_(pa.string()))])
MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class CaptionConcepts:
    """Caption concepts of every pair, as vocabulary ids (row i = manifest row i)."""

    keys: pa.Array  # [N] string (an Arrow array: ~10 bytes a key, not a Python object each)
    ids: CSR


def write_caption_concepts(path: Path | str, keys: Sequence[str], concepts: Sequence[Sequence[str]]) -> None:
    """The `concepts` stage output: parquet (key, concepts list<str>)."""
    table = pa.table({"key": list(keys), "concepts": [list(c) for c in concepts]}, schema=CAPTION_SCHEMA)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def read_caption_concepts(path: Path | str, concept_names: Sequence[str]) -> CaptionConcepts:
    """Read the caption-concepts parquet and map concept strings to rows of the concept embeddings."""
    table = pq.read_table(path, columns=["key", "concepts"])
    lists = table.column("concepts").combine_chunks()
    ids = pc.index_in(lists.flatten(), value_set=pa.array(list(concept_names), pa.string()))
    if ids.null_count:
        bad = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
        row = int(np.searchsorted(lists.offsets.to_numpy(), bad, side="right") - 1)
        raise ValueError(f"{path}: key {table.column('key')[row]}: concept {lists.flatten()[bad]} "
                         "is not in the concept names (vocabulary and embeddings out of sync?)")
    offsets = (lists.offsets.to_numpy() - lists.offsets[0].as_py()).astype(np.int64)
    keys = table.column("key").combine_chunks()
    return CaptionConcepts(keys, CSR(offsets, ids.to_numpy(zero_copy_only=False).astype(np.int32)))


def archive_table(keys: pa.Array, batches: Sequence[ArchiveBatch], names: pa.Array) -> pa.Table:
    """Concatenate curated batches into one table of ARCHIVE_SCHEMA (`names`: the concept strings)."""
    parts = [b.to_csr() for b in batches]
    sizes = np.concatenate([np.diff(p[0]) for p in parts]) if parts else np.zeros(0, np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    flat = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in (1, 2, 3)]
    columns = [
        keys.cast(pa.string()),
        pa.ListArray.from_arrays(offsets, names.take(pa.array(flat[0], pa.int32()))),
        pa.ListArray.from_arrays(offsets, pa.array(flat[1], pa.float32())),
        pa.ListArray.from_arrays(offsets, pa.array(flat[2], pa.int32())),
    ]
    return pa.Table.from_arrays(columns, schema=ARCHIVE_SCHEMA)


@dataclass(frozen=True)
class CurationStats:
    num_pairs: int
    num_shards: int
    shards_reused: int  # finished in an earlier (interrupted) run and kept
    shards_written: tuple[int, ...]  # shard indices computed by this run
    missing_neighbours: int  # -1 ids in the neighbour file (ignored)
    seconds: float


@dataclass(frozen=True)
class CurationPlan:
    """What `prepare_curation` found: the shards, which of them are still to do, missing ids."""

    num_pairs: int
    num_shards: int
    todo: tuple[int, ...]
    missing_neighbours: int


def _check_inputs(image_emb: np.ndarray, neigh_ids: np.ndarray, captions: CaptionConcepts,
                  concept_names: Sequence[str], concept_emb: np.ndarray, image_emb_path: Any,
                  neighbours_path: Any) -> int:
    n = len(captions.keys)
    if image_emb.shape[0] != n or neigh_ids.shape[0] != n or len(captions.ids) != n:
        raise ValueError(f"row counts differ: {image_emb_path} has {image_emb.shape[0]}, {neighbours_path} "
                         f"{neigh_ids.shape[0]}, caption concepts {n}")
    if len(concept_names) != len(concept_emb) or concept_emb.shape[1] != image_emb.shape[1]:
        raise ValueError(f"concept embeddings {concept_emb.shape} do not match {len(concept_names)} names "
                         f"and image dimension {image_emb.shape[1]}")
    return n


def _shard_rows(i: int, n: int, cfg: CurationConfig) -> tuple[int, int]:
    return i * cfg.shard_size, min(n, (i + 1) * cfg.shard_size)


def _checked_ids(neigh_ids: np.ndarray, neighbours_path: Any, start: int, stop: int) -> np.ndarray:
    ids = np.asarray(neigh_ids[start:stop])
    if ids.size and (ids.min() < -1 or ids.max() >= len(neigh_ids)):
        raise ValueError(f"{neighbours_path}: rows {start}-{stop}: ids outside [-1, {len(neigh_ids)})")
    return ids


def prepare_curation(
    image_emb_path: Path | str,  # [N, D] .npy (float16/32, unit norm), memory-mapped
    neighbours_path: Path | str,  # [N, L] int64 .npy neighbour ids (-1 = missing), memory-mapped
    captions: CaptionConcepts,
    concept_names: Sequence[str],  # [V], the rows of concept_emb
    concept_emb: np.ndarray,  # [V, D] unit-norm text embeddings
    out_dir: Path | str,
    cfg: CurationConfig,
) -> CurationPlan:
    """Check the inputs (row counts, neighbour ids), fingerprint them (a full pass), keep the
    finished shards of the same fingerprint and remove any other; say which shards are to do."""
    image_emb = np.load(image_emb_path, mmap_mode="r")
    neigh_ids = np.load(neighbours_path, mmap_mode="r")
    n = _check_inputs(image_emb, neigh_ids, captions, concept_names, concept_emb, image_emb_path, neighbours_path)
    out = Path(out_dir)
    _prepare(out, _fingerprint(image_emb, neigh_ids, captions, concept_names, concept_emb, cfg))
    num_shards = -(-n // cfg.shard_size)
    missing = 0
    for i in range(num_shards):
        missing += int((_checked_ids(neigh_ids, neighbours_path, *_shard_rows(i, n, cfg)) < 0).sum())
    todo = tuple(i for i in range(num_shards) if not _is_done(out, i))
    return CurationPlan(n, num_shards, todo, missing)


def curate_shards(
    image_emb_path: Path | str,
    neighbours_path: Path | str,
    captions: CaptionConcepts,
    concept_names: Sequence[str],
    concept_emb: np.ndarray,
    out_dir: Path | str,
    cfg: CurationConfig,
    shards: Sequence[int],  # archive shard indices (one array task's share)
    progress: bool = True,
    on_shard_done: Callable[[int], None] | None = None,  # called after each shard is committed
) -> list[int]:
    """Curate and commit each of `shards` that is not finished yet (after `prepare_curation`);
    returns the shards written here. A shard's bytes depend only on the inputs, the settings and
    its index, never on which task or run writes it."""
    image_emb = np.load(image_emb_path, mmap_mode="r")
    neigh_ids = np.load(neighbours_path, mmap_mode="r")
    n = _check_inputs(image_emb, neigh_ids, captions, concept_names, concept_emb, image_emb_path, neighbours_path)
    out = Path(out_dir)
    relation = substring_relation(list(concept_names)) if cfg.membership == "substring" else None
    names = pa.array(list(concept_names), pa.string())
    todo = [i for i in shards if not _is_done(out, i)]
    bar = tqdm(total=sum(stop - start for start, stop in (_shard_rows(i, n, cfg) for i in todo)),
               disable=not progress, desc="curate", unit="pair")
    for i in todo:
        start, stop = _shard_rows(i, n, cfg)
        _checked_ids(neigh_ids, neighbours_path, start, stop)
        batches = []
        for batch in curate_all(image_emb, neigh_ids, captions.ids, concept_emb, cfg, start, stop, relation):
            batches.append(batch)
            bar.update(len(batch.sizes))
        _commit(out, i, archive_table(captions.keys.slice(start, stop - start), batches, names))
        if on_shard_done is not None:
            on_shard_done(i)
    bar.close()
    return todo


def run_curation(
    image_emb_path: Path | str,  # [N, D] .npy (float16/32, unit norm), memory-mapped
    neighbours_path: Path | str,  # [N, L] int64 .npy neighbour ids (-1 = missing), memory-mapped
    captions: CaptionConcepts,
    concept_names: Sequence[str],  # [V], the rows of concept_emb
    concept_emb: np.ndarray,  # [V, D] unit-norm text embeddings
    out_dir: Path | str,
    cfg: CurationConfig,
    progress: bool = True,
    on_shard_done: Callable[[int], None] | None = None,  # called after each shard is committed
) -> CurationStats:
    """Archives for every pair in this process, streamed and resumable per shard (the `curate`
    stage runs the same two steps as jobs: `run_curation_jobs`)."""
    t0 = time.perf_counter()
    plan = prepare_curation(image_emb_path, neighbours_path, captions, concept_names, concept_emb, out_dir, cfg)
    written = curate_shards(image_emb_path, neighbours_path, captions, concept_names, concept_emb, out_dir, cfg,
                            plan.todo, progress, on_shard_done)
    return _stats(plan, written, time.perf_counter() - t0)


def _stats(plan: CurationPlan, written: Sequence[int], seconds: float) -> CurationStats:
    stats = CurationStats(plan.num_pairs, plan.num_shards, plan.num_shards - len(plan.todo), tuple(sorted(written)),
                          plan.missing_neighbours, seconds)
    log.info("curated %d pairs, %d shards (%d reused), %.1f s", plan.num_pairs, plan.num_shards,
             stats.shards_reused, seconds)
    return stats


# ----------------------------------------------------------------------------------------------
# the `curate` stage as jobs


@dataclass(frozen=True)
class CurationFiles:
    """The `curate` stage's input files and output folder (picklable: it travels to the jobs)."""

    image_embeddings: Path
    neighbours: Path
    caption_concepts: Path
    concept_names: Path  # one concept per line, the rows of concept_embeddings
    concept_embeddings: Path
    archives: Path

    def load(self) -> tuple[CaptionConcepts, list[str], np.ndarray]:
        """(caption concepts, concept names, [V, D] float32 concept embeddings)."""
        names = [line for line in Path(self.concept_names).read_text().splitlines() if line]
        captions = read_caption_concepts(self.caption_concepts, names)
        return captions, names, np.load(self.concept_embeddings).astype(np.float32)


def prepare_job(files: CurationFiles, cfg: CurationConfig) -> CurationPlan:
    """The first job: `prepare_curation` (a full pass over the inputs for the fingerprint)."""
    captions, names, concept_emb = files.load()
    return prepare_curation(files.image_embeddings, files.neighbours, captions, names, concept_emb, files.archives, cfg)


def curate_job(files: CurationFiles, cfg: CurationConfig, shards: list[int]) -> list[int]:
    """One array task: `curate_shards` of its share (finished shards are skipped: resumable)."""
    captions, names, concept_emb = files.load()
    return curate_shards(files.image_embeddings, files.neighbours, captions, names, concept_emb, files.archives,
                         cfg, shards)


def run_curation_jobs(files: CurationFiles, cfg: CurationConfig, launcher: Any) -> CurationStats:
    """The `curate` stage: one job prepares (checks, fingerprint, finished shards), then the shards
    still to do are dealt to `launcher.stages.curate.tasks` array tasks (the shard is the unit).
    The archives are the bytes one process writes (`run_curation`), for any number of tasks."""
    from cocu.launch.executor import deal, map_shards, run_job, stage_launcher, stage_tasks

    t0 = time.perf_counter()
    job_cfg = stage_launcher(launcher, "curate")
    plan = run_job(functools.partial(prepare_job, files, cfg), cfg=job_cfg, name="curate-prepare")
    runs = deal(len(plan.todo), stage_tasks(launcher, "curate"))
    log.info("curate: %d shards (%d finished earlier), %d to do in %d array task(s)", plan.num_shards,
             plan.num_shards - len(plan.todo), len(plan.todo), len(runs))
    written = map_shards(functools.partial(curate_job, files, cfg), [[plan.todo[i] for i in run] for run in runs],
                         job_cfg, "curate", resumable=True)
    return _stats(plan, [i for part in written for i in part], time.perf_counter() - t0)


def shard_paths(out_dir: Path | str) -> list[Path]:
    """The archive shards of a finished run, in row order."""
    return sorted(Path(out_dir).glob("archive-*.parquet"))


def read_archives(out_dir: Path | str, columns: Sequence[str] | None = None) -> pa.Table:
    """All shards as one table (rows in manifest order)."""
    paths = shard_paths(out_dir)
    if not paths:
        raise FileNotFoundError(f"no archive shards in {out_dir} (run the `curate` stage)")
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in paths])


def iter_archive_ids(out_dir: Path | str, concept_names: Sequence[str]) -> Iterator[tuple[int, CSR]]:
    """(first row, archive concept ids as CSR) per shard, for streaming metrics."""
    value_set = pa.array(list(concept_names), pa.string())
    start = 0
    for path in shard_paths(out_dir):
        lists = pq.read_table(path, columns=["concepts"]).column("concepts").combine_chunks()
        ids = pc.index_in(lists.flatten(), value_set=value_set).to_numpy(zero_copy_only=False)
        offsets = (lists.offsets.to_numpy() - lists.offsets[0].as_py()).astype(np.int64)
        yield start, CSR(offsets, ids.astype(np.int32))
        start += len(lists)


# ----------------------------------------------------------------------------------------------
# resume bookkeeping


def _fingerprint(image_emb, neigh_ids, captions, concept_names, concept_emb, cfg: CurationConfig) -> str:
    """sha256 over every input's bytes, the config and the curation code (a full pass over the
    inputs, streamed)."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(source_digest("concepts").encode())
    for arr in (image_emb, neigh_ids):
        h.update(f"{arr.shape}{arr.dtype}".encode())
        for start in range(0, len(arr), 65536):
            h.update(np.ascontiguousarray(arr[start : start + 65536]).tobytes())
    for arr in (captions.ids.offsets, captions.ids.ids, np.ascontiguousarray(concept_emb)):
        h.update(f"{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    for buffer in captions.keys.buffers():
        if buffer is not None:
            h.update(buffer)
    h.update("\n".join(concept_names).encode())
    return h.hexdigest()


def _prepare(out: Path, fingerprint: str) -> None:
    """Keep finished shards of the same inputs; otherwise start the folder over."""
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob("*.tmp"):
        tmp.unlink()
    manifest = out / MANIFEST
    try:
        same = json.loads(manifest.read_text())["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if same:
        return
    stale = sorted(out.glob("archive-*.parquet")) + sorted(out.glob("archive-*.done"))
    if stale:
        log.warning("%s: inputs or config changed; removing %d files of an earlier run", out, len(stale))
    for path in stale:
        path.unlink()
    _atomic_write(manifest, json.dumps({"fingerprint": fingerprint}, indent=1).encode())


def _is_done(out: Path, shard: int) -> bool:
    path, marker = out / f"archive-{shard:05d}.parquet", out / f"archive-{shard:05d}.done"
    try:
        expected = json.loads(marker.read_text())["sha256"]
        return hashlib.sha256(path.read_bytes()).hexdigest() == expected
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _commit(out: Path, shard: int, table: pa.Table) -> None:
    path = out / f"archive-{shard:05d}.parquet"
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    marker = json.dumps({"rows": table.num_rows, "sha256": digest}).encode()
    _atomic_write(out / f"archive-{shard:05d}.done", marker)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
