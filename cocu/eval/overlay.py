"""Demo overlays: the image with a translucent colour per predicted class and a legend (PIL only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette(n: int) -> np.ndarray:
    """[n, 3] uint8 colours: PASCAL VOC's bit-interleaved colour map (distinct, deterministic)."""
    ids = np.arange(n)
    colours = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            colours[:, channel] |= ((ids >> (3 * shift + channel)) & 1) << (7 - shift)
    return colours.astype(np.uint8)


def blend(image: np.ndarray, ids: np.ndarray, colours: np.ndarray, alpha: float,
          skip: Sequence[int] = ()) -> np.ndarray:
    """image [H, W, 3] uint8 tinted by colours[ids] [H, W]; ids in `skip` (or out of range) stay as is."""
    valid = (ids >= 0) & (ids < len(colours)) & ~np.isin(ids, list(skip))
    out = image.astype(np.float32)
    tint = colours[np.where(valid, ids, 0)].astype(np.float32)  # [H, W, 3]
    out[valid] = (1 - alpha) * out[valid] + alpha * tint[valid]
    return out.round().astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def write_overlay(image: np.ndarray, pred: np.ndarray, class_names: Sequence[str], path: Path | str,
                  label: Optional[np.ndarray] = None, alpha: float = 0.55, min_side: int = 256) -> Path:
    """Write a PNG: the image tinted by `pred` [H, W] (and by `label` in a second panel when given),
    with a legend of the classes present, largest first. A class named "background" is not tinted.

    Small images are upscaled (nearest) so that the short side is at least `min_side` pixels.
    """
    H, W = pred.shape
    if image.shape[:2] != (H, W):
        raise ValueError(f"image {image.shape[:2]} and prediction {(H, W)} differ in size")
    colours = palette(len(class_names))
    skip = [i for i, n in enumerate(class_names) if n == "background"]
    panels = [blend(image, pred, colours, alpha, skip)]
    if label is not None:
        panels.append(blend(image, label.astype(np.int64), colours, alpha, skip))
    zoom = max(1, int(np.ceil(min_side / min(H, W))))
    gap = 4
    strip = np.full((H, gap, 3), 255, dtype=np.uint8)
    body = np.concatenate([p for panel in panels for p in (panel, strip)][:-1], axis=1)
    body_im = Image.fromarray(body).resize((body.shape[1] * zoom, H * zoom), Image.NEAREST)

    areas = np.bincount(pred.ravel().clip(0, len(class_names) - 1), minlength=len(class_names))
    present = [int(k) for k in np.argsort(-areas, kind="stable") if areas[k] > 0]
    if label is not None:
        in_label = set(np.unique(label[label < len(class_names)]).tolist())
        present += sorted(in_label - set(present))
    font, row, pad = _font(14), 20, 8
    measure = ImageDraw.Draw(body_im)
    legend_w = 2 * pad + max([row + int(measure.textlength(class_names[k], font=font)) + 90 for k in present]
                             + [int(measure.textlength("left: prediction, right: label", font=font))])
    header = ["left: prediction, right: label"] if label is not None else []
    height = max(body_im.height, pad * 2 + row * (len(present) + len(header)))
    canvas = Image.new("RGB", (body_im.width + legend_w, height), "white")
    canvas.paste(body_im, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = body_im.width + pad
    for i, text in enumerate(header):
        draw.text((x0, pad + i * row), text, fill=(90, 90, 90), font=font)
    for i, k in enumerate(present):
        y = pad + (i + len(header)) * row
        fill = (255, 255, 255) if k in skip else tuple(int(c) for c in colours[k])
        draw.rectangle([x0, y, x0 + row - 6, y + row - 6], fill=fill, outline=(0, 0, 0))
        share = f" {100 * areas[k] / pred.size:.0f}%" if areas[k] else " (label only)"
        draw.text((x0 + row, y), class_names[k] + share, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
