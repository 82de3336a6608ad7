"""Demo overlay PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cocu.eval.overlay import blend, palette, write_overlay


def test_palette_is_the_voc_colour_map():
    colours = palette(21)
    assert colours[0].tolist() == [0, 0, 0]
    assert colours[1].tolist() == [128, 0, 0]
    assert colours[2].tolist() == [0, 128, 0]
    assert colours[15].tolist() == [192, 128, 128]  # VOC "person"
    assert len({tuple(c) for c in palette(256)}) == 256


def test_blend_tints_only_valid_non_skipped_ids():
    image = np.full((1, 3, 3), 100, dtype=np.uint8)
    out = blend(image, np.array([[0, 1, 255]]), palette(2), alpha=0.5, skip=[0])
    assert out[0, 0].tolist() == [100, 100, 100]  # skipped (background)
    assert out[0, 1].tolist() == [114, 50, 50]  # halfway to (128, 0, 0)
    assert out[0, 2].tolist() == [100, 100, 100]  # out of range (ignore)


def test_write_overlay_png_with_legend(tmp_path):
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :, 2] = np.linspace(0, 255, 64).astype(np.uint8)[None]
    pred = np.zeros((64, 64), dtype=np.int64)
    pred[8:40, 8:30] = 1
    pred[30:60, 36:60] = 3
    label = pred.copy()
    label[:4] = 255
    label[50:, :10] = 2
    names = ["background", "circle", "square", "star"]
    path = write_overlay(image, pred, names, tmp_path / "sub" / "demo.png", label=label)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.height >= 256 and im.width > 2 * 256  # upscaled, two panels and a legend
        pixels = np.array(im)
    zoom = 4
    tinted = pixels[20 * zoom, 20 * zoom]  # inside class 1 of the prediction panel
    assert tinted[0] > tinted[1] and tinted[0] > tinted[2]  # reddish: VOC colour 1 is (128, 0, 0)
    assert pixels[2, 2].tolist() == [0, 0, 0]  # background pixel of a black image stays untinted


def test_write_overlay_rejects_size_mismatch(tmp_path):
    with pytest.raises(ValueError, match="differ"):
        write_overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), int), ["a"], tmp_path / "x.png")
