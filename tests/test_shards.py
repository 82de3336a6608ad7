"""Shards: round trip, determinism, and every robustness case skipped and counted, never a crash."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cocu.data.manifest import index_shards
from cocu.data.shards import RawSample, encode_jpeg, SkipCounter, iter_samples, list_shards, write_shards


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_jpeg(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), 90)


def _raw(n: int) -> list[RawSample]:
    return [RawSample(key=f"k{i:04d}", image=_jpeg(i), caption=f"a photo of thing {i}") for i in range(n)]


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_round_trip(tmp_path):
    samples = _raw(7)
    paths = write_shards(samples, tmp_path, shard_size=3)
    assert [p.name for p in paths] == ["000000.tar", "000001.tar", "000002.tar"]
    read = list(iter_samples(list_shards(tmp_path)))
    assert [s.key for s in read] == [s.key for s in samples]
    assert [s.caption for s in read] == [s.caption for s in samples]
    assert [s.shard for s in read] == ["000000.tar"] * 3 + ["000001.tar"] * 3 + ["000002.tar"]
    decoded = np.asarray(Image.open(io.BytesIO(samples[4].image)).convert("RGB"))
    assert np.array_equal(np.asarray(read[4].image), decoded)
    with tarfile.open(paths[0]) as tar:  # webdataset layout: <key>.jpg + <key>.txt
        assert tar.getnames()[:2] == ["k0000.jpg", "k0000.txt"]


def test_write_is_byte_deterministic(tmp_path):
    a = write_shards(_raw(5), tmp_path / "a", shard_size=2)
    b = write_shards(_raw(5), tmp_path / "b", shard_size=2)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_rewrite_removes_stale_shards(tmp_path):
    write_shards(_raw(6), tmp_path, shard_size=2)
    write_shards(_raw(2), tmp_path, shard_size=2)
    assert len(list_shards(tmp_path)) == 1


def test_each_bad_sample_is_skipped_and_counted(tmp_path):
    good = _jpeg(0)
    _tar(tmp_path / "000000.tar", [
        ("ok1.jpg", good), ("ok1.txt", b"a red ball"),
        ("trunc.jpg", good[: len(good) // 2]), ("trunc.txt", b"cut short"),
        ("latin.jpg", good), ("latin.txt", "caf\xe9 on the grass".encode("latin-1")),
        ("nocap.jpg", good),
        ("emptycap.jpg", good), ("emptycap.txt", b"   "),
        ("noimg.txt", b"a caption without an image"),
        ("ok2.jpg", good), ("ok2.txt", "caf\u00e9 by the sea".encode("utf-8")),
    ])
    (tmp_path / "000001.tar").write_bytes(b"")  # empty file
    _tar(tmp_path / "000002.tar", [])  # a valid tar with no members
    _tar(tmp_path / "000003.tar", [("ok3.jpg", good), ("ok3.txt", b"last one")])
    counter = SkipCounter()
    keys = [s.key for s in iter_samples(list_shards(tmp_path), counter)]
    assert keys == ["ok1", "ok2", "ok3"]
    assert counter.as_dict() == {
        "truncated_image": 1, "non_utf8_caption": 1, "missing_caption": 2, "missing_image": 1,
        "duplicate_key": 0, "empty_shard": 2, "corrupt_shard": 0,
    }
    assert counter.examples["truncated_image"] == "000000.tar:trunc"
    assert counter.total_samples == 5


def test_corrupt_tar_keeps_what_was_read(tmp_path):
    good = _jpeg(1)
    path = _tar(tmp_path / "000000.tar", [(f"s{i}.{e}", good if e == "jpg" else b"cap") for i in range(4)
                                          for e in ("jpg", "txt")])
    data = path.read_bytes()
    path.write_bytes(data[:5800])  # cut inside the third sample's image (512-byte tar blocks)
    counter = SkipCounter()
    keys = [s.key for s in iter_samples([path], counter)]
    assert counter.as_dict()["corrupt_shard"] == 1
    assert keys == ["s0", "s1"]


def test_duplicate_keys_are_counted(tmp_path):
    write_shards(_raw(2), tmp_path / "a", shard_size=5)
    write_shards(_raw(2), tmp_path / "b", shard_size=5)
    counter = SkipCounter()
    frame = index_shards([tmp_path / "a" / "000000.tar", tmp_path / "b" / "000000.tar"], counter)
    assert list(frame["key"]) == ["k0000", "k0001"]
    assert counter.as_dict()["duplicate_key"] == 2


def test_missing_shard_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        list_shards(tmp_path / "nope")
