"""The world gallery: a readable PNG grid of samples."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cocu.config import WorldConfig, from_dict
from cocu.data import world
from cocu.data.gallery import label_colours, write_gallery
from tests.conftest import LOCAL_LAUNCHER

CFG = from_dict(WorldConfig, dict(
    size="smoke", sizes={"smoke": {"pairs": 8, "teacher": 8, "benchmark": 4}}, image_size=32, min_concepts=2,
    max_concepts=6, mention_rate=0.4, naming_bias=0.0, thing_scale=1.0, shard_size=10, jpeg_quality=90, seed=0,
    benchmarks=["synth_all"],
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


def _corpus_dropping(tmp_path, monkeypatch, n: int, drop: set[int]):
    """A synthetic corpus of `n` pairs whose samples `drop` have truncated JPEGs (the validator drops them)."""
    from cocu.data import pairs

    encode, calls = pairs.encode_jpeg, iter(range(n))

    def flaky(image, quality):
        data = encode(image, quality)
        return data[: len(data) // 2] if next(calls) in drop else data

    monkeypatch.setattr(pairs, "encode_jpeg", flaky)
    stats = pairs.build_synthetic_corpus(CFG, n, "pairs", tmp_path / "shards", tmp_path / "manifest.parquet",
                                         LOCAL_LAUNCHER)
    assert stats.skipped["truncated_image"] == len(drop)
    return tmp_path / "manifest.parquet"


def test_world_gallery_shows_only_manifest_rows(tmp_path, monkeypatch):
    from cocu.data.manifest import read_manifest
    from cocu.data.pairs import synthetic_gallery

    manifest = _corpus_dropping(tmp_path, monkeypatch, n=8, drop={1, 4})
    shown = synthetic_gallery(CFG, manifest, tmp_path / "gallery.png", n=4)
    assert shown == ["pairs00000000", "pairs00000002", "pairs00000003", "pairs00000005"]
    assert set(shown) <= set(read_manifest(manifest)["key"])
    assert (tmp_path / "gallery.png").stat().st_size > 0


def test_world_gallery_is_the_world_draw_when_nothing_is_dropped(tmp_path, monkeypatch):
    from cocu.data.pairs import synthetic_gallery

    manifest = _corpus_dropping(tmp_path, monkeypatch, n=6, drop=set())
    synthetic_gallery(CFG, manifest, tmp_path / "from_manifest.png", n=6)
    write_gallery(list(world.generate(CFG, 6, "pairs")), tmp_path / "drawn.png", n=6)
    assert (tmp_path / "from_manifest.png").read_bytes() == (tmp_path / "drawn.png").read_bytes()


def test_real_gallery_skips_a_repeat_the_manifest_dropped(tmp_path):
    from cocu.config import PairsConfig
    from cocu.data.manifest import index_shards, write_manifest
    from cocu.data.pairs import real_gallery
    from cocu.data.shards import RawSample, SkipCounter, encode_jpeg, write_shards

    def raw(key: str, seed: int) -> RawSample:
        pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        return RawSample(key=key, image=encode_jpeg(pixels, 90), caption=f"caption of {key} ({seed})")

    shards = write_shards([raw("a", 0), raw("b", 1), raw("a", 2), raw("c", 3)], tmp_path / "shards", shard_size=2)
    counter = SkipCounter()
    write_manifest(index_shards(shards, counter), tmp_path / "manifest.parquet")
    assert counter.as_dict()["duplicate_key"] == 1
    pairs = PairsConfig(source="webdataset", shards_glob=None, caption_key="txt", image_keys=("jpg", "jpeg", "png", "webp"))
    shown = real_gallery(shards, pairs, tmp_path / "manifest.parquet", tmp_path / "gallery.png", n=3)
    assert shown == ["a", "b", "c"]  # not the second "a" of shard 000001.tar
