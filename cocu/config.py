"""Typed, strict configuration: `params.yaml` -> frozen dataclasses, one per section.

This is the only place params are parsed. Every section of `params.yaml` is a frozen dataclass
below; `load_params` checks the whole file so that a misspelt key anywhere is an error that names
the file and the dotted key, whichever stage reads it. Derived values are properties, never keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from cocu.clip.config import ClipConfig, EmbedConfig, TeacherConfig
from cocu.concepts.config import CurationConfig, IndexConfig, VocabularyConfig
from cocu.eval.config import EvalConfig
from cocu.models.config import ModelConfig
from cocu.reports.config import ReportSection
from cocu.training.config import TrainConfig
from cocu.training.data_config import DataConfig


class ConfigError(ValueError):
    """A params file does not match the typed schema; the message names the file and key."""


# --------------------------------------------------------------------------------------------
# sections


@dataclass(frozen=True)
class RunConfig:
    profile: str  # name of the active profile; tags every MLflow run
    seed: int  # global seed for everything that is not seeded by its own section


@dataclass(frozen=True)
class PathsConfig:
    """Every file and folder the pipeline reads or writes, relative to the repo root."""

    pairs_shards: str  # webdataset shards of the pre-training pairs
    pairs_manifest: str  # parquet: key, shard, caption (+ hidden ground truth on the synthetic world)
    teacher_shards: str  # synthetic only: the separate corpus the teacher CLIP is trained on
    teacher_manifest: str
    pairs_metrics: str  # json metrics of the `pairs` stage (committed)
    world_gallery: str  # png gallery of the synthetic world
    vocabulary: str  # concept list file, one concept per line
    synonyms: Optional[str]  # optional TSV `synonym<TAB>concept`: lines of the list that name another concept
    benchmarks_root: str  # root of the segmentation benchmarks (detectron2's DETECTRON2_DATASETS)
    benchmarks_metrics: str
    clip_weights: str  # CLIP weights file: trained by `teacher` (synthetic) or a local download (real)
    teacher_metrics: str
    image_embeddings: str  # [N, D] float16 .npy, unit norm, row i = manifest row i
    caption_embeddings: str  # [N, D] float16 .npy
    concept_embeddings: str  # [V, D] float16 .npy of "a photo of a {c}"
    concept_names: str  # V lines, the concepts in the row order of concept_embeddings
    embed_metrics: str
    index: str  # folder: what the index stage trains once (faiss index, or the exact search's row order)
    neighbours: str  # [N, L] int64 .npy (-1: no neighbour)
    neighbour_sims: str  # [N, L] float32 .npy
    index_metrics: str
    caption_concepts: str  # parquet: key, concepts list<str>
    concepts_metrics: str
    archives: str  # folder of parquet shards: key, concepts, scores, clusters
    curate_metrics: str
    runs: str  # pre-training run folders (checkpoints for resume), one per variant and seed
    checkpoints: str  # final model weights, one file per variant and seed
    pretrain_metrics: str  # folder: final metrics json + loss-curve csv per variant and seed
    results: str  # folder: <variant>/s<seed>/<benchmark>.json
    paper_numbers: str  # the paper's reference numbers, each with its source
    reports: str  # folder the `report` stage writes (results.md, tables/, figures/)
    mlflow_db: str  # sqlite file of the embedded MLflow store, at the repo root


@dataclass(frozen=True)
class WorldSize:
    pairs: int  # pre-training pairs
    teacher: int  # teacher-corpus pairs (CLIP stand-in)
    benchmark: int  # images per synthetic benchmark


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic world (DESIGN §5)."""

    size: str  # key into `sizes`
    sizes: dict[str, WorldSize]
    image_size: int  # pixels, square
    min_concepts: int  # concepts per image, inclusive
    max_concepts: int
    mention_rate: float  # target fraction of present concepts that the caption names
    shard_size: int  # samples per webdataset shard
    jpeg_quality: int
    seed: int
    benchmarks: tuple[str, ...]  # which synthetic benchmarks the `benchmarks` stage writes

    @property
    def counts(self) -> WorldSize:
        return self.sizes[self.size]


@dataclass(frozen=True)
class PairsConfig:
    """Where the pre-training pairs come from."""

    source: Literal["synthetic", "webdataset"]
    # real profile: existing img2dataset shards to validate and index (glob, relative to repo root)
    shards_glob: Optional[str] = None
    caption_key: str = "txt"  # img2dataset writes the caption as `.txt`
    image_keys: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str  # MLflow experiment that groups every run of this repo
    uri: Optional[str] = None  # None: sqlite store `paths.mlflow_db` at the repo root; env wins


@dataclass(frozen=True)
class StageLaunch:
    """How one stage whose work grows with N is split into jobs (a SLURM job array), and what one
    of those jobs asks for. The outputs never depend on `tasks`: only how the work is spread."""

    tasks: int = 1  # array tasks the stage's units of work are dealt to (contiguous runs, in order)
    gpus: int = 0  # GPUs per task: 0 or 1 (each task uses one device)
    cpus_per_task: int = 2
    mem_gb: int = 8
    timeout_min: int = 60
    partition: Optional[str] = None  # None: launcher.partition


@dataclass(frozen=True)
class StageLaunches:
    """`launcher.stages`: one entry per scaled-out stage (the unit of work in brackets)."""

    pairs: StageLaunch = field(default_factory=StageLaunch)  # validation (shard files)
    embed: StageLaunch = field(default_factory=StageLaunch)  # CLIP embedding (shard files, resumable)
    index: StageLaunch = field(default_factory=StageLaunch)  # neighbour queries (row ranges); training: 1 job
    curate: StageLaunch = field(default_factory=StageLaunch)  # archives (curation shards, resumable)
    evaluate: StageLaunch = field(default_factory=StageLaunch)  # zero-shot segmentation (benchmarks)


@dataclass(frozen=True)
class LauncherConfig:
    """Where jobs run. The top-level resources are those of the pre-training job (multi-node
    DDP); `stages` says how each N-sized stage is split into array tasks."""

    cluster: Literal["local", "debug", "slurm"]
    partition: Optional[str] = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: Optional[int] = None  # None: one per GPU (1 on CPU); e.g. 2 for 2-rank CPU DDP
    cpus_per_task: int = 2
    mem_gb: int = 8
    timeout_min: int = 60
    signal_delay_s: int = 120
    max_requeues: int = 3
    folder: str = "logs/submitit"
    extra_sbatch: dict[str, str] = field(default_factory=dict)
    array_parallelism: int = 64  # at most this many tasks of one array run at once
    stages: StageLaunches = field(default_factory=StageLaunches)


@dataclass(frozen=True)
class PretrainConfig:
    """Which GroupViT runs the `pretrain` stage trains (a DVC matrix over variants x seeds)."""

    variants: tuple[str, ...]  # baseline | cocu | ranking | expansion | oracle (the upper bound)
    seeds: tuple[int, ...]  # one run per seed and variant; the report shows mean ± std over seeds
    threads: int = 0  # torch.set_num_threads on CPU (0: leave torch's default)


@dataclass(frozen=True)
class Params:
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


# --------------------------------------------------------------------------------------------
# loader


def load_params(path: Path | str = "params.yaml") -> Params:
    """Load and validate the whole params file (unknown, missing or mistyped keys are errors)."""
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
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    with path.open() as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
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
    unknown = sorted(set(raw) - set(fields))
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
    return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


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
                raise ConfigError(f"{source}: {key} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {tp!r} in the schema")  # pragma: no cover
