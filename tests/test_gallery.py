"""The world gallery: a readable PNG grid of samples."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cocu.config import WorldConfig, from_dict
from cocu.data import world
from cocu.data.gallery import label_colours, write_gallery

CFG = from_dict(WorldConfig, dict(
    size="smoke", sizes={"smoke": {"pairs": 8, "teacher": 8, "benchmark": 4}}, image_size=32, min_concepts=2,
    max_concepts=6, mention_rate=0.4, shard_size=10, jpeg_quality=90, seed=0, benchmarks=["synth_all"],
))


def test_gallery_writes_a_png_grid(tmp_path):
    path = tmp_path / "figures" / "gallery.png"
    write_gallery(list(world.generate(CFG, 3, "gallery")), path, n=2)
    with Image.open(path) as im:
        assert im.format == "PNG"
        width, height = im.size
        pixels = np.asarray(im.convert("RGB"))
    assert width > 500 and height > 300
    assert pixels.std() > 20  # not a blank canvas


def test_gallery_rejects_no_samples(tmp_path):
    with pytest.raises(ValueError):
        write_gallery([], tmp_path / "g.png")


def test_label_colours_are_distinct():
    colours = label_colours()
    assert colours.shape == (len(world.CONCEPTS), 3)
    assert len({tuple(np.round(c, 3)) for c in colours}) == len(world.CONCEPTS)
