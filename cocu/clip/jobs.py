"""The `embed` stage's jobs: what runs in-process locally or as submitit jobs on GPU nodes.

`embed_corpus` plans the units in the stage's own process (cheap: the manifest's `shard` column,
file sizes and the fingerprint), deals the unfinished units to `launcher.stages.embed.tasks` array
tasks (`embed_units_job`, resumable), then runs one more job of the same resources that joins the
units into the final arrays and embeds the vocabulary (`finish_embed_job`), and removes the
partial folder once the final arrays are written.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cocu.clip.embed import EmbedUnit, EmbedWork, embed_fingerprint, embed_units, plan_units
from cocu.config import ClipConfig, EmbedConfig, LauncherConfig, Params
from cocu.data.shards import SKIP_REASONS
from cocu.data.sources import pair_shards
from cocu.launch.executor import deal, map_shards, run_job, stage_launcher, stage_resources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedInputs:
    """Everything the embed jobs read and write (picklable: it travels to the jobs)."""

    manifest: Path
    shards: tuple[Any, ...]  # in manifest order: paths, or source-qualified refs (`.path`, `.id`)
    weights: Path
    clip: ClipConfig
    embed: EmbedConfig
    image_keys: tuple[str, ...]
    caption_key: str
    concepts: tuple[str, ...]  # vocabulary strings to embed (row order of the concept files)
    image_out: Path
    text_out: Path
    concept_out: Path
    names_out: Path


def embed_inputs(params: Params) -> EmbedInputs:
    """The embed stage's inputs and outputs from params."""
    from cocu.concepts.vocabulary import load_vocabulary

    paths = params.paths
    vocab = load_vocabulary(paths.vocabulary, paths.synonyms, params.vocabulary)
    return EmbedInputs(  # the shards as the `pairs` stage read them, in the same order
        manifest=Path(paths.pairs_manifest), shards=tuple(pair_shards(params)),
        weights=Path(paths.clip_weights), clip=params.clip, embed=params.embed,
        image_keys=tuple(params.pairs.image_keys), caption_key=params.pairs.caption_key,
        concepts=tuple(vocab.concepts), image_out=Path(paths.image_embeddings),
        text_out=Path(paths.caption_embeddings), concept_out=Path(paths.concept_embeddings),
        names_out=Path(paths.concept_names))


def embed_corpus(inputs: EmbedInputs, launcher: LauncherConfig) -> dict[str, Any]:
    """The whole `embed` stage; returns its metrics."""
    import pyarrow.parquet as pq

    from cocu.clip.model import check_weights_file

    t0 = time.perf_counter()
    digest = check_weights_file(inputs.weights, inputs.clip.expected_sha256)
    units = plan_units(pq.read_table(inputs.manifest, columns=["shard"]).column("shard"), inputs.shards)
    work = EmbedWork.beside(inputs.image_out)
    gpus = stage_resources(launcher, "embed").gpus
    work.prepare(embed_fingerprint(inputs.manifest, inputs.shards, digest, inputs.clip, inputs.embed,
                                   extra=f"gpus={gpus}"))
    todo = [u for u in units if work.marker(u) is None]
    runs = deal(len(todo), stage_resources(launcher, "embed").tasks)
    log.info("embed: %d units (%d finished earlier), %d to do in %d array task(s)", len(units),
             len(units) - len(todo), len(todo), len(runs))
    job_cfg = stage_launcher(launcher, "embed")
    map_shards(functools.partial(embed_units_job, inputs, work.folder), [[todo[i] for i in run] for run in runs],
               job_cfg, "embed", resumable=True)
    stats = run_job(functools.partial(finish_embed_job, inputs, work.folder, units), cfg=job_cfg, name="embed-finish")
    work.remove()
    seconds = time.perf_counter() - t0
    return {**stats, "seconds": seconds, "weights_sha256": digest, "units": len(units),
            "units_reused": len(units) - len(todo), "tasks": len(runs)}


def _load(inputs: EmbedInputs) -> tuple[Any, Any, Any]:
    from cocu.clip.model import load_clip

    model, _, preprocess, tokenizer, _ = load_clip(inputs.clip, inputs.weights)
    return model, preprocess, tokenizer


def _device(inputs: EmbedInputs) -> Any:
    from cocu.launch.device import resolve_device

    return resolve_device(inputs.embed.device)


def embed_units_job(inputs: EmbedInputs, folder: Path, units: list[EmbedUnit]) -> list[int]:
    """One array task: embed its unfinished units (each committed to the partial folder as it ends)."""
    import pyarrow.parquet as pq

    keys = pq.read_table(inputs.manifest, columns=["key"]).column("key").combine_chunks()  # Arrow: compact
    return embed_units(units, EmbedWork(folder), keys, lambda: _load(inputs), inputs.embed, _device(inputs),
                       inputs.image_keys, inputs.caption_key)


def finish_embed_job(inputs: EmbedInputs, folder: Path, units: list[EmbedUnit]) -> dict[str, Any]:
    """The last job: the final `[N, D]` arrays from the units, and the vocabulary's embeddings."""
    from cocu.clip.embed import _embed_dim, embed_concepts, encoder_on, write_concept_embeddings

    device = _device(inputs)
    model, preprocess, tokenizer = _load(inputs)
    model = encoder_on(model, device)
    dim = _embed_dim(model, preprocess, tokenizer, device)
    markers = EmbedWork(folder).assemble(units, dim, inputs.image_out, inputs.text_out)
    emb = embed_concepts(model, tokenizer, inputs.concepts, inputs.embed.prompt, inputs.embed.batch_size, device,
                         inputs.embed.autocast)
    write_concept_embeddings(inputs.concepts, emb, inputs.concept_out, inputs.names_out)
    rows = units[-1].hi if units else 0
    busy = sum(m["seconds"] for m in markers)
    devices = sorted({m["device"] for m in markers})
    if len(devices) > 1:
        log.warning("embed: units were computed on different devices %s (float16 rounding may differ)", devices)
    skipped = {r: int(np.sum([m["skipped"].get(r, 0) for m in markers])) for r in SKIP_REASONS}
    log.info("embedded %d pairs (D=%d) -> %s, %s", rows, dim, inputs.image_out, inputs.text_out)
    return {"rows": rows, "dim": dim, "concepts": len(inputs.concepts),
            "duplicates_skipped": int(sum(m["duplicates"] for m in markers)),
            "pairs_per_second": rows / max(busy, 1e-9), **{f"skipped/{r}": v for r, v in skipped.items()}}
