"""Scene composition of the synthetic world: which concepts, where, in which order, and painting.

`layout_scene` decides the geometry (stuff bands, thing instances, occlusion order) and the
per-pixel label map; `paint_scene` turns a layout into an RGB image. Label ids are indices into
`CONCEPT_ORDER` (stuff first, then things), which `cocu.data.world.CONCEPTS` follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cocu.data.render import AFFINITY, DARK, STUFF, THINGS, WHITE, fine_noise

N_STUFF = len(STUFF)
CONCEPT_ORDER: tuple[str, ...] = tuple(s.name for s in STUFF) + tuple(t.name for t in THINGS)
NUM_CONCEPTS = len(CONCEPT_ORDER)
_TOP = [i for i, s in enumerate(STUFF) if s.role == "top"]
_GROUND = [i for i, s in enumerate(STUFF) if s.role == "ground"]
# ground stuff weights given the top band (sky: outdoor scenes; wall: mostly indoor)
_GROUND_GIVEN_TOP = {
    "sky": {"grass": 3.0, "sand": 2.0, "water": 3.0, "road": 2.0, "snow": 1.5, "floor": 0.3},
    "wall": {"grass": 1.0, "sand": 0.4, "water": 0.3, "road": 1.5, "snow": 0.4, "floor": 4.0},
}
_ZONES = {"air": (0.08, 0.45), "ground": (0.45, 0.9), "any": (0.12, 0.88)}  # vertical range of thing centres
_SENSOR_NOISE = 0.025 * 255.0  # std of the per-pixel noise, in 8-bit levels
_FILL_WEIGHT = np.array([0.3 if s.name == "sky" else 1.0 for s in STUFF])
_AFFINE = np.array([[t.name in AFFINITY[s.name] for t in THINGS] for s in STUFF], np.float64)  # [S, T]


@dataclass
class Instance:
    concept: int  # label id
    box: tuple[int, int, int, int]  # rows i0:i1, cols j0:j1 of the crop
    mask: np.ndarray  # [h, w] bool
    part: np.ndarray  # [h, w] int8 palette index
    v: np.ndarray  # [h, w] local vertical coordinate (for shading)
    depth: float


@dataclass
class Layout:
    size: int
    stuff: list[int]  # stuff label ids still in the scene, top band first
    stuff_map: np.ndarray  # [H, W] int: stuff label id per pixel (before things)
    label: np.ndarray  # [H, W] uint8 label id of the top-most visible concept
    instances: list[Instance]  # painter's order: later ones occlude earlier ones
    colours: dict[int, int]  # thing label id -> colour variant index
    counts: dict[int, int]  # thing label id -> number of clearly visible instances


def min_visible_pixels(size: int) -> int:
    """A concept counts as present only with at least this many visible pixels."""
    return max(8, round(0.003 * size * size))


@lru_cache(maxsize=16)
def _grid(size: int) -> np.ndarray:
    return ((np.arange(size, dtype=np.float32) + 0.5) / size)  # [S] pixel centres in [0, 1)


def _choose_concepts(n_concepts: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Stuff ids top to bottom, and distinct thing indices (into THINGS)."""
    n_stuff = 1 + int(np.searchsorted([0.35, 0.8], rng.random()))  # 1, 2 or 3 bands: p = .35, .45, .2
    n_stuff = 1 if n_concepts <= 2 else min(n_concepts - 1, n_stuff)
    if n_stuff == 1:
        stuff = _weighted_sample(_FILL_WEIGHT, 1, rng)  # one stuff fills the frame (rarely the sky)
    else:
        top = _TOP[0] if rng.random() < 0.7 else _TOP[1]
        w = np.array([_GROUND_GIVEN_TOP[STUFF[top].name][STUFF[g].name] for g in _GROUND])
        stuff = [top, *(_GROUND[k] for k in _weighted_sample(w, n_stuff - 1, rng))]
    n_things = max(0, n_concepts - n_stuff)
    w = 1.0 + 3.0 * _AFFINE[stuff].max(0)  # [T]
    return stuff, _weighted_sample(w, n_things, rng)


def _weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k distinct indices drawn with probability proportional to weight (Efraimidis-Spirakis keys)."""
    keys = rng.random(len(weights)) ** (1.0 / weights)
    return np.argsort(-keys, kind="stable")[:k].tolist()


def _bands(stuff: list[int], size: int, rng: np.random.Generator) -> np.ndarray:
    """[H, W] stuff label id per pixel: horizontal bands with wavy, slightly tilted borders."""
    x, y = _grid(size)[None, :], _grid(size)[:, None]
    if len(stuff) == 1:
        return np.full((size, size), stuff[0], np.int64)
    if len(stuff) == 2:
        heights = rng.uniform(0.22, 0.5, 1)
    else:
        heights = np.cumsum(rng.uniform([0.2, 0.2], [0.38, 0.34]))
    slot = np.zeros((size, size), np.int64)
    for h in heights:
        wave = rng.uniform(0.0, 0.04) * np.sin(2 * np.pi * (rng.uniform(0.5, 2.0) * x + rng.random()))
        border = h + wave + rng.uniform(-0.08, 0.08) * (x - 0.5)  # [1, W]
        slot += y > border
    return np.asarray(stuff)[slot]


def _place(concept: int, style_idx: int, size: int, rng: np.random.Generator, thing_scale: float = 1.0) -> Instance:
    style = THINGS[style_idx]
    r = float(np.exp(rng.uniform(np.log(0.07), np.log(0.25)))) * style.scale * thing_scale
    cx = rng.uniform(0.12, 0.88)
    cy = rng.uniform(*_ZONES[style.zone])
    theta = np.deg2rad(rng.uniform(-style.max_rotation, style.max_rotation))
    aspect = rng.uniform(0.85, 1.15)
    mirror = -1.0 if (style.mirror and rng.random() < 0.5) else 1.0
    ext = 1.95 * r * max(aspect, 1.0)
    i0, i1 = max(0, int((cy - ext) * size)), min(size, int(np.ceil((cy + ext) * size)))
    j0, j1 = max(0, int((cx - ext) * size)), min(size, int(np.ceil((cx + ext) * size)))
    g = _grid(size)
    dx, dy = g[j0:j1] - cx, g[i0:i1] - cy  # [w], [h]
    c, s = np.cos(theta), np.sin(theta)
    ku, kv = mirror / r, 1.0 / (r * aspect)
    u = (dx * (c * ku))[None, :] + (dy * (s * ku))[:, None]  # [h, w] rotate, scale, mirror
    v = (dy * (c * kv))[:, None] - (dx * (s * kv))[None, :]
    mask, part = style.shape(u, v)
    return Instance(concept, (i0, i1, j0, j1), mask, part, v, cy + rng.uniform(0.0, 0.1))


def _compose(stuff_map: np.ndarray, instances: list[Instance]) -> tuple[np.ndarray, np.ndarray]:
    label = stuff_map.astype(np.uint8)  # [H, W]
    owner = np.full(stuff_map.shape, -1, np.int16)  # [H, W] instance index, -1 = stuff
    for k, inst in enumerate(instances):
        i0, i1, j0, j1 = inst.box
        np.copyto(label[i0:i1, j0:j1], np.uint8(inst.concept), where=inst.mask)
        np.copyto(owner[i0:i1, j0:j1], np.int16(k), where=inst.mask)
    return label, owner


def layout_scene(size: int, n_concepts: int, rng: np.random.Generator, thing_scale: float = 1.0) -> Layout:
    """Geometry and label map of one scene with `n_concepts` distinct concepts (before visibility);
    `thing_scale` multiplies the radius of every thing."""
    stuff, things = _choose_concepts(n_concepts, rng)
    stuff_map = _bands(stuff, size, rng)
    colours, instances = {}, []
    for t in things:
        cid = N_STUFF + t
        colours[cid] = int(rng.integers(len(THINGS[t].colours)))
        n = 1 + int(np.searchsorted([0.75, 0.93], rng.random()))
        instances += [_place(cid, t, size, rng, thing_scale) for _ in range(n)]
    instances.sort(key=lambda inst: inst.depth)
    thr = min_visible_pixels(size)
    label, owner = _compose(stuff_map, instances)
    visible = np.bincount(label.ravel(), minlength=NUM_CONCEPTS)  # [K]
    hidden = {c for c in colours if visible[c] < thr}
    if hidden:  # an occluded thing is removed from the scene (dropping one only uncovers others)
        instances = [inst for inst in instances if inst.concept not in hidden]
        label, owner = _compose(stuff_map, instances)
        visible = np.bincount(label.ravel(), minlength=NUM_CONCEPTS)
    kept_stuff = [s for s in stuff if visible[s] >= thr] or [max(stuff, key=lambda s: visible[s])]
    for s in stuff:  # a stuff band hidden behind things merges into the nearest kept band
        if s not in kept_stuff:
            target = min(kept_stuff, key=lambda k: abs(stuff.index(k) - stuff.index(s)))
            stuff_map[stuff_map == s] = target
            label[label == s] = target
    per_instance = np.bincount(owner.ravel() + 1, minlength=len(instances) + 1)[1:]  # [n_instances]
    counts: dict[int, int] = {}
    for inst, px in zip(instances, per_instance):
        counts[inst.concept] = counts.get(inst.concept, 0) + int(px >= thr)
    counts = {c: max(1, n) for c, n in counts.items()}
    return Layout(size, kept_stuff, stuff_map, label, instances, {c: colours[c] for c in counts}, counts)


def paint_scene(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """[H, W, 3] uint8 image of a layout: textured stuff, then things in painter's order."""
    size = layout.size
    g = _grid(size)
    img = np.empty((size, size, 3), np.float32)
    if len(layout.stuff) == 1:  # one stuff fills the frame
        img[:] = STUFF[layout.stuff[0]].texture(g[None, :], g[:, None], (0.0, 1.0), rng)
    else:  # bands: texture the rows a band spans, keep its pixels
        for sid in layout.stuff:
            region = layout.stuff_map == sid  # [H, W]
            rows = np.flatnonzero(region.any(1))
            r0, r1 = rows[0], rows[-1] + 1
            band = (float(g[r0]), float(g[r1 - 1]))
            tex = STUFF[sid].texture(g[None, :], g[r0:r1, None], band, rng)  # [h, W, 3]
            np.copyto(img[r0:r1], tex, where=region[r0:r1, :, None])
    if layout.instances:  # things in palette-index space: one gather for all instances
        n = len(layout.instances)
        styles = [THINGS[inst.concept - N_STUFF] for inst in layout.instances]
        main = np.array([st.colours[layout.colours[i.concept]][1] for st, i in zip(styles, layout.instances)])
        main = main * rng.uniform(0.85, 1.12, (n, 1)) + rng.normal(0.0, 0.035, (n, 3))  # [n, 3] colour jitter
        second = np.array([st.second for st in styles]) * rng.uniform(0.9, 1.1, (n, 1))  # [n, 3]
        fixed = np.broadcast_to(np.array([DARK, WHITE]), (n, 2, 3))
        palette = np.concatenate([main[:, None], second[:, None], fixed], 1).reshape(4 * n, 3)
        palette = palette.astype(np.float32)  # [4 n, 3]: main, second, dark, white per instance
        index = np.full((size, size), -1, np.int16)  # [H, W] palette row, -1 = stuff
        v = np.zeros((size, size), np.float32)  # [H, W] local vertical coordinate of the thing
        for k, inst in enumerate(layout.instances):
            i0, i1, j0, j1 = inst.box
            np.copyto(index[i0:i1, j0:j1], inst.part + np.int16(4 * k), where=inst.mask)
            np.copyto(v[i0:i1, j0:j1], inst.v, where=inst.mask)
        shade = 1.0 - 0.12 * np.clip(v, -1.0, 1.0)  # lit from above
        np.copyto(img, palette[index] * shade[:, :, None], where=(index >= 0)[:, :, None])
    img *= np.float32(255.0 * rng.uniform(0.88, 1.12) / _SENSOR_NOISE)  # exposure, in units of the noise
    cast = rng.normal(0.0, 0.025, 3) * 255.0 + 0.5  # colour cast, + 0.5 to round on conversion
    img += (cast / _SENSOR_NOISE).astype(np.float32)
    img += fine_noise(size, 3 * size, rng).reshape(size, size, 3)  # sensor noise
    img *= np.float32(_SENSOR_NOISE)
    return np.clip(img, 0.0, 255.0, out=img).astype(np.uint8)
