"""Appearance of the synthetic world: shapes and colours of things, textures of stuff.

Pure numpy over coordinate grids, no per-pixel Python loops. Coordinates are normalised to
[0, 1) so that a scene looks the same at any image size; a thing is drawn in its local frame
(u right, v down, unit radius) after scale, rotation, aspect jitter and mirroring.

Design rule (docs/world.md §2): neither shape nor colour identifies a thing alone. Things share
silhouettes (disc: ball, apple, clock; square: box, window; triangle: tent, traffic cone; ring:
donut, tire) and colour families (red: ball, apple, kite, starfish, car; orange: tent, traffic
cone, starfish, fish; blue: ball, fish, car; yellow: kite, banana, car; green: apple, tent; pink:
donut, flower; white: clock, boat); several things come in more than one colour. Stuff colours
overlap things too (grass vs tent, sky vs window, floor vs box, sand vs banana).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal

import numpy as np

RGB = tuple[float, float, float]
ShapeFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

WHITE: RGB = (0.93, 0.93, 0.92)
DARK: RGB = (0.12, 0.11, 0.12)


@dataclass(frozen=True)
class ThingStyle:
    name: str
    silhouette: str  # shape family shared by look-alike things (disc, square, triangle, ring, ...)
    shape: ShapeFn  # (u, v) [h, w] -> (mask bool [h, w], part int8 [h, w]: 0 main, 1 second, 2 dark, 3 white)
    colours: tuple[tuple[str, RGB], ...]  # colour variants: (caption word, rgb); one is drawn per image
    second: RGB  # colour of part 1
    zone: Literal["air", "ground", "any"]  # vertical placement prior
    max_rotation: float  # degrees
    scale: float  # radius multiplier
    mirror: bool = True


@dataclass(frozen=True)
class StuffStyle:
    name: str
    texture: Callable[[np.ndarray, np.ndarray, tuple[float, float], np.random.Generator], np.ndarray]
    role: Literal["top", "ground", "any"]  # where a band of it may sit


# --------------------------------------------------------------------------------------------
# thing shapes: (u, v) local coordinates -> mask, part map


def _parts(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, np.int8)


def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _ball(u, v):
    part = _parts(u.shape)
    part[(u + 0.38) ** 2 + (v + 0.38) ** 2 < 0.05] = 3  # highlight
    part[np.abs(v - 0.3 * u * u + 0.05) < 0.09] = 3  # seam band
    return _disc(u, v), part


def _apple(u, v):
    body = (u * u + (v - 0.08) ** 2 / 0.85) <= 1.0
    stem = (np.abs(u - 0.05) < 0.09) & (v > -1.2) & (v < -0.7)
    leaf = ((u - 0.32) ** 2 / 0.09 + (v + 0.98) ** 2 / 0.02) <= 1.0
    part = _parts(u.shape)
    part[stem] = 1
    part[leaf] = 2
    part[(u + 0.4) ** 2 + (v + 0.3) ** 2 < 0.04] = 3
    return body | stem | leaf, part


def _clock(u, v):
    r2 = u * u + v * v
    part = _parts(u.shape)
    part[r2 > 0.72] = 2  # rim
    hands = ((np.abs(u) < 0.07) & (v > -0.65) & (v < 0.05)) | ((np.abs(v) < 0.07) & (u > -0.05) & (u < 0.5))
    part[hands] = 2
    return r2 <= 1.0, part


def _box(u, v):
    m = np.maximum(np.abs(u), np.abs(v))
    part = _parts(u.shape)
    part[np.abs(u) < 0.12] = 1  # tape
    part[m > 0.74] = 2  # edges
    return m <= 0.85, part


def _window(u, v):
    m = np.maximum(np.abs(u) / 0.75, np.abs(v) / 0.95)
    part = _parts(u.shape)
    part[np.abs(u + v - 0.25) < 0.13] = 1  # reflection
    part[(m > 0.84) | (np.abs(u) < 0.07) | (np.abs(v) < 0.07)] = 3  # frame and bars
    return m <= 1.0, part


def _tent(u, v):
    mask = (np.abs(u) <= (v + 0.95) * 0.57) & (v <= 0.8)
    part = _parts(u.shape)
    part[(np.abs(u) <= (v - 0.05) * 0.4) & (v >= 0.05)] = 2  # door
    part[np.abs(u) < 0.05] = 1  # seam
    return mask, part


def _cone(u, v):
    body = (np.abs(u) <= (v + 1.0) * 0.3) & (v <= 0.75)
    base = (np.abs(u) <= 0.75) & (v > 0.7) & (v <= 0.92)
    part = _parts(u.shape)
    part[((v > -0.4) & (v < -0.15)) | ((v > 0.2) & (v < 0.45))] = 3  # reflective bands
    part[base] = 2
    return body | base, part


def _kite(u, v):
    body = np.abs(u) / 0.65 + np.abs(v + 0.15) / 0.85 <= 1.0
    tail = (v > 0.68) & (v < 1.65) & (np.abs(u - 0.16 * np.sin(9.0 * v)) < 0.08)
    part = _parts(u.shape)
    part[(u < 0) ^ (v < -0.35)] = 1
    part[(np.abs(u) < 0.05) | (np.abs(v + 0.35) < 0.05)] = 2  # struts
    part[tail] = 2
    return body | tail, part


def _donut(u, v):
    r2 = u * u + v * v
    part = np.where((r2 < 0.27) | (r2 > 0.85), 1, 0).astype(np.int8)  # dough rim, icing on top
    sprinkles = (np.sin(23.0 * u + 1.0) * np.sin(19.0 * v) > 0.8) & (part == 0)
    part[sprinkles] = 3
    return (r2 <= 1.0) & (r2 >= 0.18), part


def _tire(u, v):
    r2 = u * u + v * v
    part = _parts(u.shape)
    part[np.abs(r2 - 0.56) < 0.06] = 1  # sidewall line
    return (r2 <= 1.0) & (r2 >= 0.25), part


def _banana(u, v):
    mask = (u * u + v * v <= 1.0) & (u * u + (v + 0.45) ** 2 >= 0.9)
    part = _parts(u.shape)
    part[np.abs(u) > 0.8] = 1  # brown tips
    return mask, part


def _cos5(u, v):
    """cos(5 theta) of the polar angle measured from 'up', without atan2 (Chebyshev T5)."""
    c = -v / (np.sqrt(u * u + v * v) + 1e-6)
    c2 = c * c
    return c * (16.0 * c2 * c2 - 20.0 * c2 + 5.0)


def _starfish(u, v):
    r = np.sqrt(u * u + v * v)
    radius = 0.32 + 0.68 * ((1.0 + _cos5(u, v)) * 0.5) ** 2
    part = _parts(u.shape)
    part[np.sin(17.0 * u) * np.sin(17.0 * v) > 0.75] = 1  # bumps
    return r <= radius, part


def _flower(u, v):
    r = np.sqrt(u * u + v * v)
    radius = 0.5 + 0.5 * np.sqrt((1.0 + _cos5(u, v)) * 0.5)
    part = _parts(u.shape)
    part[r < 0.32] = 1  # centre
    return r <= radius, part


def _fish(u, v):
    body = ((u + 0.15) / 0.72) ** 2 + (v / 0.45) ** 2 <= 1.0
    tail = (u > 0.45) & (u < 1.0) & (np.abs(v) <= (u - 0.45) * 1.1)
    part = _parts(u.shape)
    part[tail | (np.abs(u - 0.05) < 0.06)] = 1
    part[(u + 0.55) ** 2 + (v + 0.1) ** 2 < 0.012] = 2  # eye
    return body | tail, part


def _car(u, v):
    body = (np.abs(u) <= 1.0) & (v >= -0.15) & (v <= 0.38)
    cabin = (v >= -0.6) & (v < -0.15) & (np.abs(u) <= 0.48 + (v + 0.6) * 0.6)
    wheels = ((np.abs(u) - 0.55) ** 2 + (v - 0.4) ** 2) <= 0.075
    glass = (v >= -0.5) & (v < -0.2) & (np.abs(u) <= 0.4 + (v + 0.5) * 0.6) & (np.abs(u) > 0.06)
    part = _parts(u.shape)
    part[glass] = 1
    part[wheels] = 2
    return body | cabin | wheels, part


def _boat(u, v):
    hull = (v >= 0.3) & (v <= 0.72) & (np.abs(u) <= 1.0 - (v - 0.3) * 0.9)
    mast = (np.abs(u) < 0.05) & (v > -1.0) & (v < 0.3)
    sail = (v > -0.95) & (v < 0.22) & (u >= 0.08) & (u <= 0.08 + (v + 0.95) * 0.62)
    jib = (v > -0.6) & (v < 0.22) & (u <= -0.08) & (u >= -0.08 - (v + 0.6) * 0.55)
    part = _parts(u.shape)
    part[hull] = 1
    part[mast] = 2
    return hull | mast | sail | jib, part


RED, GREEN, ORANGE = ("red", (0.86, 0.13, 0.11)), ("green", (0.22, 0.62, 0.2)), ("orange", (0.96, 0.5, 0.1))
BLUE, YELLOW, PINK = ("blue", (0.16, 0.3, 0.85)), ("yellow", (0.95, 0.84, 0.18)), ("pink", (0.95, 0.55, 0.72))
PURPLE, BLACK = ("purple", (0.62, 0.25, 0.78)), ("black", (0.15, 0.15, 0.16))
GLASS: RGB = (0.55, 0.75, 0.92)

THINGS: tuple[ThingStyle, ...] = (
    ThingStyle("ball", "disc", _ball, (RED, BLUE), WHITE, "ground", 180, 0.8),
    ThingStyle("apple", "disc", _apple, (GREEN, RED), (0.4, 0.25, 0.1), "ground", 20, 0.7),
    ThingStyle("clock", "disc", _clock, (("white", WHITE),), DARK, "any", 15, 0.9),
    ThingStyle("box", "square", _box, (("brown", (0.63, 0.45, 0.27)),), (0.82, 0.72, 0.5), "ground", 25, 1.0),
    ThingStyle("window", "square", _window, (("", GLASS),), (0.8, 0.9, 1.0), "any", 5, 1.0, False),
    ThingStyle("tent", "triangle", _tent, (GREEN, ORANGE), (0.1, 0.35, 0.1), "ground", 8, 1.15),
    ThingStyle("traffic cone", "triangle", _cone, (ORANGE,), WHITE, "ground", 10, 0.95, False),
    ThingStyle("kite", "diamond", _kite, (RED, YELLOW), (0.95, 0.95, 0.3), "air", 35, 0.9),
    ThingStyle("donut", "ring", _donut, (PINK,), (0.78, 0.55, 0.28), "ground", 180, 0.75),
    ThingStyle("tire", "ring", _tire, (BLACK,), (0.45, 0.45, 0.47), "ground", 0, 0.85),
    ThingStyle("banana", "crescent", _banana, (YELLOW,), (0.4, 0.3, 0.1), "ground", 180, 0.85),
    ThingStyle("starfish", "star", _starfish, (ORANGE, RED), (0.98, 0.75, 0.45), "ground", 180, 0.85),
    ThingStyle("fish", "fish", _fish, (ORANGE, BLUE), (0.98, 0.85, 0.3), "any", 25, 0.95),
    ThingStyle("car", "car", _car, (BLUE, RED, YELLOW), (0.7, 0.85, 0.95), "ground", 6, 1.2),
    ThingStyle("boat", "boat", _boat, (("white", WHITE),), (0.55, 0.32, 0.16), "ground", 8, 1.15),
    ThingStyle("flower", "flower", _flower, (PURPLE, PINK), (0.98, 0.85, 0.15), "ground", 180, 0.75),
)


# --------------------------------------------------------------------------------------------
# stuff textures: (x [1, w], y [h, 1] normalised, band (y0, y1), rng) -> rgb [h, w, 3]


@lru_cache(maxsize=64)
def _upsampler(n: int, g: int) -> np.ndarray:
    """[n, g] linear interpolation from a g-point grid to n pixels (low-frequency noise)."""
    pos = np.linspace(0.0, g - 1.0, n)
    lo = np.minimum(np.floor(pos).astype(int), g - 2)
    w = pos - lo
    m = np.zeros((n, g), np.float32)
    m[np.arange(n), lo] = 1.0 - w
    m[np.arange(n), lo + 1] = w
    return m


def _lowfreq(h: int, w: int, rng: np.random.Generator, gh: int = 4, gw: int = 4) -> np.ndarray:
    """[h, w] smooth noise, roughly unit variance."""
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    return _upsampler(h, gh) @ grid @ _upsampler(w, gw).T


def _jitter(rgb: RGB, rng: np.random.Generator, amount: float = 0.03) -> np.ndarray:
    """Brightness and per-channel jitter of a base colour."""
    gain, shift = rng.uniform(0.88, 1.12), rng.normal(0.0, amount, 3).astype(np.float32)
    return np.asarray(rgb, np.float32) * gain + shift


def _modulate(base: np.ndarray, shade: np.ndarray) -> np.ndarray:
    return base[None, None, :] * shade[:, :, None]


@lru_cache(maxsize=4)
def _noise_bank(side: int) -> np.ndarray:
    """[side, side] fixed standard-normal field; crops at random offsets are per-image fine noise
    (drawing fresh normals for every pixel would be the single largest cost of a sample)."""
    return np.random.default_rng(0x5EED).standard_normal((side, side), dtype=np.float32)


def fine_noise(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """[h, w] standard-normal pixel noise (a random crop of the bank; a view, do not write)."""
    side = max(256, 1 << int(np.ceil(np.log2(2 * max(h, w)))))
    i, j = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
    return _noise_bank(side)[i : i + h, j : j + w]




def _sky(x, y, band, rng):
    h, w = y.shape[0], x.shape[1]
    base = _jitter((0.5, 0.7, 0.95), rng)
    col = base + ((y - band[0]) * 0.5)[:, :, None] * np.float32([0.5, 0.35, 0.1])  # lighter at the horizon
    cloud = np.clip(_lowfreq(h, w, rng, 3, 5) * 0.8 - rng.uniform(0.0, 0.8), 0.0, 0.85)[:, :, None]
    return col * (1.0 - cloud) + cloud * np.float32(0.97)


def _grass(x, y, band, rng):
    h, w = y.shape[0], x.shape[1]
    blades = np.repeat(rng.standard_normal((h // 3 + 1, w), dtype=np.float32), 3, axis=0)[:h]
    shade = 1.0 + 0.16 * blades + 0.1 * fine_noise(h, w, rng) + 0.12 * _lowfreq(h, w, rng)
    return _modulate(_jitter((0.3, 0.58, 0.2), rng), shade)


def _sand(x, y, band, rng):
    h, w = y.shape[0], x.shape[1]
    ripples = np.sin(2 * np.pi * (y * rng.uniform(14, 22) + 0.25 * _lowfreq(h, w, rng)))
    shade = 1.0 + 0.05 * ripples + 0.07 * fine_noise(h, w, rng)
    return _modulate(_jitter((0.87, 0.77, 0.55), rng), shade)


def _water(x, y, band, rng):
    h, w = y.shape[0], x.shape[1]
    swell = 0.35 * np.sin(2 * np.pi * (x * rng.uniform(1.5, 3)) + rng.uniform(0, 6))  # [1, w]
    phase = 2 * np.pi * (y * rng.uniform(12, 18) + swell)
    waves = np.sin(phase + 1.2 * _lowfreq(h, w, rng))
    shade = 1.0 + 0.14 * waves + 0.35 * (waves > 0.88) + 0.04 * fine_noise(h, w, rng)
    return _modulate(_jitter((0.13, 0.38, 0.68), rng), shade)


def _wall(x, y, band, rng):
    h, w = y.shape[0], x.shape[1]
    bh = rng.uniform(0.08, 0.11)
    bw = bh * rng.uniform(2.0, 2.6)
    row = np.floor(y / bh).astype(np.int32)  # [h, 1]
    xs = x + (row % 2) * bw * 0.5 + rng.uniform(0, bw)
    col = np.floor(xs / bw).astype(np.int32)  # [h, w]
    brick = rng.standard_normal((row.max() + 2, int(1.0 / bw) + 3), dtype=np.float32)[row, col]
    mortar = ((y / bh) % 1.0 < 0.14) | ((xs / bw) % 1.0 < 0.07)
    shade = 1.0 + 0.1 * brick + 0.05 * fine_noise(h, w, rng)
    out = _modulate(_jitter((0.66, 0.29, 0.21), rng), shade)
    np.copyto(out, np.float32([0.78, 0.75, 0.7]) * rng.uniform(0.9, 1.05), where=mortar[:, :, None])
    return out


def _road(x, y, band, rng):
    h, w = y.shape[0], x.shape[1]
    shade = 1.0 + 0.12 * fine_noise(h, w, rng) + 0.06 * _lowfreq(h, w, rng)
    out = _modulate(_jitter((0.33, 0.33, 0.35), rng, 0.02), shade)
    centre = 0.5 * (band[0] + band[1])
    half = max(0.012, 0.6 / w)
    dash = (np.abs(y - centre) < half) & ((x * rng.uniform(3, 5) + rng.uniform(0, 1)) % 1.0 < 0.55)
    np.copyto(out, np.float32([0.92, 0.86, 0.45]), where=dash[:, :, None])
    return out


def _snow(x, y, band, rng):
    h, w = y.shape[0], x.shape[1]
    lf = _lowfreq(h, w, rng)[:, :, None]
    out = _jitter((0.92, 0.94, 0.98), rng, 0.015) + lf * np.float32([-0.04, -0.03, 0.0])
    return out + 0.05 * (fine_noise(h, w, rng) > 2.0)[:, :, None]


def _floor(x, y, band, rng):
    h, w = y.shape[0], x.shape[1]
    ph = rng.uniform(0.09, 0.14)
    row = np.floor(y / ph).astype(np.int32)  # [h, 1]
    plank = rng.standard_normal(row.max() + 2, dtype=np.float32)
    grain = np.sin(2 * np.pi * (x * 1.5 + plank[row]) + y * 90.0 + 2.0 * _lowfreq(h, w, rng))
    seam = ((y / ph) % 1.0 < 0.09) | (((x + plank[row + 1]) / 0.45) % 1.0 < 0.025)
    shade = (1.0 + 0.1 * plank[row] + 0.07 * grain + 0.03 * fine_noise(h, w, rng)) * np.where(seam, 0.6, 1.0)
    return _modulate(_jitter((0.62, 0.42, 0.24), rng), shade)


STUFF: tuple[StuffStyle, ...] = (
    StuffStyle("sky", _sky, "top"),
    StuffStyle("grass", _grass, "ground"),
    StuffStyle("sand", _sand, "ground"),
    StuffStyle("water", _water, "ground"),
    StuffStyle("wall", _wall, "top"),
    StuffStyle("road", _road, "ground"),
    StuffStyle("snow", _snow, "ground"),
    StuffStyle("floor", _floor, "ground"),
)

# things that like to appear with a stuff (mild co-occurrence, as in real photos)
AFFINITY: dict[str, tuple[str, ...]] = {
    "sky": ("kite",),
    "grass": ("ball", "tent", "flower", "apple", "kite"),
    "sand": ("starfish", "ball", "kite", "tent"),
    "water": ("boat", "fish", "starfish"),
    "wall": ("clock", "window", "box"),
    "road": ("car", "traffic cone", "tire"),
    "snow": ("tent", "traffic cone", "car"),
    "floor": ("box", "donut", "banana", "apple", "ball", "tire"),
}
