"""Typed, strict configuration: `params.yaml` -> frozen dataclasses, one per section.

This is the only place params are parsed, and the lowest layer of the package: it imports no other
`cocu` module and nothing heavier than PyYAML, so a params file is checked in a few milliseconds,
before any stage imports torch or touches an output (`python -m cocu.check_params`, and every
`pipelines/*.py` validates before its heavy imports).

What "strict" means here:

- **Every key is required.** No field of a section dataclass has a default, so a key deleted from
  the file is an error naming the dotted key and the file, never a silent fall-back to some value
  the file does not show (and that DVC does not track). Code that builds a config (tests,
  benchmarks, `paper_model_config()`) passes every value too.
- **Unknown keys are errors**, as are mistyped values (`world.image_size: "64"`).
- **Ranges.** Each numeric or list field declares its allowed range next to it (`spec(ge=1)`,
  `spec(gt=0, le=1)`, ...); `__post_init__` checks them, for loaded and hand-built configs alike,
  and the error names the key, the value and the range. Cross-field rules (crop scale ordered,
  per-stage list lengths, stride <= crop, ...) are each section's `_check`.
- **References.** Name -> entry mappings that users extend (`world.sizes`, `eval.benchmarks`,
  `launcher.extra_sbatch`, `report.paper_methods`) may lose an entry only if nothing names it; a
  reference to a missing entry (`world.size: huge`, an `eval.active` name) names both keys and lists
  the valid names.
- **YAML.** A duplicate key anywhere is an error naming the key and its lines, and scalars are read
  as YAML 1.2 (as ruamel, DVC's parser, reads them): `4e-3` and `1e5` are numbers, `yes`/`no`/`on`
  are strings, `017` is 17. The file means the same to DVC and to cocu. Otherwise `safe_load`.

Derived values are properties, never keys.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


# pre-training variants (cocu/training/prompts.py makes their prompts); precision<P> is the
# curation-precision ablation at P percent
VARIANTS: tuple[str, ...] = ("baseline", "cocu", "ranking", "expansion", "oracle")
PRECISION_VARIANT = re.compile(r"^precision(\d{1,3})$")


class ConfigError(ValueError):
    """A params file does not match the typed schema; the message names the file and key."""


# --------------------------------------------------------------------------------------------
# ranges: declared next to each field, checked in __post_init__


def spec(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
         nonempty: bool = False, unique: bool = False) -> Any:
    """A required dataclass field with its allowed range.

    Bounds apply to a number, or to each item of a list; `nonempty` to a string, list or mapping;
    `unique` to the items of a list. `None` (an optional field left null) is always allowed.
    """
    return field(metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "nonempty": nonempty, "unique": unique})


class FieldError(ConfigError):
    """One field of one config is invalid. `key` is relative to the config that raised it; the
    loader prefixes the section path and the file. `{p}` in `reason` stands for that prefix, so a
    reason can name a sibling key (`names no entry of {p}sizes`)."""

    def __init__(self, owner: str, key: str, value: Any, reason: str) -> None:
        self.owner, self.key, self.value, self.reason = owner, key, value, reason
        super().__init__(self.render(owner + "."))

    def render(self, prefix: str) -> str:
        return f"{prefix}{self.key} = {self.value!r}: {self.reason.replace('{p}', prefix)}"


def _range_text(m: dict[str, Any]) -> str:
    lo = f"[{_num(m['ge'])}" if m["ge"] is not None else f"({_num(m['gt'])}" if m["gt"] is not None else None
    hi = f"{_num(m['le'])}]" if m["le"] is not None else f"{_num(m['lt'])})" if m["lt"] is not None else None
    if lo and hi:
        return f"must be in {lo}, {hi}"
    if lo:
        return f"must be {'>=' if m['ge'] is not None else '>'} {lo[1:]}"
    return f"must be {'<=' if m['le'] is not None else '<'} {hi[:-1]}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _in_range(x: float, m: dict[str, Any]) -> bool:
    return ((m["ge"] is None or x >= m["ge"]) and (m["gt"] is None or x > m["gt"])
            and (m["le"] is None or x <= m["le"]) and (m["lt"] is None or x < m["lt"]))


def _check_value(owner: str, key: str, value: Any, m: dict[str, Any]) -> None:
    bounded = any(m[k] is not None for k in ("ge", "gt", "le", "lt"))
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise FieldError(owner, key, value, "must be a finite number")
        if bounded and not _in_range(value, m):
            raise FieldError(owner, key, value, _range_text(m))


class Checked:
    """Base of every config dataclass: checks each field's `spec` range, then the class's `_check`."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            m = f.metadata
            if not m:
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            if m["nonempty"] and isinstance(value, (str, tuple, list, dict)) and not (
                    value.strip() if isinstance(value, str) else value):
                raise FieldError(owner, f.name, value, "must not be empty")
            if isinstance(value, (tuple, list)):
                if m["unique"] and len(set(value)) != len(value):
                    dup = next(v for i, v in enumerate(value) if v in value[:i])
                    raise FieldError(owner, f.name, value, f"lists {dup!r} twice")
                for i, item in enumerate(value):
                    _check_value(owner, f"{f.name}[{i}]", item, m)
            else:
                _check_value(owner, f.name, value, m)
        self._check()

    def _check(self) -> None:
        """Cross-field rules of this config (override); raise `FieldError` naming the field."""

    def _fail(self, key: str, reason: str) -> typing.NoReturn:
        value = getattr(self, key.split("[")[0].split(".")[0])
        if "[" in key:
            value = value[int(key.split("[")[1].split("]")[0])]
        raise FieldError(type(self).__name__, key, value, reason)


def _reference(owner: Checked, key: str, name: str, entries: typing.Mapping[str, Any] | typing.Collection[str],
               mapping: str) -> None:
    """`key` (holding `name`) must name an entry of the sibling mapping `mapping`."""
    if name not in entries:
        owner._fail(key, f"names no entry of {{p}}{mapping} (valid: {', '.join(sorted(entries)) or 'none'})")


# --------------------------------------------------------------------------------------------
# run, paths, the synthetic world, pairs, tracking, launcher


@dataclass(frozen=True)
class RunConfig(Checked):
    profile: str = spec(nonempty=True)  # name of the active profile; tags every MLflow run
    seed: int = spec(ge=0)  # global seed for everything that is not seeded by its own section


@dataclass(frozen=True)
class PathsConfig(Checked):
    """Every file and folder the pipeline reads or writes, relative to the repo root."""

    pairs_shards: str = spec(nonempty=True)  # synthetic: the generated webdataset shards (a DVC output); real: stays empty
    pairs_manifest: str = spec(nonempty=True)  # parquet: key, shard, caption (+ hidden ground truth, synthetic)
    teacher_shards: str = spec(nonempty=True)  # synthetic only: the separate corpus the teacher CLIP is trained on
    teacher_manifest: str = spec(nonempty=True)
    pairs_metrics: str = spec(nonempty=True)  # json metrics of the `pairs` stage (committed)
    details: str = spec(nonempty=True)  # folder: <stage>.json per stage, the counts and lists beside its DVC metrics
    world_gallery: str = spec(nonempty=True)  # png gallery of the synthetic world
    vocabulary: str = spec(nonempty=True)  # concept list file, one concept per line
    synonyms: Optional[str] = spec(nonempty=True)  # optional TSV `synonym<TAB>concept` (null: none)
    benchmarks_root: str = spec(nonempty=True)  # the synthetic benchmarks, written by the `benchmarks` stage (a DVC output)
    # the real benchmarks' root (detectron2's DETECTRON2_DATASETS layout) outside the repo: only read,
    # never written; null on the synthetic profile
    benchmarks_external: Optional[str] = spec(nonempty=True)
    benchmarks_metrics: str = spec(nonempty=True)
    inputs: str = spec(nonempty=True)  # folder of the `inputs` stage: fingerprints (names, sizes, mtimes) of external inputs
    clip_weights: str = spec(nonempty=True)  # CLIP weights: trained by `teacher` (synthetic) or a local file (real)
    teacher_metrics: str = spec(nonempty=True)
    image_embeddings: str = spec(nonempty=True)  # [N, D] float16 .npy, unit norm, row i = manifest row i
    caption_embeddings: str = spec(nonempty=True)  # [N, D] float16 .npy
    concept_embeddings: str = spec(nonempty=True)  # [V, D] float16 .npy of "a photo of a {c}"
    concept_names: str = spec(nonempty=True)  # V lines, the concepts in the row order of concept_embeddings
    embed_metrics: str = spec(nonempty=True)
    index: str = spec(nonempty=True)  # folder: what the index stage trains once (faiss index, or the exact search's row order)
    neighbours: str = spec(nonempty=True)  # [N, L] int64 .npy (-1: no neighbour)
    neighbour_sims: str = spec(nonempty=True)  # [N, L] float32 .npy
    index_metrics: str = spec(nonempty=True)
    caption_concepts: str = spec(nonempty=True)  # parquet: key, concepts list<str>
    concepts_metrics: str = spec(nonempty=True)
    archives: str = spec(nonempty=True)  # folder of parquet shards: key, concepts, scores, clusters
    curate_metrics: str = spec(nonempty=True)
    runs: str = spec(nonempty=True)  # pre-training run folders (checkpoints for resume), one per variant and seed
    checkpoints: str = spec(nonempty=True)  # final model weights, one file per variant and seed
    pretrain_metrics: str = spec(nonempty=True)  # folder: final metrics json per run (DVC metrics)
    pretrain_curves: str = spec(nonempty=True)  # folder: loss-curve csv per run (DVC plots)
    results: str = spec(nonempty=True)  # folder: <variant>/s<seed>/<benchmark>.json (+ counts, examples)
    eval_metrics: str = spec(nonempty=True)  # folder: mIoU, aAcc, mAcc per run and benchmark (DVC metrics)
    paper_numbers: str = spec(nonempty=True)  # the paper's reference numbers, each with its source
    reports: str = spec(nonempty=True)  # folder the `report` stage writes (results.md, tables/, figures/)
    mlflow_db: str = spec(nonempty=True)  # sqlite file of the embedded MLflow store, at the repo root


SyntheticBenchmark = Literal["synth_things", "synth_stuff", "synth_all"]


@dataclass(frozen=True)
class WorldSize(Checked):
    pairs: int = spec(ge=1)  # pre-training pairs
    teacher: int = spec(ge=1)  # teacher-corpus pairs (CLIP stand-in)
    benchmark: int = spec(ge=1)  # images per synthetic benchmark


@dataclass(frozen=True)
class WorldConfig(Checked):
    """The synthetic world (docs/world.md; its generator: cocu/data/world.py)."""

    size: str  # the entry of `sizes` in use
    sizes: dict[str, WorldSize] = spec(nonempty=True)  # named sizes; an entry may go if `size` does not name it
    image_size: int = spec(ge=16)  # pixels, square (the scene layout needs at least 16)
    min_concepts: int = spec(ge=1)  # concepts per image, inclusive (the world caps max_concepts)
    max_concepts: int = spec(ge=1)
    mention_rate: float = spec(gt=0, lt=1)  # target fraction of present concepts that the caption names
    naming_bias: float = spec(ge=0)  # mention-logit penalty of the under-named concepts (0: saliency alone)
    thing_scale: float = spec(gt=0, le=3)  # radius multiplier of every thing (1: the original sizes)
    shard_size: int = spec(ge=1)  # samples per webdataset shard
    jpeg_quality: int = spec(ge=1, le=100)
    seed: int = spec(ge=0)
    benchmarks: tuple[SyntheticBenchmark, ...] = spec(unique=True)  # the synthetic sets the `benchmarks` stage writes

    def _check(self) -> None:
        _reference(self, "size", self.size, self.sizes, "sizes")
        if self.min_concepts > self.max_concepts:
            self._fail("max_concepts", f"must be >= {{p}}min_concepts ({self.min_concepts})")

    @property
    def counts(self) -> WorldSize:
        return self.sizes[self.size]


@dataclass(frozen=True)
class PairsConfig(Checked):
    """Where the pre-training pairs come from."""

    source: Literal["synthetic", "webdataset"]
    # webdataset: the img2dataset shards, outside the repo and only read. One pattern, or a mapping
    # {source: pattern} for several data sets (keys become `<source>/<key>`); brace-expanded, then
    # globbed; relative to the repo root (cocu/data/sources.py). null: every .tar under paths.pairs_shards
    shards_glob: Optional[Union[str, dict[str, str]]] = spec(nonempty=True)
    caption_key: str = spec(nonempty=True)  # img2dataset writes the caption as `.txt`
    image_keys: tuple[str, ...] = spec(nonempty=True, unique=True)  # image extensions, in order of preference


@dataclass(frozen=True)
class TrackingConfig(Checked):
    experiment: str = spec(nonempty=True)  # MLflow experiment that groups every run of this repo
    uri: Optional[str] = spec(nonempty=True)  # null: sqlite store `paths.mlflow_db` at the repo root; env wins


@dataclass(frozen=True)
class StageLaunch(Checked):
    """How one stage whose work grows with N is split into jobs (a SLURM job array), and what one
    of those jobs asks for. The outputs never depend on `tasks`: only how the work is spread."""

    tasks: int = spec(ge=1)  # array tasks the stage's units of work are dealt to (contiguous runs, in order)
    gpus: int = spec(ge=0, le=1)  # GPUs per task: 0 or 1 (each task uses one device)
    cpus_per_task: int = spec(ge=1)
    mem_gb: int = spec(ge=1)
    timeout_min: int = spec(ge=1)
    partition: Optional[str] = spec(nonempty=True)  # null: launcher.partition


@dataclass(frozen=True)
class StageLaunches(Checked):
    """`launcher.stages`: one entry per scaled-out stage (the unit of work in brackets)."""

    pairs: StageLaunch  # validation (shard files)
    embed: StageLaunch  # CLIP embedding (shard files, resumable)
    index: StageLaunch  # neighbour queries (row ranges); training: 1 job
    curate: StageLaunch  # archives (curation shards, resumable)
    evaluate: StageLaunch  # zero-shot segmentation (benchmarks)


@dataclass(frozen=True)
class LauncherConfig(Checked):
    """Where jobs run (cocu/launch): in-process, a local submitit process, or SLURM. The top-level
    resources are those of the pre-training job (multi-node DDP); `stages` says how each N-sized
    stage is split into array tasks."""

    cluster: Literal["local", "debug", "slurm"]
    partition: Optional[str] = spec(nonempty=True)  # SLURM partition (null: the cluster's default)
    nodes: int = spec(ge=1)
    gpus_per_node: int = spec(ge=0)  # 0: CPU only
    tasks_per_node: Optional[int] = spec(ge=1)  # null: one per GPU (1 on CPU); e.g. 2 for 2-rank CPU DDP
    cpus_per_task: int = spec(ge=1)
    mem_gb: int = spec(ge=1)
    timeout_min: int = spec(ge=1)  # wall time of one job; a pre-empted or timed-out job is requeued
    signal_delay_s: int = spec(ge=0)  # USR2 this long before the time limit: checkpoint, then requeue
    max_requeues: int = spec(ge=0)
    folder: str = spec(nonempty=True)  # submitit logs and pickles
    extra_sbatch: dict[str, str]  # further `#SBATCH --key=value` lines (e.g. account, qos); nothing refers to them
    array_parallelism: int = spec(ge=1)  # at most this many tasks of one array run at once
    stages: StageLaunches


@dataclass(frozen=True)
class PretrainConfig(Checked):
    """Which GroupViT runs the `pretrain` stage trains: every variant x every seed."""

    # baseline | cocu | ranking | expansion | oracle (the upper bound) | precision<P> (P = 0-100: the
    # curation-precision ablation, ground truth mixed with wrong concepts; synthetic world only)
    variants: tuple[str, ...] = spec(nonempty=True, unique=True)
    seeds: tuple[int, ...] = spec(ge=0, nonempty=True, unique=True)  # one run per seed and variant; paired by seed
    threads: int = spec(ge=0)  # torch.set_num_threads per run on CPU (0: leave torch's default)
    parallel: int = spec(ge=1)  # launcher.cluster local: runs trained at once, one process each

    def _check(self) -> None:
        for i, v in enumerate(self.variants):
            m = PRECISION_VARIANT.match(v)
            if v not in VARIANTS and not (m and 0 <= int(m.group(1)) <= 100):
                self._fail(f"variants[{i}]", f"{v!r} is not a variant: one of {', '.join(VARIANTS)} or "
                                             "precision<P> with P = 0-100")


# --------------------------------------------------------------------------------------------
# CLIP: the model (`clip:`), the teacher stage (`teacher:`) and the embed stage (`embed:`)


@dataclass(frozen=True)
class ClipConfig(Checked):
    """Which CLIP: a tiny open_clip CLIP built from the fields below (synthetic), or an open_clip
    architecture with weights from a local file (pretrained). Tower fields are ignored for
    `pretrained`, where the architecture fixes them. The weights file itself is a path, so it lives
    in `paths.clip_weights` (synthetic: written by the `teacher` stage; pretrained: imported there)."""

    source: Literal["synthetic", "pretrained"]
    arch: str = spec(nonempty=True)  # open_clip architecture name (pretrained only); never a hub tag
    weights_file: Optional[str] = spec(nonempty=True)  # pretrained: the local weights file (never downloaded);
    # the teacher stage checks it and imports it into paths.clip_weights (DVC-tracked from then on)
    expected_sha256: Optional[str]  # checksum of the weights file; mismatch is an error
    image_size: int = spec(ge=1)  # input pixels, square (synthetic)
    embed_dim: int = spec(ge=1)  # shared embedding width (synthetic)
    vision_width: int = spec(ge=1)
    vision_layers: int = spec(ge=1)
    vision_head_width: int = spec(ge=1)  # heads = width // head_width (open_clip convention)
    patch_size: int = spec(ge=1)
    vision_pool: Literal["tok", "avg"]  # image feature: class token or mean of patch tokens
    text_width: int = spec(ge=1)
    text_layers: int = spec(ge=1)
    text_head_width: int = spec(ge=1)
    context_length: int = spec(ge=2)  # BPE tokens per caption, incl. start/end (synthetic)

    def _check(self) -> None:
        if self.source == "pretrained" and self.weights_file is None:
            self._fail("weights_file", "required when {p}source is pretrained (a local weights file)")
        if self.expected_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.expected_sha256):
            self._fail("expected_sha256", "must be 64 hex digits (a sha256) or null")
        for width, head in (("vision_width", "vision_head_width"), ("text_width", "text_head_width")):
            if getattr(self, width) % getattr(self, head):
                self._fail(width, f"must be a multiple of {{p}}{head} ({getattr(self, head)})")
        if self.image_size % self.patch_size:
            self._fail("image_size", f"must be a multiple of {{p}}patch_size ({self.patch_size})")


@dataclass(frozen=True)
class TeacherConfig(Checked):
    """Contrastive training of the tiny CLIP on the teacher corpus (synthetic profile only)."""

    epochs: int = spec(ge=1)
    batch_size: int = spec(ge=1)
    lr: float = spec(gt=0)  # peak AdamW learning rate
    weight_decay: float = spec(ge=0)  # applied to matrices only (not gains, biases, logit scale)
    warmup_steps: int = spec(ge=0)  # linear warm-up, then cosine to 0
    beta2: float = spec(ge=0, lt=1)  # AdamW beta2 (beta1 is 0.9)
    crop_scale_min: float = spec(gt=0, le=1)  # random resized crop: area fraction range [min, 1]
    crop_ratio_max: float = spec(ge=1)  # aspect ratio range [1/max, max]
    hflip: float = spec(ge=0, le=1)  # probability of a horizontal flip
    color_jitter: float = spec(ge=0)  # brightness/contrast/saturation strength; colour is class identity
    holdout_fraction: float = spec(ge=0, lt=1)  # last fraction of the corpus, for retrieval accuracy
    eval_batch_size: int = spec(ge=1)  # held-out retrieval is measured within chunks of this size
    seed: int = spec(ge=0)
    threads: int = spec(ge=0)  # torch.set_num_threads during training (0: leave as is)
    log_every: int = spec(ge=1)  # steps between loss log lines


@dataclass(frozen=True)
class EmbedConfig(Checked):
    """Image, caption and concept embeddings of the pairs."""

    batch_size: int = spec(ge=1)
    device: Literal["auto", "cpu", "cuda"]  # resolved by cocu/launch
    prompt: str  # concept prompt template with one `{}`; no trailing period
    autocast: bool  # fp16 autocast on CUDA (no-op on CPU)
    workers: int = spec(ge=0)  # data workers decoding shards in each embed task (0: in the task's process)

    def _check(self) -> None:
        if self.prompt.count("{}") != 1:
            self._fail("prompt", "must contain `{}` exactly once (where the concept goes)")


# --------------------------------------------------------------------------------------------
# curation: the neighbour index, the vocabulary, the archives


@dataclass(frozen=True)
class IndexConfig(Checked):
    """Image->image neighbour search (the `index` stage)."""

    type: Literal["flat", "ivf", "ivfpq", "hnsw"]  # flat = exact inner product (the reference)
    num_neighbours: int = spec(ge=1)  # L in the paper: neighbours per anchor, the anchor itself included
    nlist: int = spec(ge=1)  # ivf, ivfpq: number of inverted lists (coarse centroids)
    nprobe: int = spec(ge=1)  # ivf, ivfpq: lists visited per query (at most nlist)
    pq_m: int = spec(ge=1)  # ivfpq: product-quantiser sub-vectors (bytes a vector at 8 bits); divides the dimension
    pq_bits: int = spec(ge=1, le=16)  # ivfpq: bits per sub-vector code
    refine: int = spec(ge=0)  # ivfpq: fetch refine * L candidates by code distance, re-rank them exactly (0: codes only)
    hnsw_m: int = spec(ge=2)  # hnsw: graph degree
    ef_construction: int = spec(ge=1)  # hnsw: candidate list size while building
    ef_search: int = spec(ge=1)  # hnsw: candidate list size while searching
    train_size: int = spec(ge=1)  # ivf, ivfpq: vectors sampled (seeded) to train the quantisers (>= nlist)
    batch_size: int = spec(ge=1)  # queries per search call / query block of the exact search
    block_size: int = spec(ge=1)  # exact search: rows per matrix-multiply block (memory ~ block_size^2 floats)
    recall_sample: int = spec(ge=0)  # approximate indexes: queries checked against exact search (0: skip)
    seed: int = spec(ge=0)  # training sample and recall sample

    def _check(self) -> None:
        if self.nprobe > self.nlist:
            self._fail("nprobe", f"must be <= {{p}}nlist ({self.nlist})")
        if self.type in ("ivf", "ivfpq") and self.train_size < self.nlist:
            self._fail("train_size", f"must be >= {{p}}nlist ({self.nlist}): k-means needs a point per list")


@dataclass(frozen=True)
class VocabularyConfig(Checked):
    """How the concept list file becomes the set of matchable strings."""

    plural: bool  # add the inflect plural of each concept's last word (official: yes)
    max_ngram: int = spec(ge=1)  # caption n-grams matched against the vocabulary: 1..max_ngram words


@dataclass(frozen=True)
class CurationConfig(Checked):
    """Expansion, ranking and clustering of the archives."""

    membership: Literal["exact", "substring"]  # substring = the official code's quirk ("cat" in "cattle")
    cluster: bool  # k-means over each archive's concept embeddings
    cluster_ratio: float = spec(gt=0, le=1)  # clusters = ceil(ratio * |A|), only when |A| > min_cluster_size
    min_cluster_size: int = spec(ge=0)  # archives this small or smaller: each concept is its own cluster
    kmeans_iters: int = spec(ge=1)  # Lloyd iterations at most (stops earlier once no assignment changes)
    batch_size: int = spec(ge=1)  # anchors curated together (memory ~ batch * max archive * D floats)
    shard_size: int = spec(ge=1)  # anchors per parquet shard (the unit of resume)
    top_k: int = spec(ge=1)  # K: concepts per sample at training time; metrics use the top-K new concepts


# --------------------------------------------------------------------------------------------
# GroupViT pre-training: model, data, train


@dataclass(frozen=True)
class ImageEncoderConfig(Checked):
    """GroupViT image encoder. Per-stage values are lists with one entry per stage."""

    img_size: int = spec(ge=1)  # training resolution; other sizes interpolate the position embedding
    patch_size: int = spec(ge=1)
    in_chans: int = spec(ge=1)
    width: int = spec(ge=1)  # token width, the same in every stage
    depths: tuple[int, ...] = spec(ge=1, nonempty=True)  # transformer blocks per stage
    num_heads: tuple[int, ...] = spec(ge=1)  # attention heads per stage (each divides width)
    num_group_tokens: tuple[int, ...] = spec(ge=0)  # learnable group tokens per stage (the last: 0)
    num_output_groups: tuple[int, ...] = spec(ge=1)  # segments out of each grouping block (stages - 1)
    mlp_ratio: float = spec(gt=0)  # transformer / channel MLP hidden = mlp_ratio * width
    token_mlp_ratio: float = spec(gt=0)  # group-token mixing MLP hidden = token_mlp_ratio * width
    drop_path: float = spec(ge=0, lt=1)  # stochastic depth, linear over all transformer blocks
    gumbel_tau: float = spec(gt=0)  # temperature of the straight-through Gumbel-softmax assignment
    group_token_std: float = spec(gt=0)  # init std of the learnable group tokens (GroupViT: 0.02)
    gumbel_noise: bool  # Gumbel noise on the assignment logits in training (GroupViT: true)

    def _check(self) -> None:
        n = len(self.depths)
        for key, want in (("num_heads", n), ("num_group_tokens", n), ("num_output_groups", n - 1)):
            if len(getattr(self, key)) != want:
                self._fail(key, f"needs {want} entries (one per stage{' but the last' if want < n else ''}: "
                                f"{{p}}depths has {n})")
        if self.num_group_tokens[-1] != 0:
            self._fail(f"num_group_tokens[{n - 1}]", "must be 0 (the last stage has no grouping)")
        for i, g in enumerate(self.num_group_tokens[:-1]):
            if g < 1:
                self._fail(f"num_group_tokens[{i}]", "must be >= 1 (every stage but the last groups)")
        for i, h in enumerate(self.num_heads):
            if self.width % h:
                self._fail(f"num_heads[{i}]", f"must divide {{p}}width ({self.width})")
        if self.img_size % self.patch_size:
            self._fail("img_size", f"must be a multiple of {{p}}patch_size ({self.patch_size})")


@dataclass(frozen=True)
class TextEncoderConfig(Checked):
    """CLIP-style causal text transformer (features at the end-of-text token)."""

    context_length: int = spec(ge=2)  # tokens per text incl. start/end (the tokenizer pads/truncates)
    vocab_size: int = spec(ge=1)  # CLIP BPE vocabulary (open_clip's SimpleTokenizer: 49408)
    width: int = spec(ge=1)
    layers: int = spec(ge=1)
    heads: int = spec(ge=1)
    mlp_ratio: float = spec(gt=0)

    def _check(self) -> None:
        if self.width % self.heads:
            self._fail("heads", f"must divide {{p}}width ({self.width})")


@dataclass(frozen=True)
class ProjectorConfig(Checked):
    """Linear -> BatchNorm1d -> ReLU -> Linear, one per tower, into the joint space."""

    hidden_dim: int = spec(ge=1)
    out_dim: int = spec(ge=1)  # joint embedding width C
    # `relu` = GroupViT; `none` drops the ReLU: the head is then affine at evaluation, so the projected
    # mean of the segment tokens (the image embedding) is the mean of the projected segments that
    # segmentation classifies (a deviation measured on the synthetic world, docs/method.md)
    activation: Literal["relu", "none"]


InitScheme = Literal["groupvit", "fan_in"]  # weight init of the models (cocu.models.layers.init_weights)


@dataclass(frozen=True)
class ModelConfig(Checked):
    image: ImageEncoderConfig
    text: TextEncoderConfig
    projector: ProjectorConfig
    temperature: float = spec(gt=0)  # both logit scales start at log(1 / temperature)
    max_logit_scale: float = spec(ge=1)  # exp(logit_scale) is clamped to this
    # How the multi-label loss scores an image against a prompt: `mean` = GroupViT (the projected
    # mean of the final segment tokens, as the image-caption loss), `max` = its best-matching
    # projected segment (a deviation measured on the synthetic world, docs/method.md)
    prompt_pool: Literal["mean", "max"]
    # Weight init of every linear and conv layer (truncated normal): `groupvit` = std 0.02 (GroupViT,
    # timm), `fan_in` = std fan_in^-1/2 (LeCun), measured on the synthetic world (README)
    init: InitScheme

    def _check(self) -> None:
        if 1.0 / self.temperature > self.max_logit_scale:
            self._fail("temperature", f"1 / temperature exceeds {{p}}max_logit_scale ({self.max_logit_scale})")


def paper_model_config() -> ModelConfig:
    """GroupViT as trained by CoCu: 55,726,610 parameters (the paper profiles' `model`)."""
    return ModelConfig(
        image=ImageEncoderConfig(img_size=224, patch_size=16, in_chans=3, width=384, depths=(6, 3, 3),
                                 num_heads=(6, 6, 6), num_group_tokens=(64, 8, 0), num_output_groups=(64, 8),
                                 mlp_ratio=4.0, token_mlp_ratio=0.5, drop_path=0.1, gumbel_tau=1.0,
                                 group_token_std=0.02, gumbel_noise=True),
        text=TextEncoderConfig(context_length=77, vocab_size=49408, width=256, layers=12, heads=4, mlp_ratio=4.0),
        projector=ProjectorConfig(hidden_dim=4096, out_dim=256, activation="relu"),
        temperature=0.07, max_logit_scale=100.0, prompt_pool="mean", init="groupvit",
    )


def tiny_model_config() -> ModelConfig:
    """The synthetic world's model (params.yaml's `model`): 64 px images, 8 -> 4 groups, a 2-layer
    width-64 text tower."""
    return ModelConfig(
        image=ImageEncoderConfig(img_size=64, patch_size=8, in_chans=3, width=64, depths=(2, 1, 1),
                                 num_heads=(2, 2, 2), num_group_tokens=(8, 4, 0), num_output_groups=(8, 4),
                                 mlp_ratio=4.0, token_mlp_ratio=0.5, drop_path=0.0, gumbel_tau=0.1,
                                 group_token_std=0.02, gumbel_noise=True),
        text=TextEncoderConfig(context_length=32, vocab_size=49408, width=64, layers=2, heads=2, mlp_ratio=4.0),
        projector=ProjectorConfig(hidden_dim=256, out_dim=64, activation="none"),
        temperature=0.07, max_logit_scale=100.0, prompt_pool="mean", init="fan_in",
    )


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the ImageNet statistics GroupViT normalises with
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig(Checked):
    """Reading, splitting, shuffling and augmenting the pairs. The batch size, seed and K
    (num_prompts) are the `train` section's; the image size is the model's."""

    shuffle_buffer: int = spec(ge=0)  # samples in each stream's shuffle buffer (paper: 10,000); 0: no shuffle
    streams: int = spec(ge=1)  # streams each rank's epoch is divided into (training/data.py); sets the batch order
    workers: int = spec(ge=0)  # DataLoader worker processes per rank (0: in the training process); must divide
    #                            `streams`; does not change the batches
    split: Literal["auto", "shards", "samples"]  # how an epoch is divided among streams (training/data.py)
    crop_scale: tuple[float, float] = spec(gt=0, le=1)  # RandomResizedCrop area fraction range (paper: 0.08-1)
    crop_ratio: tuple[float, float] = spec(gt=0)  # RandomResizedCrop aspect ratio range
    interpolation: Literal["bilinear", "bicubic"]  # crop resize (paper: timm's bicubic)
    flip: bool  # random horizontal flip, p = 0.5
    color_jitter: float = spec(ge=0)  # brightness, contrast and saturation factors in [1 - x, 1 + x] (0: off)
    random_erasing: float = spec(ge=0, le=1)  # probability of erasing one random rectangle with noise (0: off)
    mean: tuple[float, float, float] = spec(ge=0, le=1)  # per-channel normalisation (eval uses the same)
    std: tuple[float, float, float] = spec(gt=0)
    token_cache: int = spec(ge=0)  # tokenised texts kept per worker (prompts and captions recur)
    prefetch: int = spec(ge=1)  # batches each worker prepares ahead

    def _check(self) -> None:
        for key in ("crop_scale", "crop_ratio"):
            lo, hi = getattr(self, key)
            if lo > hi:
                self._fail(key, "must be ordered [low, high]")
        if self.workers and self.streams % self.workers:  # each worker serves whole streams
            fits = max(w for w in range(1, min(self.workers, self.streams) + 1) if self.streams % w == 0)
            self._fail("workers", f"cannot serve {{p}}streams ({self.streams}): the worker count must be 0 or "
                                  f"divide the stream count (e.g. workers: {fits}); changing streams changes the "
                                  "batch order, changing workers does not")


@dataclass(frozen=True)
class TrainConfig(Checked):
    """Learning rates are given for a total batch of `lr_reference_batch` and scaled linearly by
    the actual total batch (batch_size x accum_steps x world_size)."""

    batch_size: int = spec(ge=1)  # images per micro-batch per process (the paper: 256 per GPU)
    epochs: float = spec(gt=0)  # passes over the pairs; the step count is derived from samples_per_epoch
    warmup_epochs: float = spec(ge=0)
    steps: Optional[int] = spec(ge=1)  # total optimizer steps; overrides epochs when set
    warmup_steps: Optional[int] = spec(ge=0)  # overrides warmup_epochs when set
    accum_steps: int = spec(ge=1)  # micro-batches per optimizer step (each one is its own contrastive batch)
    base_lr: float = spec(gt=0)  # peak lr at lr_reference_batch
    warmup_lr: float = spec(ge=0)  # lr at step 0, at lr_reference_batch
    min_lr: float = spec(ge=0)  # lr at the last step, at lr_reference_batch
    lr_reference_batch: int = spec(ge=1)
    weight_decay: float = spec(ge=0)  # on >= 2-D weights only (see cocu.training.optim.param_groups)
    betas: tuple[float, float] = spec(ge=0, lt=1)
    clip_grad: Optional[float] = spec(gt=0)  # max global gradient norm; null: no clipping
    amp: bool  # mixed precision on cuda (always off on CPU)
    amp_dtype: Literal["bf16", "fp16"]  # fp16 also enables the GradScaler
    num_prompts: int = spec(ge=0)  # K prompts per image for the multi-label loss (0: image-text loss only)
    mlc_weight: float = spec(ge=0)
    checkpoint_every: int = spec(ge=1)  # optimizer steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = spec(ge=1)  # most recent checkpoints kept in the run directory
    log_every: int = spec(ge=1)  # optimizer steps between metric logs
    seed: int = spec(ge=0)

    def _check(self) -> None:
        for key in ("warmup_lr", "min_lr"):
            if getattr(self, key) > self.base_lr:
                self._fail(key, f"must be <= {{p}}base_lr ({self.base_lr})")


# --------------------------------------------------------------------------------------------
# zero-shot segmentation: one protocol card per benchmark

ReaderName = Literal[
    "voc", "voc20", "context", "context59", "coco_object", "coco_stuff", "ade20k", "cityscapes",
    "imagenet_s", "synthetic",
]
TemplateSet = Literal["single", "imagenet80"]


@dataclass(frozen=True)
class ProtocolCard(Checked):
    """How one benchmark is read and segmented (cocu.eval). Sizes are pixels. A card lists every
    field (null where a field does not apply), so a result is always printed beside the exact
    protocol that produced it (`cocu.eval.protocol.card_text`)."""

    reader: ReaderName  # label format and folder layout (cocu.data.readers)
    root: str = spec(nonempty=True)  # folder of the benchmark under the benchmarks root
    has_background: bool  # label 0 is background, never prompted; decided by `bg_thresh`
    resize: Optional[int] = spec(ge=1)  # short side after resizing (aspect kept); null: original size
    crop: int = spec(ge=1)  # sliding-window crop (square)
    stride: int = spec(ge=1)  # sliding-window stride (at most crop)
    # class-names file: a bare name (`voc`) is cocu/data/classnames/<name>.txt, anything with a
    # `/` or a `.txt` suffix is a path; null: `<benchmark folder>/class_names.txt`
    class_names: Optional[str] = spec(nonempty=True)
    # ImageNet-S: an image with more than cap^2 pixels is first shrunk to a long side of `cap`;
    # it is segmented at that size and the prediction is nearest-resized to the label's size
    long_side_cap: Optional[int] = spec(ge=1)
    max_long_side: Optional[int] = spec(ge=1)  # mmseg's img_scale=(2048, resize) caps the long side too
    bg_thresh: Optional[float] = spec(ge=0, le=1)  # background threshold; set exactly when has_background
    templates: TemplateSet  # "single": "a photo of a {}."; "imagenet80": CLIP's 80
    ignore_index: int = spec(ge=0)  # label value excluded from the metric
    num_images: Optional[int] = spec(ge=1)  # evaluate only the first N images (sorted ids); null: all

    def _check(self) -> None:
        if self.stride > self.crop:
            self._fail("stride", f"must be <= {{p}}crop ({self.crop})")
        if self.has_background and self.bg_thresh is None:
            self._fail("bg_thresh", "required when {p}has_background is true")
        if not self.has_background and self.bg_thresh is not None:
            self._fail("bg_thresh", "must be null when {p}has_background is false (no background class)")


@dataclass(frozen=True)
class EvalConfig(Checked):
    """The `eval` section: every card, and which of them the `evaluate` stage runs. Pixel
    normalisation and the logit scale are not keys here: the pre-training data config's mean/std
    and the model's clamped scale (`model.scale()`) are passed, so they cannot drift."""

    benchmarks: dict[str, ProtocolCard]  # name -> protocol card; a card may go if `active` does not name it
    active: tuple[str, ...] = spec(nonempty=True, unique=True)  # cards the `evaluate` stage runs
    overlays: int = spec(ge=0)  # demo overlays written per benchmark (first N images of rank 0)
    threads: int = spec(ge=0)  # torch threads on CPU (0: torch's default); small models run faster on 1

    def _check(self) -> None:
        for i, name in enumerate(self.active):
            _reference(self, f"active[{i}]", name, self.benchmarks, "benchmarks")


# --------------------------------------------------------------------------------------------
# reports


@dataclass(frozen=True)
class KindBenchmarks(Checked):
    """`report.kind_benchmarks`: the benchmark on which each kind of concept is judged among its own
    kind only (synthetic world: stuff on the stuff-only set, things on the things + background set),
    as the per-concept analysis's second view beside `report.concept_benchmark`."""

    stuff: str = spec(nonempty=True)
    thing: str = spec(nonempty=True)


@dataclass(frozen=True)
class ReportSection(Checked):
    """The `report:` section of params.yaml: the knobs. Input and output paths live in `paths:`."""

    paper_setting: str = spec(nonempty=True)  # pre-training data setting of the paper numbers compared to
    # variant -> method of configs/paper_numbers.yaml whose numbers it reproduces; other variants have
    # none (nothing else refers to an entry)
    paper_methods: dict[str, str]
    variants_order: tuple[str, ...] = spec(unique=True)  # table row order; variants not named follow, sorted
    benchmarks_order: tuple[str, ...] = spec(unique=True)  # column order; benchmarks not named follow, sorted
    curve_metric: str = spec(nonempty=True)  # curve column plotted in the convergence figure
    decimals: int = spec(ge=0, le=6)  # decimals of mIoU in the Markdown and LaTeX tables
    concept_benchmark: str = spec(nonempty=True)  # per-concept analysis: the benchmark holding every concept
    kind_benchmarks: KindBenchmarks  # per-concept analysis: each concept judged among its own kind


@dataclass(frozen=True)
class ReportConfig(Checked):
    """What the `report` stage reads and writes: DVC-tracked files only (never the MLflow store),
    so the report rebuilds without it. `from_params` fills it from `paths:` and `report:`."""

    results_dir: str  # results/<variant>/s<seed>/<benchmark>.json, written by the `evaluate` stage
    curves_dir: str  # <variant>-s<seed>.csv training curves (step, loss, ...), written by `pretrain`
    run_metrics_dir: str  # <variant>-s<seed>.json final metrics of each run, written by `pretrain`
    paper_numbers: str  # reference numbers with their sources (configs/paper_numbers.yaml)
    out_dir: str  # results.md, tables/, figures/ are written here
    curate_metrics: Optional[str]  # flat JSON of the `curate` stage; missing file: omitted with a note
    teacher_metrics: Optional[str]  # flat JSON of the teacher CLIP's quality (synthetic profile)
    gallery: Optional[str]  # a figure shown at the top of results.md (e.g. paths.world_gallery)
    paper_setting: str
    paper_methods: dict[str, str]
    variants_order: tuple[str, ...]
    benchmarks_order: tuple[str, ...]
    curve_metric: str
    decimals: int = spec(ge=0, le=6)
    concept_benchmark: str
    kind_benchmarks: KindBenchmarks
    # the runs the pipeline is configured for (pretrain.variants x pretrain.seeds): only their
    # results are read; None reads every result file found (tests, ad-hoc use)
    variants: Optional[tuple[str, ...]]
    seeds: Optional[tuple[int, ...]]
    pairs_manifest: Optional[str]  # synthetic world: the hidden ground truth of the per-concept analysis
    archives: Optional[str]  # the curated archives (per-concept curation recall)
    benchmarks_root: Optional[str]  # synthetic benchmarks: <root>/<name>/class_names.txt (class order of the counts)
    num_prompts: int = spec(ge=0)  # K: prompts per training step (CoCu's prompt recall)

    @classmethod
    def from_params(cls, params: Params) -> ReportConfig:
        paths = params.paths
        knobs = {f.name: getattr(params.report, f.name) for f in dataclasses.fields(ReportSection)}
        return cls(results_dir=paths.results, curves_dir=paths.pretrain_curves,
                   run_metrics_dir=str(Path(paths.details) / "pretrain"), paper_numbers=paths.paper_numbers,
                   out_dir=paths.reports, curate_metrics=str(Path(paths.details) / "curate.json"),
                   teacher_metrics=str(Path(paths.details) / "teacher.json"),
                   gallery=paths.world_gallery, variants=params.pretrain.variants, seeds=params.pretrain.seeds,
                   pairs_manifest=paths.pairs_manifest, archives=paths.archives, benchmarks_root=paths.benchmarks_root,
                   num_prompts=params.train.num_prompts, **knobs)


# --------------------------------------------------------------------------------------------
# the whole file


@dataclass(frozen=True)
class Params(Checked):
    """The whole params file."""

    run: RunConfig
    paths: PathsConfig
    world: WorldConfig
    pairs: PairsConfig
    tracking: TrackingConfig
    launcher: LauncherConfig
    clip: ClipConfig
    teacher: TeacherConfig
    embed: EmbedConfig
    index: IndexConfig
    vocabulary: VocabularyConfig
    curation: CurationConfig
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    pretrain: PretrainConfig
    eval: EvalConfig
    report: ReportSection

    def _check(self) -> None:
        for i, name in enumerate(self.eval.active):  # a synthetic card reads a set the `benchmarks` stage writes
            card = self.eval.benchmarks[name]
            if card.reader == "synthetic" and card.root not in self.world.benchmarks:
                raise FieldError("Params", f"eval.benchmarks.{name}.root", card.root,
                                 f"a synthetic benchmark that {{p}}world.benchmarks does not write (eval.active[{i}] "
                                 f"runs it; world.benchmarks: {', '.join(self.world.benchmarks) or 'none'})")


# --------------------------------------------------------------------------------------------
# loader


def load_params(path: Path | str = "params.yaml") -> Params:
    """Load and validate the whole params file (unknown, missing, mistyped or out-of-range keys are errors)."""
    raw = read_yaml(path)
    return _build(Params, raw, str(path), "")


def load_section(cls: type, section: str, path: Path | str = "params.yaml") -> Any:
    """Load one section after validating the whole file, e.g. `load_section(WorldConfig, "world")`."""
    params = load_params(path)
    value = getattr(params, section)
    if not isinstance(value, cls):
        raise ConfigError(f"{path}: section {section!r} is a {type(value).__name__}, not {cls.__name__}")
    return value


def read_yaml(path: Path | str) -> dict[str, Any]:
    """A YAML mapping file: YAML 1.2 scalars, duplicate keys an error (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def from_dict(cls: type, raw: Any, source: str = "<dict>") -> Any:
    """Build one dataclass from a plain mapping, with the same strictness as `load_params`."""
    return _build(cls, raw, source, "")


def to_dict(obj: Any) -> Any:
    """A dataclass (tree) as plain python values, for logging and for writing YAML."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: the dotted form MLflow params and `dvc exp run -S` use."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _build(cls: type, raw: Any, source: str, where: str) -> Any:
    label = where or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {label} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        keys = ", ".join(_join(where, str(k)) for k in unknown)
        raise ConfigError(f"{source}: unknown key(s) {keys} (expected one of: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing required key {key}")
            continue
        kwargs[name] = _coerce(hints[name], raw[name], source, key)
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise ConfigError(f"{source}: {e.render(where + '.' if where else '')}") from None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _hint(value: Any) -> str:
    """A nudge for a string that looks like a number or a boolean (quoted in the file)."""
    if isinstance(value, str):
        try:
            float(value)
            return " (a quoted string: write the number without quotes)"
        except ValueError:
            pass
        if value.lower() in ("yes", "no", "on", "off", "y", "n"):
            return " (YAML 1.2 reads yes/no/on/off as strings: write true or false)"
    return ""


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:  # noqa: C901 - one case per type
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{source}: {key}: {value!r} matches none of {args}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {type(value).__name__}")
        kt, vt = args
        return {_coerce(kt, k, source, f"{key}.{k}"): _coerce(vt, v, source, f"{key}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {type(value).__name__}: {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{source}: {key} must have {len(args)} items, got {len(value)}: {value!r}")
            return tuple(_coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}{_hint(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}{_hint(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}{_hint(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {tp!r} in the schema")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# YAML: safe_load with YAML 1.2 scalars and no duplicate keys

_MERGE = "tag:yaml.org,2002:merge"
# The implicit scalar types of ruamel.yaml's YAML 1.2 resolver (DVC reads params.yaml with it).
_YAML12_RESOLVERS = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:float", r"""^(?:
         [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", list("-+0123456789.")),
    ("tag:yaml.org,2002:int", r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0o?[0-7_]+
        |[-+]?[0-9_]+
        |[-+]?0x[0-9a-fA-F_]+)$""", list("-+0123456789")),
    (_MERGE, r"^(?:<<)$", ["<"]),
    ("tag:yaml.org,2002:null", r"^(?: ~ |null|Null|NULL | )$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:timestamp", r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
        |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
        (?:[Tt]|[ \t]+)[0-9][0-9]?
        :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
        (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""", list("0123456789")),
    ("tag:yaml.org,2002:value", r"^(?:=)$", ["="]),  # no constructor: an error, as in ruamel
]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 implicit scalars (PyYAML alone is YAML 1.1)."""

    yaml_implicit_resolvers: dict = {}


for _tag, _regexp, _first in _YAML12_RESOLVERS:
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp, re.X), _first)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """YAML 1.2 integers: decimal (a leading 0 is not octal), 0o octal, 0x hex, 0b binary."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    for prefix, base in (("0b", 2), ("0o", 8), ("0x", 16)):
        if text.startswith(prefix):
            return sign * int(text[2:], base)
    return sign * int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper that quotes exactly the strings YAML 1.2 would read as something else
    (`"4e-3"` stays a string; `yes` needs no quotes)."""

    yaml_implicit_resolvers: dict = {}


for _tag, _regexp, _first in _YAML12_RESOLVERS:
    _Dumper.add_implicit_resolver(_tag, re.compile(_regexp, re.X), _first)


def dump_yaml(data: Any) -> str:
    """`data` as YAML that `parse_yaml` (and DVC) read back as `data`, keys in their order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """`text` as `yaml.safe_load` would read it, but with YAML 1.2 scalars and duplicate keys an error."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _no_duplicates(node, source, "")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    finally:
        loader.dispose()


def _no_duplicates(node: yaml.Node, source: str, where: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                _no_duplicates(value_node, source, where)
                continue
            ident = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            key = _join(where, str(name))
            line = key_node.start_mark.line + 1
            if ident in seen:
                raise ConfigError(f"{source}: duplicate key {key} at line {line} (first at line {seen[ident]})")
            seen[ident] = line
            _no_duplicates(value_node, source, key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _no_duplicates(item, source, f"{where}[{i}]")
