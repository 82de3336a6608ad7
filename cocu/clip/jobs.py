"""The `embed` stage's job: what runs in-process locally or as a submitit job on a GPU node."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cocu.clip.embed import read_manifest_keys, run_embed
from cocu.concepts.vocabulary import load_vocabulary
from cocu.config import LauncherConfig, Params
from cocu.data.shards import SkipCounter, iter_samples
from cocu.data.sources import pair_shards
from cocu.launch.device import resolve_device


def embed_launcher(cfg: LauncherConfig) -> LauncherConfig:
    """The embed job writes one set of arrays: one task on one node, with at most one GPU."""
    return dataclasses.replace(cfg, nodes=1, gpus_per_node=min(1, cfg.gpus_per_node))


def embed_job(params: Params) -> dict[str, Any]:
    """Stream the pair shards through CLIP; embed the vocabulary's concepts (row order = concepts)."""
    paths = params.paths
    vocab = load_vocabulary(paths.vocabulary, paths.synonyms, params.vocabulary)
    counter = SkipCounter()
    samples = iter_samples(pair_shards(params), counter, params.pairs.image_keys, params.pairs.caption_key)
    stats = run_embed(samples, read_manifest_keys(Path(paths.pairs_manifest)), vocab.concepts, params.clip,
                      Path(paths.clip_weights), params.embed, resolve_device(params.embed.device),
                      Path(paths.image_embeddings), Path(paths.caption_embeddings), Path(paths.concept_embeddings),
                      Path(paths.concept_names))
    return {**stats, **{f"skipped/{k}": v for k, v in counter.as_dict().items()}}
