"""Shards: round trip, determinism, and every robustness case skipped and counted, never a crash."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cocu.config import PairsConfig
from cocu.data.manifest import index_shards
from cocu.data.pairs import index_corpus
from cocu.data.shards import (RawSample, SkipCounter, encode_jpeg, is_valid_key, iter_samples, key_problem,
                              list_shards, read_tar, shard_images, split_member, write_shards)
from tests.conftest import LOCAL_LAUNCHER, write_tar


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_jpeg(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), 90)


def _raw(n: int) -> list[RawSample]:
    return [RawSample(key=f"k{i:04d}", image=_jpeg(i), caption=f"a photo of thing {i}") for i in range(n)]


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
    write_tar(tmp_path / "000000.tar", [
        ("ok1.jpg", good), ("ok1.txt", b"a red ball"),
        ("trunc.jpg", good[: len(good) // 2]), ("trunc.txt", b"cut short"),
        ("latin.jpg", good), ("latin.txt", "caf\xe9 on the grass".encode("latin-1")),
        ("nocap.jpg", good),
        ("emptycap.jpg", good), ("emptycap.txt", b"   "),
        ("noimg.txt", b"a caption without an image"),
        ("ok2.jpg", good), ("ok2.txt", "caf\u00e9 by the sea".encode("utf-8")),
    ])
    (tmp_path / "000001.tar").write_bytes(b"")  # empty file
    write_tar(tmp_path / "000002.tar", [])  # a valid tar with no members
    write_tar(tmp_path / "000003.tar", [("ok3.jpg", good), ("ok3.txt", b"last one")])
    counter = SkipCounter()
    keys = [s.key for s in iter_samples(list_shards(tmp_path), counter)]
    assert keys == ["ok1", "ok2", "ok3"]
    assert counter.as_dict() == {
        "bad_key": 0, "truncated_image": 1, "non_utf8_caption": 1, "missing_caption": 2, "missing_image": 1,
        "duplicate_key": 0, "empty_shard": 2, "corrupt_shard": 0,
    }
    assert counter.examples["truncated_image"] == "000000.tar:trunc"
    assert counter.total_samples == 5


def test_corrupt_tar_keeps_what_was_read(tmp_path):
    good = _jpeg(1)
    path = write_tar(tmp_path / "000000.tar", [(f"s{i}.{e}", good if e == "jpg" else b"cap") for i in range(4)
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


def _members(samples: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes]]:
    """(key, image, caption) -> tar members `<key>.jpg`, `<key>.txt` in that order."""
    return [m for key, image, caption in samples for m in ((f"{key}.jpg", image), (f"{key}.txt", caption))]


def test_adjacent_duplicate_key_is_counted_and_the_first_kept(tmp_path):
    """23 samples, two adjacent ones share a key: 22 rows, one duplicate_key, the first copy kept."""
    samples = [(f"k{i:03d}", _jpeg(i), f"caption {i}".encode()) for i in range(23)]
    samples[6] = ("k005", _jpeg(6), b"the second k005")  # right after k005
    path = write_tar(tmp_path / "000000.tar", _members(samples))
    stats = index_corpus([path], PairsConfig(source="webdataset", shards_glob=None, caption_key="txt", image_keys=("jpg", "jpeg", "png", "webp")), tmp_path / "manifest.parquet", name="pairs", launcher=LOCAL_LAUNCHER)
    assert (stats.written, stats.valid) == (23, 22)
    assert stats.skipped["duplicate_key"] == 1 and sum(stats.skipped.values()) == 1
    frame = pd.read_parquet(tmp_path / "manifest.parquet")
    assert frame.loc[frame["key"] == "k005", "caption"].tolist() == ["caption 5"]
    assert frame["key"].is_unique


def test_repeated_key_in_a_shard_keeps_its_first_sample_adjacent_or_not(tmp_path):
    good = _jpeg(0)
    write_tar(tmp_path / "000000.tar", _members([
        ("a", good, b"first a"), ("a", good, b"adjacent a"), ("b", good, b"b"), ("a", good, b"later a"),
        ("c", good, b"\xff not utf-8"), ("c", good, b"valid c, but c's first sample in this shard was bad"),
    ]))
    write_tar(tmp_path / "000001.tar", _members([
        ("b", good, b"b again, in a later shard"),  # a valid repeat across shards: the manifest counts it
        ("d", good, b"\xff bad d"),
    ]))
    write_tar(tmp_path / "000002.tar", _members([("d", good, b"valid d in a later shard")]))  # first valid d
    counter = SkipCounter()
    frame = index_shards(list_shards(tmp_path), counter)
    assert list(zip(frame["key"], frame["caption"])) == [
        ("a", "first a"), ("b", "b"), ("d", "valid d in a later shard")]
    assert list(frame["shard"]) == ["000000.tar", "000000.tar", "000002.tar"]
    counts = counter.as_dict()
    assert counts["duplicate_key"] == 4 and counts["non_utf8_caption"] == 2
    assert counter.total_samples == 6


def test_training_reader_yields_the_sample_the_manifest_kept(tmp_path):
    """`shard_images` (the training stream's reader) splits and dedups a shard as the manifest does."""
    images = [_jpeg(i) for i in range(6)]
    write_tar(tmp_path / "000000.tar", _members([
        ("a", images[0], b"a"), ("a", images[1], b"adjacent a"), ("b", images[2], b"b"),
        ("a", images[3], b"later a"), ("c", images[4], b"\xff"), ("c", images[5], b"valid, too late")]))
    frame = index_shards([tmp_path / "000000.tar"], SkipCounter())
    skipped: dict[str, int] = {}
    read = list(shard_images(str(tmp_path / "000000.tar"), ("jpg",), skipped))
    assert [k for k, _ in read] == ["a", "b", "c"]  # one sample per key: the shard's first
    assert dict(read)["a"] == images[0] and dict(read)["b"] == images[2]
    assert set(frame["key"]) == {"a", "b"} and skipped == {"duplicate_key": 3}


def test_utf8_bom_is_dropped_from_captions(tmp_path):
    good = _jpeg(0)
    write_tar(tmp_path / "000000.tar", _members([
        ("bom", good, "\ufeffa red ball".encode("utf-8")),
        ("bomspace", good, "\ufeff  sky over sand \n".encode("utf-8")),
        ("bomonly", good, "\ufeff".encode("utf-8")),  # nothing but the mark: no caption
        ("inner", good, "a\ufeffb".encode("utf-8")),  # not a byte-order mark: kept as text
    ]))
    counter = SkipCounter()
    got = {s.key: s.caption for s in iter_samples([tmp_path / "000000.tar"], counter)}
    assert got == {"bom": "a red ball", "bomspace": "sky over sand", "inner": "a\ufeffb"}
    assert counter.as_dict()["missing_caption"] == 1 and counter.total_samples == 1


BAD_MEMBER_NAMES = ["../escape", "/abs/olute", "dir/key", "a\\b", "..\\up", "new\nline", "tab\tkey",
                    "caf\udce9"]  # the last: name bytes that are not UTF-8, as tarfile decodes them


@pytest.mark.parametrize("key", BAD_MEMBER_NAMES)
def test_a_key_that_is_not_a_plain_name_is_skipped_and_counted(tmp_path, key):
    good = _jpeg(0)
    write_tar(tmp_path / "000000.tar", _members([("ok1", good, b"fine"), (key, good, b"sneaky"), ("ok2", good, b"fine")]))
    counter = SkipCounter()
    frame = index_shards([tmp_path / "000000.tar"], counter)
    assert list(frame["key"]) == ["ok1", "ok2"]
    assert counter.as_dict()["bad_key"] == 1 and counter.total_samples == 1
    read_as = split_member(f"{key}.jpg")[0]  # `..\\up.jpg` reads as key '' (webdataset: the first dot)
    assert counter.examples["bad_key"] == f"000000.tar:{read_as!r}"


@pytest.mark.parametrize("key", ["", ".", "..", "a.b", "nul\x00", "x" * 256, "é" * 128, "a/b", "C:\\x", "\x7f"])
def test_key_problem_names_what_is_wrong(key):
    assert key_problem(key) is not None and not is_valid_key(key)


@pytest.mark.parametrize("key", ["000000000", "cc3m-00001-000000042", "k_1", "é" * 127, "x" * 255, "a b", "A:1"])
def test_plain_keys_are_valid(key):
    assert key_problem(key) is None and is_valid_key(key)


def test_write_shards_refuses_a_key_that_would_not_read_back(tmp_path):
    with pytest.raises(ValueError, match="path separator.*'../x'"):
        write_shards([RawSample(key="../x", image=_jpeg(0), caption="c")], tmp_path, shard_size=2)
    assert not list(tmp_path.rglob("*.jpg"))  # nothing written outside (or inside) the folder


# ---------------------------------------------------------------------------------------------
# the tar reader (one for the manifest, embed and teacher readers and the training stream)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_read_tar_matches_tarfile(tmp_path, fmt):
    long_dir = "d" * 60 + "/" + "e" * 50  # > 100 characters: ustar prefix, GNU longname or pax path
    members = [("a.jpg", b"x" * 700), (f"{long_dir}/b.jpg", b"y" * 512), ("b.txt", b""),
               ("c\u00e9.seg.png" if fmt == tarfile.PAX_FORMAT else "c.seg.png", b"z" * 3)]
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        info = tarfile.TarInfo("adir")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5  # a float mtime forces pax headers in PAX_FORMAT
            tar.addfile(info, io.BytesIO(data))
    got = list(read_tar(str(path), lambda n: not n.endswith(".txt")))
    assert got == [(n, None if n.endswith(".txt") else d) for n, d in members]


def test_read_tar_accepts_a_signed_header_checksum(tmp_path):
    """Some old tar programs summed the header bytes as signed chars; `tarfile` accepts both sums."""
    path = write_tar(tmp_path / "t.tar", [("\u00e9t\u00e9.jpg", b"x" * 10)])  # name bytes >= 0x80: the sums differ
    data = bytearray(path.read_bytes())
    header = data[:512]
    signed = sum(b - 256 * (b > 127) for b in header[:148]) + 256 + sum(b - 256 * (b > 127) for b in header[156:])
    data[148:156] = f"{signed:06o}\0 ".encode()
    path.write_bytes(bytes(data))
    assert [m.name for m in tarfile.open(path)] == ["\u00e9t\u00e9.jpg"]
    assert list(read_tar(path, lambda n: True)) == [("\u00e9t\u00e9.jpg", b"x" * 10)]
    data[148:156] = f"{signed + 1:06o}\0 ".encode()  # neither sum: a corrupt header
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="bad header checksum"):
        list(read_tar(path, lambda n: True))


def test_corrupt_shard_keeps_the_samples_before_the_break(tmp_path):
    samples = [RawSample(f"k{i}", encode_jpeg(np.zeros((8, 8, 3), np.uint8), 90), "c") for i in range(4)]
    path = write_shards(samples, tmp_path, shard_size=4)[0]
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    skipped: dict[str, int] = {}
    keys = [k for k, _ in shard_images(str(path), ("jpg",), skipped)]
    with tarfile.open(path) as tar:
        readable = []
        with pytest.raises(tarfile.ReadError):
            for m in tar:
                readable.append(m.name)
                tar.extractfile(m).read()
    assert skipped == {"corrupt_shard": 1} and 0 < len(keys) < 4
    assert set(keys) <= {n.split(".")[0] for n in readable}


@pytest.mark.parametrize("cut", ["header", "garbage"])
def test_a_tar_that_breaks_between_members_is_counted_by_every_reader(tmp_path, cut):
    """A shard cut inside a member header, or with garbage where a header belongs, is
    `corrupt_shard` for the manifest and for the training stream alike (Python's `tarfile` ends a
    stream there silently), and both keep the same samples before the break."""
    samples = [(f"s{i}", _jpeg(i), f"caption {i}".encode()) for i in range(4)]
    path = write_tar(tmp_path / "000000.tar", _members(samples))
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        third = [m for m in tar if m.name == "s2.jpg"][0].offset  # the header of the third sample
    broken = data[: third + 100] if cut == "header" else data[:third] + b"\x07" * 512 + data[third + 512:]
    path.write_bytes(broken)
    counter = SkipCounter()
    frame = index_shards([path], counter)
    skipped: dict[str, int] = {}
    streamed = [k for k, _ in shard_images(path, ("jpg",), skipped)]
    assert list(frame["key"]) == streamed == ["s0", "s1"]
    assert counter.as_dict()["corrupt_shard"] == 1 and skipped == {"corrupt_shard": 1}
