"""A PNG gallery of synthetic-world samples: image, ground-truth labels, caption, missed concepts."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cocu.data.world import CONCEPTS, WorldSample

_COLS = 3  # samples per row (each sample: image + label map)


def label_colours() -> np.ndarray:
    """[K, 3] float: a distinct display colour per concept (stuff muted, things vivid)."""
    import matplotlib

    stuff = matplotlib.colormaps["Pastel2"].colors
    things = matplotlib.colormaps["tab20"].colors
    out, s, t = [], 0, 0
    for c in CONCEPTS:
        if c.kind == "stuff":
            out.append(stuff[s % len(stuff)])
            s += 1
        else:
            out.append(things[t % len(things)])
            t += 1
    return np.asarray(out, np.float64)[:, :3]


def write_gallery(samples: Sequence[WorldSample], path: Path, n: int = 12) -> None:
    """Write a grid of the first `n` samples to `path` (PNG), for a person to inspect the world.

    Each cell shows the image, its label map with concept names on the regions, the caption, and
    which present concepts the caption names and misses.
    """
    samples = list(samples)[:n]
    if not samples:
        raise ValueError("write_gallery needs at least one sample")
    cols = min(_COLS, len(samples))
    rows = math.ceil(len(samples) / cols)
    height = 2.95 * rows + 1.3
    fig = Figure(figsize=(4.4 * cols, height), dpi=110)
    FigureCanvasAgg(fig)
    colours = label_colours()
    cmap = ListedColormap(colours)
    grid = fig.add_gridspec(rows, 2 * cols, left=0.01, right=0.99, top=0.99, bottom=1.2 / height,
                            wspace=0.04, hspace=0.42)
    for k, s in enumerate(samples):
        r, c = divmod(k, cols)
        ax_img = fig.add_subplot(grid[r, 2 * c])
        ax_lab = fig.add_subplot(grid[r, 2 * c + 1])
        ax_img.imshow(s.image, interpolation="nearest")
        ax_lab.imshow(s.label, cmap=cmap, vmin=-0.5, vmax=len(CONCEPTS) - 0.5, interpolation="nearest")
        _name_regions(ax_lab, s.label)
        for ax in (ax_img, ax_lab):
            ax.set_xticks([])
            ax.set_yticks([])
        missed = [p for p in s.present if p not in s.mentioned]
        text = "\n".join(
            textwrap.wrap(f'"{s.caption}"', 52)
            + textwrap.wrap(f"named: {', '.join(s.mentioned)}", 56)
            + textwrap.wrap(f"missed: {', '.join(missed) or '-'}", 56)
        )
        ax_img.text(0.0, -0.04, text, transform=ax_img.transAxes, va="top", ha="left", fontsize=7.2)
    handles = [Patch(color=colours[i], label=f"{c.name} ({c.kind})") for i, c in enumerate(CONCEPTS)]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=7, frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _name_regions(ax, label: np.ndarray) -> None:
    """Write each concept's name at the visible pixel nearest to its region's centroid."""
    for cid in np.unique(label):
        ys, xs = np.nonzero(label == cid)
        cy, cx = ys.mean(), xs.mean()
        k = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
        ax.text(xs[k], ys[k], CONCEPTS[cid].name, ha="center", va="center", fontsize=6.5, color="white",
                path_effects=[patheffects.withStroke(linewidth=1.6, foreground="black")])


def write_pair_gallery(images: Sequence[np.ndarray], captions: Sequence[str], path: Path, n: int = 12) -> None:
    """A grid of the first `n` real pairs (image and caption): the real profile's gallery."""
    n = min(n, len(images))
    cols = 4
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(3.2 * cols, 3.6 * rows))
    FigureCanvasAgg(fig)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[i])
        ax.set_axis_off()
        ax.set_title("\n".join(textwrap.wrap(captions[i], 36)[:3]), fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
