"""The synthetic world (docs/world.md): seeded image-caption pairs with hidden ground truth.

Each sample is a 64x64 (configurable) scene of 2-6 concepts: textured stuff bands (sky, grass,
water, ...) and occluding things (ball, car, kite, ...), with a per-pixel label map and a
caption that names only the salient concepts. The caption process is the *semantic gap* CoCu
repairs: a concept's chance to be named is sigmoid(offset + SLOPE * saliency), saliency grows
with visible area and centrality (stuff is background and rarely named), and the offset is solved
once per world so that the expected fraction of present concepts a caption names (pooled over
samples, see `mention_fraction`) equals `WorldConfig.mention_rate`. Every caption names at least
one concept (the most salient, when the draw names none), which the calibration accounts for.

Determinism: sample i of a stream uses `np.random.default_rng([seed, stable_hash(stream), i])`,
so any slice is reproducible on its own (sharded, parallel, resumed generation agree).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator, Literal

import numpy as np

from cocu.config import WorldConfig
from cocu.data import scene
from cocu.data.captions import Mention, plural, write_caption
from cocu.data.render import THINGS


@dataclass(frozen=True)
class ConceptSpec:
    name: str  # canonical lower-case name, may be multi-word
    kind: Literal["thing", "stuff"]
    synonyms: tuple[str, ...]  # other lower-case names captions use for it
    under_named: bool = False  # captions leave it out whatever its saliency (`world.naming_bias`)


_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sky": (), "grass": ("lawn", "meadow"), "sand": ("beach",), "water": ("sea", "lake"),
    "wall": ("brick wall",), "road": ("street", "asphalt"), "snow": (), "floor": ("wooden floor", "parquet"),
    "ball": ("football",), "apple": (), "clock": ("timepiece",), "box": ("crate", "carton"),
    "window": ("windowpane",), "tent": ("camping tent",), "traffic cone": ("cone",), "kite": (),
    "donut": ("doughnut",), "tire": ("tyre",), "banana": (), "starfish": (), "fish": ("goldfish",),
    "car": ("automobile",), "boat": ("sailboat", "sailing boat"), "flower": ("blossom",),
}
# Concepts that web captions take for granted: backdrop surfaces and clutter. A caption writer names
# "a car", rarely "the road under it"; "a house", rarely "its windows". Half of the stuff and a quarter
# of the things; their mention logit is lowered by `world.naming_bias` at any saliency.
UNDER_NAMED = frozenset({"sky", "wall", "road", "floor", "window", "tire", "box", "traffic cone"})
CONCEPTS: tuple[ConceptSpec, ...] = tuple(
    ConceptSpec(name, "stuff" if i < scene.N_STUFF else "thing", _SYNONYMS[name], name in UNDER_NAMED)
    for i, name in enumerate(scene.CONCEPT_ORDER)
)
_UNDER = np.array([c.under_named for c in CONCEPTS], dtype=np.float64)  # [K] 1 = under-named
_NAMES = np.array([c.name for c in CONCEPTS], dtype=object)
_CANON: dict[str, str] = {
    form: c.name for c in CONCEPTS for word in (c.name, *c.synonyms) for form in (word, plural(word))
}


def concept_names() -> list[str]:
    """Canonical names in class-id order."""
    return [c.name for c in CONCEPTS]


def vocabulary() -> list[str]:
    """Every canonical name and synonym (lower-case, unique, sorted): the synthetic concept list file."""
    return sorted({w for c in CONCEPTS for w in (c.name, *c.synonyms)})


def canonical(word: str) -> str:
    """Synonym, name or plural of either -> canonical concept name (KeyError if none)."""
    key = " ".join(word.lower().split())
    if key not in _CANON:
        raise KeyError(f"{word!r} is not a concept name or synonym of the synthetic world")
    return _CANON[key]


@dataclass(frozen=True)
class WorldSample:
    image: np.ndarray  # [H, W, 3] uint8
    label: np.ndarray  # [H, W] uint8 index into CONCEPTS of the visible concept at each pixel
    present: tuple[str, ...]  # canonical names of visible concepts, most salient first
    mentioned: tuple[str, ...]  # canonical names the caption names (subset of present), caption order
    caption: str


# --------------------------------------------------------------------------------------------
# saliency and the mention process

SLOPE = 4.0  # steepness of the mention probability in saliency
_STUFF_SALIENCY = (0.7, 0.8)  # stuff: base + weight * area fraction (background is rarely named)
_CALIBRATION_SCENES = 1000  # the solved rate is within 0.002 of the target (checked on 4000 held-out scenes)


def stable_hash(stream: str) -> int:
    """A process-independent 32-bit hash of a stream name (Python's hash() is salted)."""
    return zlib.crc32(stream.encode("utf-8"))


@lru_cache(maxsize=16)
def _pixel_coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    g = (np.arange(size) + 0.5) / size
    return np.repeat(g, size), np.tile(g, size)  # [H*W] y, x of each pixel (row-major)


def saliency(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Present concept ids, most salient first, and their saliency.

    Things: sqrt(area / 5% of the image) + centrality (1 at the centre, 0 in a corner);
    stuff: 0.7 + 0.8 * area. Area and centroid are of the visible pixels.
    """
    size = label.shape[0]
    flat = label.ravel()
    ys, xs = _pixel_coords(size)
    counts = np.bincount(flat, minlength=len(CONCEPTS))  # [K]
    ids = np.flatnonzero(counts)
    n = counts[ids].astype(np.float64)
    cy = np.bincount(flat, weights=ys, minlength=len(CONCEPTS))[ids] / n
    cx = np.bincount(flat, weights=xs, minlength=len(CONCEPTS))[ids] / n
    area = n / flat.size
    centrality = 1.0 - np.hypot(cx - 0.5, cy - 0.5) / np.sqrt(0.5)
    sal = np.where(ids >= scene.N_STUFF, np.sqrt(area / 0.05) + centrality,
                   _STUFF_SALIENCY[0] + _STUFF_SALIENCY[1] * area)
    order = np.argsort(-sal, kind="stable")
    return ids[order], sal[order]


def _check(cfg: WorldConfig) -> None:
    if cfg.image_size < 16:
        raise ValueError(f"world.image_size must be >= 16, got {cfg.image_size}")
    max_distinct = 3 + len(THINGS)
    if not 1 <= cfg.min_concepts <= cfg.max_concepts <= max_distinct:
        raise ValueError(f"world: need 1 <= min_concepts <= max_concepts <= {max_distinct}, "
                         f"got {cfg.min_concepts}, {cfg.max_concepts}")


@lru_cache(maxsize=8)
def _calibration_set(size: int, lo: int, hi: int, thing_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed set of scenes (layout only): flat [M] saliencies, [M] scene index, [M] concept ids."""
    rng = np.random.default_rng([0xCA1B, size, lo, hi])  # the same scenes for every thing_scale
    values, owner, concepts = [], [], []
    for k in range(_CALIBRATION_SCENES):
        layout = scene.layout_scene(size, int(rng.integers(lo, hi + 1)), rng, thing_scale)
        ids, sal = saliency(layout.label)
        values.append(sal)
        owner.append(np.full(len(sal), k))
        concepts.append(ids)
    return np.concatenate(values), np.concatenate(owner), np.concatenate(concepts)


def mention_logits(offset: float, sal: np.ndarray, ids: np.ndarray, naming_bias: float) -> np.ndarray:
    """Mention logit of present concepts ids [P] with saliency [P]: offset + SLOPE * saliency,
    minus `naming_bias` for the under-named concepts."""
    return offset + SLOPE * sal - naming_bias * _UNDER[ids]


def _expected_fraction(offset: float, sal: np.ndarray, owner: np.ndarray, ids: np.ndarray,
                       naming_bias: float) -> float:
    """E[named] / E[present] with the at-least-one rule: E[named | scene] = sum p + prod(1 - p)."""
    p = 1.0 / (1.0 + np.exp(-mention_logits(offset, sal, ids, naming_bias)))
    none = np.exp(np.bincount(owner, weights=np.log1p(-np.minimum(p, 1 - 1e-12))))  # [scenes]
    return float((p.sum() + none.sum()) / len(sal))


@lru_cache(maxsize=32)
def mention_offset(mention_rate: float, size: int, min_concepts: int, max_concepts: int,
                   naming_bias: float = 0.0, thing_scale: float = 1.0) -> float:
    """The offset that makes the expected mention fraction equal `mention_rate` (bisection)."""
    # saliency statistics are resolution-free above 64 px (areas and centroids are fractions)
    sal, owner, ids = _calibration_set(min(size, 64), min_concepts, max_concepts, thing_scale)
    floor = (owner.max() + 1) / len(sal)  # one concept named per scene
    if not floor + 0.01 <= mention_rate <= 0.99:
        raise ValueError(f"world.mention_rate {mention_rate} is not reachable: every caption names at least "
                         f"one concept of ~{1 / floor:.1f} present, so the rate must be >= "
                         f"{floor + 0.01:.2f} (and <= 0.99)")
    lo, hi = -40.0, 40.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _expected_fraction(mid, sal, owner, ids, naming_bias) < mention_rate else (lo, mid)
    return 0.5 * (lo + hi)


def mention_fraction(samples: Iterable[WorldSample]) -> float:
    """Pooled fraction of present concepts that captions name: sum |mentioned| / sum |present|."""
    named = present = 0
    for s in samples:
        named += len(s.mentioned)
        present += len(s.present)
    return named / max(present, 1)


# --------------------------------------------------------------------------------------------
# samples


def _mention(cid: int, area: float, layout: scene.Layout) -> Mention:
    spec = CONCEPTS[cid]
    if spec.kind == "stuff":
        return Mention(spec.name, "stuff", spec.synonyms)
    count = layout.counts[cid]
    per_instance = area / count
    size = "small" if per_instance < 0.012 else "large" if per_instance > 0.06 else ""
    colour = THINGS[cid - scene.N_STUFF].colours[layout.colours[cid]][0]
    return Mention(spec.name, "thing", spec.synonyms, count, colour, size)


def render_sample(cfg: WorldConfig, rng: np.random.Generator) -> WorldSample:
    """One scene, its label map, and a caption that names its salient concepts."""
    _check(cfg)
    size = cfg.image_size
    layout = scene.layout_scene(size, int(rng.integers(cfg.min_concepts, cfg.max_concepts + 1)), rng, cfg.thing_scale)
    image = scene.paint_scene(layout, rng)
    ids, sal = saliency(layout.label)  # [P] most salient first
    offset = mention_offset(cfg.mention_rate, size, cfg.min_concepts, cfg.max_concepts, cfg.naming_bias,
                            cfg.thing_scale)
    named = rng.random(len(ids)) < 1.0 / (1.0 + np.exp(-mention_logits(offset, sal, ids, cfg.naming_bias)))
    named[0] |= not named.any()
    counts = np.bincount(layout.label.ravel(), minlength=len(CONCEPTS))
    mentions = [_mention(int(c), counts[c] / layout.label.size, layout) for c in ids[named]]
    caption, order = write_caption([m for m in mentions if m.kind == "thing"],
                                   [m for m in mentions if m.kind == "stuff"], rng)
    return WorldSample(image, layout.label, tuple(_NAMES[ids]), order, caption)


def generate(cfg: WorldConfig, n: int, stream: str, start: int = 0) -> Iterator[WorldSample]:
    """Samples start .. start + n - 1 of a named stream ("pairs", "teacher", a benchmark name)."""
    key = stable_hash(stream)
    for i in range(start, start + n):
        yield render_sample(cfg, np.random.default_rng([cfg.seed, key, i]))


# --------------------------------------------------------------------------------------------
# segmentation benchmarks


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    class_names: tuple[str, ...]  # in label-id order; "background" first where the benchmark has one
    has_background: bool


_STUFF_NAMES = tuple(c.name for c in CONCEPTS if c.kind == "stuff")
_THING_NAMES = tuple(c.name for c in CONCEPTS if c.kind == "thing")
BENCHMARKS: dict[str, BenchmarkSpec] = {
    # like PASCAL VOC: things + background, every stuff pixel is background
    "synth_things": BenchmarkSpec("synth_things", ("background", *_THING_NAMES), True),
    # like COCO-Stuff / Context stuff classes: thing pixels are ignored
    "synth_stuff": BenchmarkSpec("synth_stuff", _STUFF_NAMES, False),
    # like ADE20K: every class, no background
    "synth_all": BenchmarkSpec("synth_all", tuple(concept_names()), False),
}


@lru_cache(maxsize=None)
def _lookup(spec: BenchmarkSpec) -> np.ndarray:
    """[256] uint8: concept id -> benchmark label id (255 = ignore)."""
    lut = np.full(256, 255, np.uint8)
    index = {name: i for i, name in enumerate(spec.class_names)}
    for cid, c in enumerate(CONCEPTS):
        if c.name in index:
            lut[cid] = index[c.name]
        elif spec.has_background:
            lut[cid] = index["background"]
    return lut


def benchmark_label(sample: WorldSample, spec: BenchmarkSpec) -> np.ndarray:
    """[H, W] uint8 label map of a sample under a benchmark's classes (255 = ignore)."""
    return _lookup(spec)[sample.label]
