"""Text augmentation for pre-training: the caption plus K concept prompts per pair (docs/method.md §7).

Every variant returns `[caption] + K prompts`; each prompt is one concept wrapped in a random one
of the 80 CLIP ImageNet templates, and missing prompts (fewer than K concepts available) are the
caption itself. The variants differ only in where the K concepts come from:

| variant     | concepts                                                | sampler (cocu.concepts.sampling) |
|-------------|---------------------------------------------------------|----------------------------------|
| `baseline`  | the pair's own caption concepts (vocabulary match)      | uniform, without replacement     |
| `cocu`      | the curated archive                                     | `sample_cluster` (the paper)     |
| `ranking`   | the curated archive                                     | `sample_topk` (official default) |
| `expansion` | the curated archive                                     | `sample_uniform`                 |
| `oracle`    | the hidden ground truth (synthetic world only)          | uniform, without replacement     |
| `precisionP`| caption concepts + missed ground truth mixed with wrong | uniform, without replacement     |
|             | concepts at precision P% (CoCu's archive sizes)          |                                  |

`oracle` is an upper bound that no real method can reach, never a default; it and the
`precisionP` ablations (the dose-response of curation precision, `PrecisionPicker`) are the only
paths here that read ground truth, and the other variants refuse a ground-truth argument.
All functions are pure given the explicit `rng` (one per sample, see cocu.training.data).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cocu.concepts.archive import read_archives
from cocu.config import PRECISION_VARIANT, VARIANTS
from cocu.concepts.sampling import sample_cluster, sample_topk, sample_uniform
from cocu.concepts.vocabulary import Vocabulary
from cocu.data.templates import IMAGENET_TEMPLATES
from cocu.training.flat import KeyIndex, Strings, read_only

log = logging.getLogger(__name__)

Variant = Literal["baseline", "cocu", "ranking", "expansion", "oracle"]
ARCHIVE_METHODS = {"cocu": "cluster", "ranking": "topk", "expansion": "uniform"}  # variant -> sampler


def variant_precision(variant: str) -> float | None:
    """The precision p of a dose-response variant `precision<P>` (P in percent, 0-100), else None."""
    m = PRECISION_VARIANT.match(variant)
    if m is None:
        return None
    p = int(m.group(1))
    if not 0 <= p <= 100:
        raise ValueError(f"variant {variant!r}: the precision must be 0-100 (percent)")
    return p / 100.0


def reads_ground_truth(variant: str) -> bool:
    """Whether a variant reads the hidden ground truth (the oracle and the precision ablations)."""
    return variant == "oracle" or variant_precision(variant) is not None


def check_variant(variant: str) -> str:
    """`variant` itself if it is known, else a ValueError naming the valid ones."""
    if variant not in VARIANTS and variant_precision(variant) is None:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)} "
                         f"or precision<P> (P = 0-100, the curation-precision ablation)")
    return variant


# --------------------------------------------------------------------------------------------
# pure text functions


def wrap_in_templates(concepts: Sequence[str], rng: np.random.Generator,
                      templates: Sequence[str] = IMAGENET_TEMPLATES) -> list[str]:
    """Each concept in a template drawn uniformly (with replacement) from `templates`."""
    picks = rng.integers(len(templates), size=len(concepts))
    return [templates[t].format(c) for t, c in zip(picks.tolist(), concepts)]


def build_texts(caption: str, concepts: Sequence[str], k: int, rng: np.random.Generator,
                templates: Sequence[str] = IMAGENET_TEMPLATES) -> list[str]:
    """`[caption] + k prompts`: the first k concepts templated, padded with the caption."""
    prompts = wrap_in_templates(list(concepts)[:k], rng, templates)
    return [caption, *prompts, *[caption] * (k - len(prompts))]


# --------------------------------------------------------------------------------------------
# concept archives


class Archive(NamedTuple):
    concepts: tuple[str, ...]  # [A] sorted by score, descending
    scores: np.ndarray  # [A] float32
    clusters: np.ndarray  # [A] int32


EMPTY_ARCHIVE = Archive((), np.zeros(0, np.float32), np.zeros(0, np.int32))


class ConceptLists(Mapping):
    """key -> tuple of concept strings, stored flat: a `KeyIndex` of the N keys, CSR offsets
    int64 [N + 1] into concept ids int32 [M] over a table of the distinct concept strings.

    Flat numpy arrays rather than millions of small Python objects: DataLoader workers share them
    after fork without copying (Python refcounts would touch, and so copy, every object's page).
    """

    def __init__(self, keys: Strings, names: Sequence[str], offsets: np.ndarray, ids: np.ndarray,
                 what: str = "concept lists") -> None:
        self.index = KeyIndex(keys, what=what)  # key -> row
        self.names = tuple(names)  # the distinct concept strings (a vocabulary, not per key)
        self.offsets = read_only(np.array(offsets, np.int64))  # [N + 1]
        self.ids = read_only(np.array(ids, np.int32))  # [M] into names
        if len(self.offsets) != len(self.index) + 1 or self.offsets[-1] != len(self.ids):
            raise ValueError(f"{what}: {len(self.index)} keys but {len(self.offsets) - 1} rows of "
                             f"{len(self.ids)} entries")

    def row(self, key: str) -> int:
        """The row of `key`, or -1."""
        return self.index.find(key)

    def concepts(self, row: int) -> tuple[str, ...]:
        return tuple(self.names[j] for j in self.ids[self.offsets[row]: self.offsets[row + 1]].tolist())

    def __getitem__(self, key: str) -> tuple[str, ...]:
        row = self.row(key)
        if row < 0:
            raise KeyError(key)
        return self.concepts(row)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.row(key) >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.offsets.nbytes + self.ids.nbytes


class ConceptArchives(ConceptLists):
    """key -> Archive (concepts, scores float32, clusters int32), stored flat as `ConceptLists`
    plus the scores [M] and clusters [M] in the same CSR layout.

    `num_missing` counts the keys given at load time that have no archive (they get the empty one).
    """

    def __init__(self, keys: Strings, names: Sequence[str], offsets: np.ndarray,
                 ids: np.ndarray, scores: np.ndarray, clusters: np.ndarray) -> None:
        super().__init__(keys, names, offsets, ids, what="concept archives")
        self.scores = read_only(np.array(scores, np.float32))  # [M]
        self.clusters = read_only(np.array(clusters, np.int32))  # [M]
        self.num_missing = 0

    def archive(self, row: int) -> Archive:
        lo, hi = self.offsets[row], self.offsets[row + 1]
        return Archive(self.concepts(row), self.scores[lo:hi], self.clusters[lo:hi])

    def __getitem__(self, key: str) -> Archive:  # type: ignore[override]
        row = self.row(key)
        if row < 0:
            raise KeyError(key)
        return self.archive(row)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        row = self.row(key)
        return default if row < 0 else self.archive(row)

    def lookup(self, key: str) -> Archive:
        """The archive of `key`, or the empty archive when there is none."""
        return self.get(key, EMPTY_ARCHIVE)

    def count_missing(self, keys: Strings) -> int:
        """How many of `keys` have no archive (recorded in `num_missing` and logged)."""
        found = self.index.find_many(keys)
        self.num_missing = int((found < 0).sum())
        if self.num_missing:
            log.warning("%d of %d keys have no concept archive: their prompts are the caption",
                        self.num_missing, len(found))
        return self.num_missing

    @property
    def nbytes(self) -> int:
        return super().nbytes + self.scores.nbytes + self.clusters.nbytes


def load_archives(folder: Path | str, keys: Strings | None = None) -> ConceptArchives:
    """Read the `curate` stage's parquet shards (key, concepts, scores, clusters) into flat arrays.

    With `keys` (the manifest's: a list, a pandas column or an arrow array), the keys without an
    archive are counted (`num_missing`).
    """
    table = read_archives(folder, columns=["key", "concepts", "scores", "clusters"])
    lists = {c: table.column(c).combine_chunks() for c in ("concepts", "scores", "clusters")}
    offsets = {c: a.offsets.to_numpy().astype(np.int64) - a.offsets[0].as_py() for c, a in lists.items()}
    if not (np.array_equal(offsets["concepts"], offsets["scores"])
            and np.array_equal(offsets["concepts"], offsets["clusters"])):
        raise ValueError(f"{folder}: concepts, scores and clusters differ in length for some rows")
    scores = lists["scores"].flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    clusters = lists["clusters"].flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    bad = np.flatnonzero(~np.isfinite(scores) | (clusters < 0))
    if len(bad):  # checked once here, not in the middle of training (sample_cluster refuses them too)
        row = int(np.searchsorted(offsets["scores"], bad[0], side="right") - 1)
        raise ValueError(f"{folder}: archive of key {table.column('key')[row].as_py()!r} has score "
                         f"{scores[bad[0]]} / cluster {clusters[bad[0]]} ({len(bad)} entries with a non-finite "
                         f"score or a negative cluster id); re-run the `curate` stage")
    encoded = pc.dictionary_encode(lists["concepts"].flatten())
    archives = ConceptArchives(
        keys=table.column("key"),
        names=encoded.dictionary.to_pylist(),
        offsets=offsets["concepts"],
        ids=encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32),
        scores=scores,
        clusters=clusters,
    )
    if keys is not None:
        archives.count_missing(keys)
    log.info("loaded %d concept archives (%d entries, %d distinct concepts) from %s",
             len(archives), len(archives.ids), len(archives.names), folder)
    return archives


# --------------------------------------------------------------------------------------------
# concept pickers: (key, caption, k, rng) -> at most k concepts


class ConceptPicker(Protocol):
    def __call__(self, key: str, caption: str, k: int, rng: np.random.Generator) -> Sequence[str]: ...


@dataclass(frozen=True)
class CaptionPicker:
    """GroupViT baseline: k of the caption's own vocabulary concepts, without replacement."""

    vocab: Vocabulary

    def __call__(self, key: str, caption: str, k: int, rng: np.random.Generator) -> Sequence[str]:
        return sample_uniform(self.vocab.extract(caption), k, rng)


@dataclass(frozen=True)
class ArchivePicker:
    """CoCu and its ablations: k concepts of the pair's curated archive, by `method`."""

    archives: Mapping[str, Archive]
    method: Literal["cluster", "topk", "uniform"]

    def __call__(self, key: str, caption: str, k: int, rng: np.random.Generator) -> Sequence[str]:
        concepts, scores, clusters = self.archives.get(key, EMPTY_ARCHIVE)
        if self.method == "cluster":
            return sample_cluster(concepts, scores, clusters, k, rng)
        if self.method == "topk":
            return sample_topk(concepts, scores, k)
        return sample_uniform(concepts, k, rng)


@dataclass(frozen=True)
class OraclePicker:
    """UPPER BOUND, synthetic world only: k of the concepts truly present, without replacement."""

    present: Mapping[str, tuple[str, ...]]

    def __call__(self, key: str, caption: str, k: int, rng: np.random.Generator) -> Sequence[str]:
        present = self.present.get(key)
        if present is None:
            raise KeyError(f"oracle: no ground truth for key {key!r}")
        return sample_uniform(present, k, rng)


def precision_archive(caption: Sequence[str], missed: Sequence[str], absent: Sequence[str], size: int,
                      precision: float, rng: np.random.Generator) -> tuple[str, ...]:
    """A synthetic archive for the curation-precision ablation: the caption's concepts plus up to
    `size - len(caption)` new ones, a fraction `precision` of them drawn from the concepts the caption
    missed (correct) and the rest from the absent ones (wrong).

    The precision is kept (up to rounding) before the size: when fewer missed concepts exist than the
    size asks for, fewer wrong ones are added too, so the archive is smaller than CoCu's there.
    """
    new = max(0, size - len(caption))
    n_correct = min(len(missed), int(round(precision * new)))
    n_wrong = new - n_correct if precision == 0 else int(round(n_correct * (1 - precision) / precision))
    n_wrong = min(len(absent), n_wrong)
    correct = [missed[i] for i in rng.permutation(len(missed))[:n_correct]]
    wrong = [absent[i] for i in rng.permutation(len(absent))[:n_wrong]]
    return (*caption, *correct, *wrong)


@dataclass(frozen=True)
class PrecisionPicker:
    """ABLATION, synthetic world only: k concepts, uniformly without replacement, of a synthetic
    archive of CoCu's size whose new concepts are correct with probability `precision`
    (`precision_archive`; fixed per key, the same in every epoch and for every training seed)."""

    archives: Mapping[str, tuple[str, ...]]

    def __call__(self, key: str, caption: str, k: int, rng: np.random.Generator) -> Sequence[str]:
        return sample_uniform(self.archives.get(key, ()), k, rng)


def build_precision_archives(precision: float, ground_truth: Any, caption_concepts: Mapping[str, Sequence[str]],
                             sizes: Mapping[str, int], concepts: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """key -> `precision_archive(...)` for every key of the ground truth; `sizes` are CoCu's archive
    sizes (a key without an archive gets the caption's concepts only). Deterministic per key."""
    present = _present_concepts(ground_truth)
    out = {}
    for key, truth in present.items():
        caption = list(dict.fromkeys(caption_concepts.get(key, ())))
        truth_set = set(truth)
        missed = [c for c in truth if c not in caption]
        absent = [c for c in concepts if c not in truth_set and c not in caption]
        rng = np.random.default_rng([zlib.crc32(key.encode()), int(round(precision * 1000))])
        out[key] = precision_archive(caption, missed, absent, sizes.get(key, len(caption)), precision, rng)
    return out


@dataclass(frozen=True)
class PromptSource:
    """`source(key, caption, rng) -> [caption] + num_prompts prompts` for one pair."""

    variant: str
    picker: ConceptPicker
    num_prompts: int = 3  # K
    templates: tuple[str, ...] = IMAGENET_TEMPLATES
    summary: Mapping[str, float] = field(default_factory=dict)  # what the source measured about itself

    def __call__(self, key: str, caption: str, rng: np.random.Generator) -> list[str]:
        concepts = self.picker(key, caption, self.num_prompts, rng) if self.num_prompts else ()
        return build_texts(caption, concepts, self.num_prompts, rng, self.templates)


def make_prompt_source(
    variant: Variant,
    vocab: Vocabulary | None = None,
    archives: Mapping[str, Archive] | None = None,
    ground_truth: Any = None,
    num_prompts: int = 3,
    templates: Sequence[str] = IMAGENET_TEMPLATES,
    caption_concepts: Mapping[str, Sequence[str]] | None = None,
) -> PromptSource:
    """The prompt source of a pre-training variant (table in the module docstring).

    Args:
        vocab: the concept vocabulary (`baseline`).
        archives: `load_archives(...)` output (`cocu`, `ranking`, `expansion`).
        ground_truth: `cocu.data.manifest.read_ground_truth(...)` (a frame with `key`,
            `gt_present`) or a mapping key -> present concepts; `oracle` only, refused otherwise.
        num_prompts: K; 0 gives `[caption]` only.
        caption_concepts: key -> the caption's vocabulary concepts (`precision<P>` only).
    """
    check_variant(variant)
    if ground_truth is not None and not reads_ground_truth(variant):
        raise ValueError(f"variant {variant!r} must not see the ground truth; only `oracle` and the "
                         f"precision ablations read it")
    if num_prompts < 0:
        raise ValueError(f"num_prompts must be >= 0, got {num_prompts}")
    picker: ConceptPicker
    if variant == "baseline":
        if vocab is None:
            raise ValueError("variant 'baseline' needs the concept vocabulary (vocab=...)")
        picker = CaptionPicker(vocab)
    elif variant in ARCHIVE_METHODS:
        if archives is None:
            raise ValueError(f"variant {variant!r} needs the concept archives (archives=load_archives(...))")
        picker = ArchivePicker(archives, ARCHIVE_METHODS[variant])
    elif variant == "oracle":
        if ground_truth is None:
            raise ValueError("variant 'oracle' (an upper bound) needs "
                             "ground_truth=read_ground_truth(manifest); "
                             "only the synthetic world has it")
        picker = OraclePicker(_present_concepts(ground_truth))
        log.warning("prompt source 'oracle': ground-truth concepts as prompts (upper bound, not a method)")
    else:
        precision = variant_precision(variant)
        if ground_truth is None or archives is None or caption_concepts is None:
            raise ValueError(f"variant {variant!r} (a curation-precision ablation) needs ground_truth=, "
                             "archives= (CoCu's, for the archive sizes) and caption_concepts=")
        present = _present_concepts(ground_truth)
        names = sorted({c for v in present.values() for c in v})
        sizes = {k: len(archives[k].concepts) for k in archives}
        built = build_precision_archives(precision, present, caption_concepts, sizes, names)
        picker = PrecisionPicker(built)
        summary = precision_summary(built, present, caption_concepts, sizes)
        log.warning("prompt source %r: ground-truth concepts mixed with wrong ones at precision %.2f (ablation); "
                    "realised %s", variant, precision, summary)
        return PromptSource(variant, picker, num_prompts, tuple(templates), summary)
    return PromptSource(variant, picker, num_prompts, tuple(templates))


def precision_summary(built: Mapping[str, Sequence[str]], present: Mapping[str, Sequence[str]],
                      caption_concepts: Mapping[str, Sequence[str]], sizes: Mapping[str, int]) -> dict[str, float]:
    """Realised precision of the new (non-caption) concepts of the ablation's archives, pooled over
    keys, and their mean size next to CoCu's (what the dose-response figure plots)."""
    new = correct = 0
    for key, archive in built.items():
        caption = set(caption_concepts.get(key, ()))
        added = [c for c in archive if c not in caption]
        new += len(added)
        correct += sum(c in set(present.get(key, ())) for c in added)
    n = max(1, len(built))
    return {"archive_precision": correct / new if new else float("nan"),
            "archive_size": sum(len(a) for a in built.values()) / n,
            "cocu_archive_size": sum(sizes.get(k, 0) for k in built) / n}


def _present_concepts(ground_truth: Any) -> ConceptLists:
    """The ground truth's present concepts per key, flat (`ConceptLists`)."""
    if isinstance(ground_truth, Mapping):
        keys, lists = [str(k) for k in ground_truth], [list(v) for v in ground_truth.values()]
    elif hasattr(ground_truth, "columns") and {"key", "gt_present"} <= set(ground_truth.columns):
        keys, lists = ground_truth["key"], [list(v) for v in ground_truth["gt_present"]]
    else:
        raise TypeError("ground_truth must be read_ground_truth(...)'s frame or a mapping key -> concepts")
    concepts = pa.array(lists, type=pa.list_(pa.string()))
    encoded = pc.dictionary_encode(concepts.flatten())
    offsets = concepts.offsets.to_numpy().astype(np.int64)
    return ConceptLists(keys, encoded.dictionary.to_pylist(), offsets - offsets[0],
                        encoded.indices.to_numpy(zero_copy_only=False), what="ground truth")
