"""The pre-training input pipeline: split per rank, determinism, resume, augmentation, tokens."""

from __future__ import annotations

import hashlib
import logging
import random
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from cocu.data.manifest import index_shards
from cocu.data.shards import RawSample, SkipCounter, encode_jpeg, list_shards, write_shards
from cocu.training.augment import NUM_UNIFORMS, augment, color_jitter, crop_boxes, erase_boxes
from cocu.training.checkpoint import capture_rng
from cocu.training.data import PretrainData, TokenCache, plan_split
from cocu.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from cocu.training.flat import KeyIndex, StringTable

T = 8  # context length of the stand-in tokenizer
K = 2
TINY = DataConfig(shuffle_buffer=16, streams=1, workers=0, split="auto", crop_scale=(0.5, 1.0), crop_ratio=(0.75, 4 / 3),
                  interpolation="bicubic", flip=True, color_jitter=0.4, random_erasing=0.25, mean=IMAGENET_MEAN,
                  std=IMAGENET_STD, token_cache=200_000, prefetch=2)


def fake_tokenizer(texts: list[str]) -> torch.Tensor:
    """Stand-in for open_clip's tokenizer: one id per word (crc32), zero padded to T."""
    out = torch.zeros(len(texts), T, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [zlib.crc32(w.encode()) % 1000 + 1 for w in text.split()][:T]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def fake_prompts(key: str, caption: str, rng: np.random.Generator) -> list[str]:
    return [caption, *[f"prompt {int(v)}" for v in rng.integers(0, 10**6, size=K)]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[Path], pd.DataFrame]:
    """70 valid 32x32 pairs in 7 shards of 10, plus one truncated JPEG that the manifest leaves out."""
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(71):
        image = encode_jpeg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), 90)
        if i == 33:
            image = image[: len(image) // 2]  # truncated: not in the manifest
        samples.append(RawSample(f"s{i:04d}", image, f"caption number {i}"))
    write_shards(samples, folder, shard_size=10)
    shards = list_shards(folder)
    manifest = index_shards(shards, SkipCounter())
    assert len(manifest) == 70 and "s0033" not in set(manifest["key"])
    return shards, manifest


def make(corpus, cfg: DataConfig = TINY, **kw) -> PretrainData:
    shards, manifest = corpus
    kw = {"image_size": 24, "batch_size": 4, "seed": 0, **kw}
    return PretrainData(shards, kw.pop("manifest", manifest), kw.pop("prompts", fake_prompts),
                        fake_tokenizer, cfg, **kw)


def keys_of(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


def take(data: PretrainData, start: int, stop: int) -> list[dict]:
    return list(data.make_batches(start, stop))


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["key"] == y["key"]
        for name in ("image", "text", "prompts"):
            assert torch.equal(x[name], y[name]), name


# ---------------------------------------------------------------------------------------------
# epoch plan


def test_plan_split_balances_shards_or_falls_back_to_samples():
    plan = plan_split([100] * 8, world_size=1, streams=2, batch_size=64)
    assert plan.mode == "shards" and plan.steps_per_epoch == 12  # 800 // 64
    assert sorted(s for slot in plan.shards_of_slot for s in slot) == list(range(8))
    assert [len(s) for s in plan.shards_of_slot] == [4, 4]
    few = plan_split([10] * 7, world_size=2, streams=1, batch_size=4)  # 40 / 30 samples by shard
    assert few.mode == "samples" and few.steps_per_epoch == 70 // 8
    forced = plan_split([10] * 7, world_size=2, streams=1, batch_size=4, mode="shards")
    assert forced.steps_per_epoch == 7  # the smaller rank fills only 30 // 4 batches
    with pytest.raises(ValueError, match="fewer than one global batch"):
        plan_split([3], world_size=2, streams=1, batch_size=4)


def test_epoch_length_comes_from_the_manifest(corpus):
    shards, manifest = corpus
    assert make(corpus).steps_per_epoch == 70 // 4
    assert make(corpus, world_size=2, rank=1).steps_per_epoch == 70 // 8
    data = make(corpus, manifest=manifest.iloc[:41])
    assert data.steps_per_epoch == 10 and data.samples_per_epoch == 40


# ---------------------------------------------------------------------------------------------
# split per rank, determinism, resume


@pytest.mark.parametrize("split", ["samples", "shards"])
def test_ranks_are_disjoint_and_equally_long(corpus, split):
    cfg = replace(TINY, split=split)
    ranks = [make(corpus, cfg, world_size=2, rank=r) for r in range(2)]
    steps = ranks[0].steps_per_epoch
    assert steps == ranks[1].steps_per_epoch == (8 if split == "samples" else 7)
    for epoch in range(2):
        per_rank = [keys_of(take(d, epoch * steps, (epoch + 1) * steps)) for d in ranks]
        assert [len(k) for k in per_rank] == [steps * 4] * 2
        assert all(len(set(k)) == len(k) for k in per_rank)  # no sample twice in an epoch
        assert not set(per_rank[0]) & set(per_rank[1])
        union = set(per_rank[0]) | set(per_rank[1])
        assert union <= set(corpus[1]["key"]) and len(union) == 70 - (70 - steps * 8)


def test_resume_equals_the_uninterrupted_stream(corpus):
    data = make(corpus)
    steps = data.steps_per_epoch
    stop = 2 * steps + 3
    full = take(data, 0, stop)
    for start in (5, steps, steps + 2):
        assert_same(take(data, start, stop), full[start:])
    assert_same(take(make(corpus), 0, 4), full[:4])  # a fresh object gives the same stream


def test_resume_with_two_worker_processes(corpus):
    data = make(corpus, replace(TINY, streams=2, workers=2))
    steps = data.steps_per_epoch
    assert steps == 17  # odd: the worker serving stream 0 changes at the epoch boundary
    full = take(data, 0, steps + 4)
    assert len(set(keys_of(full[:steps]))) == steps * 4
    assert_same(take(data, steps - 3, steps + 4), full[steps - 3:])


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_batches_do_not_depend_on_the_worker_count(corpus):
    """4 streams served in process, by 1, 2 (two streams each, interleaved) or 4 workers: the same
    batches, bit for bit, across an epoch boundary and from a resumed position."""
    in_process = take(make(corpus, replace(TINY, streams=4)), 0, 21)
    for workers in (1, 2, 4):  # (4 workers on a 2-core test machine: a warning, not an error)
        data = make(corpus, replace(TINY, streams=4, workers=workers))
        assert_same(take(data, 0, 21), in_process)
        assert_same(take(data, 15, 21), in_process[15:])  # resumed at an offset no worker count divides
    assert keys_of(in_process) != keys_of(take(make(corpus, replace(TINY, streams=2)), 0, 21))  # streams do


def test_a_worker_count_that_cannot_serve_the_streams_is_an_error(corpus):
    from cocu.config import ConfigError
    from cocu.training.data import check_workers

    for streams, workers in ((4, 3), (2, 4)):  # the config refuses it, naming both keys
        with pytest.raises(ConfigError, match=rf"workers = {workers}: cannot serve DataConfig.streams \({streams}\)"):
            replace(TINY, streams=streams, workers=workers)
    with pytest.raises(ConfigError, match="workers = -1: must be >= 0"):
        replace(TINY, workers=-1)
    with pytest.raises(ConfigError, match="streams = 0: must be >= 1"):
        replace(TINY, streams=0)
    with pytest.raises(ValueError, match=r"data.workers \(3\) cannot serve data.streams \(4\)"):
        check_workers(4, 3)  # the loader's own check of the workers that actually serve it


@pytest.mark.parametrize("workers", [0, 2])
def test_the_data_path_draws_nothing_from_the_global_rngs(corpus, workers):
    """Making the stream (at any position) and reading it leaves the training process's torch,
    numpy and Python RNGs untouched, so that a resumed run's RNG stream is the uninterrupted one's."""
    data = make(corpus, replace(TINY, streams=2, workers=workers))
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    before = capture_rng()
    for start in (0, 7):
        stream = data.make_batches(start)
        next(stream)
        next(stream)
        del stream
    after = capture_rng()
    assert torch.equal(before["torch"], after["torch"])
    assert torch.equal(before["numpy"]["key"], after["numpy"]["key"])
    assert before["numpy"]["pos"] == after["numpy"]["pos"]
    assert before["python"] == after["python"]


def _digest(batches: list[dict]) -> str:
    """The sample keys and the caption and prompt tokens of a batch sequence (exact integers)."""
    h = hashlib.sha256()
    for b in batches:
        h.update("\n".join(b["key"]).encode())
        h.update(b["text"].numpy().tobytes())
        h.update(b["prompts"].numpy().tobytes())
    return h.hexdigest()[:16]


# Recorded from the implementation that held keys and captions in Python lists and a dict (and
# took its streams from the worker count); the flat arrays must give the same batches.
@pytest.mark.parametrize("cfg, kw, expected", [
    (TINY, {}, "7db7812f8a7ced3a"),
    (replace(TINY, streams=2), {}, "9032dd6279af2cd1"),
    (replace(TINY, split="samples"), {"world_size": 2, "rank": 0}, "bbf295be7abf305f"),
    (replace(TINY, split="shards"), {"world_size": 2, "rank": 1}, "3152a7c58465c00a"),
])
def test_batches_equal_the_saved_expectations(corpus, cfg, kw, expected):
    data = make(corpus, cfg, **kw)
    assert _digest(take(data, 0, 2 * data.steps_per_epoch + 1)) == expected


def test_endless_stream_repeats_epochs(corpus):
    data = make(corpus)
    stream = data(0)  # the loop's BatchFactory call
    batches = [next(stream) for _ in range(2 * data.steps_per_epoch + 1)]
    first, second = keys_of(batches[: data.steps_per_epoch]), keys_of(batches[data.steps_per_epoch: -1])
    assert len(set(first)) == len(first) == len(set(second))
    assert first != second  # a new order each epoch
    assert_same(batches[-1:], take(data, 2 * data.steps_per_epoch, 2 * data.steps_per_epoch + 1))


def test_shuffle_is_seeded(corpus):
    steps = make(corpus).steps_per_epoch
    a = keys_of(take(make(corpus), 0, steps))
    assert a == keys_of(take(make(corpus), 0, steps))  # same seed, same order
    assert a != keys_of(take(make(corpus), steps, 2 * steps))  # another epoch, another order
    assert a != keys_of(take(make(corpus, seed=1), 0, steps))
    assert a != sorted(a)  # the buffer did shuffle


def test_bad_samples_are_skipped_and_counted(corpus, caplog):
    data = make(corpus, replace(TINY, split="shards"))
    with caplog.at_level(logging.WARNING, logger="cocu.training.data"):
        keys = keys_of(take(data, 0, data.steps_per_epoch))
    assert "s0033" not in keys
    assert "not_in_manifest" in caplog.text


def test_shards_short_of_the_manifest_is_an_error(corpus):
    shards, manifest = corpus
    ghosts = pd.DataFrame({"key": [f"ghost{i}" for i in range(8)], "shard": "000000.tar", "caption": "x"})
    data = make(corpus, manifest=pd.concat([manifest, ghosts], ignore_index=True))
    with pytest.raises(RuntimeError, match="fewer samples than the manifest"):
        take(data, 0, data.steps_per_epoch)
    with pytest.raises(FileNotFoundError, match="shards of the manifest"):
        PretrainData(shards[:3], manifest, fake_prompts, fake_tokenizer, TINY, image_size=24, batch_size=4)


# ---------------------------------------------------------------------------------------------
# per-key data as flat arrays


def test_per_key_data_is_held_in_flat_arrays(corpus):
    """No Python object per manifest row: forked DataLoader workers share numpy buffers, whereas
    touching a Python object (its refcount) copies its page into the worker."""
    data = make(corpus)
    n = data.num_rows
    assert n == 70
    for name, value in vars(data).items():
        if isinstance(value, (list, tuple, dict, set)):
            assert len(value) < n, name  # per shard only
    arrays = [data.row_shard, data.key_index.order, data.key_index.sorted, data.captions.offsets,
              data.captions.data]
    assert all(isinstance(a, np.ndarray) and a.dtype != object and not a.flags.writeable for a in arrays)
    manifest = corpus[1]
    assert [data.captions[i] for i in range(n)] == manifest["caption"].tolist()
    assert [data.key_index.find(k) for k in manifest["key"]] == list(range(n))


def test_manifest_as_an_arrow_table_gives_the_same_batches(corpus):
    table = pa.Table.from_pandas(corpus[1], preserve_index=False)
    assert_same(take(make(corpus, manifest=table), 0, 5), take(make(corpus), 0, 5))


def test_duplicate_manifest_keys_are_an_error(corpus):
    manifest = corpus[1]
    with pytest.raises(ValueError, match="manifest keys: 1 duplicate keys, e.g. 's0000'"):
        make(corpus, manifest=pd.concat([manifest, manifest.iloc[:1]], ignore_index=True))


def test_key_index_and_string_table():
    keys = ["b", "a", "ccc", "\u00e9t\u00e9", "", "ab"]
    chunked = pa.chunked_array([pa.array(["x"] + keys[:2]), pa.array(keys[2:])]).slice(1)
    for given in (keys, pd.Series(keys), chunked):
        index = KeyIndex(given)
        assert len(index) == 6 and list(index) == keys
        assert [index.find(k) for k in keys] == list(range(6))
        for absent in ("x", "cccc", "a\0", "\udcff", "\u00e9"):  # unknown, too long, NUL, not UTF-8, prefix
            assert index.find(absent) == -1 and absent not in index
        queries = ["ab", "zz", "cccc", "a\0", "\u00e9t\u00e9", "", "b" * 40]
        assert index.find_many(queries).tolist() == [5, -1, -1, -1, 3, 4, -1]
        table = StringTable(given)
        assert [table[i] for i in range(len(table))] == keys and table[-1] == "ab"
        with pytest.raises(IndexError):
            table[6]
    assert KeyIndex([]).find("a") == -1 and KeyIndex([]).find_many(["a"]).tolist() == [-1]
    with pytest.raises(ValueError, match="NUL"):
        KeyIndex(["a\0b"])
    with pytest.raises(ValueError, match="missing"):
        StringTable(pa.array(["a", None]))


# ---------------------------------------------------------------------------------------------
# batch contents


def test_batch_contents(corpus):
    batch = take(make(corpus), 0, 1)[0]
    assert batch["image"].shape == (4, 3, 24, 24) and batch["image"].dtype == torch.float32
    assert batch["text"].shape == (4, T) and batch["text"].dtype == torch.long
    assert batch["prompts"].shape == (4, K, T)
    captions = dict(zip(corpus[1]["key"], corpus[1]["caption"]))
    assert torch.equal(batch["text"], fake_tokenizer([captions[k] for k in batch["key"]]))
    plain = take(make(corpus, prompts=lambda key, caption, rng: [caption], with_keys=False), 0, 1)[0]
    assert set(plain) == {"image", "text"}


def test_prompts_are_seeded_per_epoch_and_key(corpus):
    seen: dict[str, list[str]] = {}

    def recording(key, caption, rng):
        texts = fake_prompts(key, caption, rng)
        seen.setdefault(key, []).append(texts[1])
        return texts

    one = make(corpus, prompts=recording)
    take(one, 0, 1)
    first = {k: v[-1] for k, v in seen.items()}
    other_order = make(corpus, replace(TINY, shuffle_buffer=0), prompts=recording)
    assert keys_of(take(other_order, 0, 1)) != list(first)
    take(other_order, 0, one.steps_per_epoch)
    assert all(seen[k][-1] == first[k] for k in first)  # same (seed, epoch, key): same prompts
    take(other_order, one.steps_per_epoch, 2 * one.steps_per_epoch)
    assert any(seen[k][-1] != first[k] for k in first)  # another epoch: new draws


def test_identity_crop_reproduces_the_image():
    images = [torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8) for _ in range(3)]
    u = np.random.default_rng(0).random((3, NUM_UNIFORMS))
    cfg = replace(TINY, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, color_jitter=0.0,
                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = augment(images, u, cfg, 20)
    torch.testing.assert_close(out, torch.stack(images).float() / 255, atol=1e-5, rtol=0)
    bilinear = augment(images, u, replace(cfg, interpolation="bilinear"), 20)
    torch.testing.assert_close(bilinear, out, atol=1e-5, rtol=0)
    u[:, 22] = 0.0  # flip all
    flipped = augment(images, u, replace(cfg, flip=True), 20)
    torch.testing.assert_close(flipped, out.flip(-1), atol=1e-5, rtol=0)


def test_crop_boxes_stay_inside_and_follow_the_scale():
    rng = np.random.default_rng(0)
    sizes = np.array([[40, 60]] * 500)
    boxes = crop_boxes(sizes, rng.random((500, NUM_UNIFORMS)), (0.3, 0.6), (0.75, 4 / 3))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    frac = h * w / (40 * 60)
    assert frac.min() > 0.25 and frac.max() < 0.65 and np.ptp(frac) > 0.2


def test_color_jitter_and_erasing_knobs():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(color_jitter(x.clone(), torch.ones(2, 3)), x)
    assert not torch.allclose(color_jitter(x.clone(), torch.full((2, 3), 1.4)), x)
    u = np.random.default_rng(0).random((200, NUM_UNIFORMS))
    assert (erase_boxes(32, u, 0.0)[:, 2] == 0).all()
    erased = erase_boxes(32, u, 0.25)[:, 2] > 0
    assert 0.1 < erased.mean() < 0.4


def test_token_cache_calls_the_tokenizer_once_per_text():
    calls: list[list[str]] = []

    def counting(texts):
        calls.append(list(texts))
        return fake_tokenizer(texts)

    cache = TokenCache(counting, maxsize=3)
    a = cache(["a b", "c", "a b"])
    assert a.shape == (3, T) and calls == [["a b", "c"]]
    np.testing.assert_array_equal(a, fake_tokenizer(["a b", "c", "a b"]).numpy())
    cache(["c", "a b"])
    assert len(calls) == 1
    cache(["d", "e"])  # evicts the least recently used
    assert len(cache.rows) == 3 and "c" not in cache.rows


def test_resized_crop_matches_torchvision_inside_the_crop():
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from cocu.training.augment import resized_crop

    image = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    ours = resized_crop([image], np.array([[3, 4, 10, 12]]), np.array([False]), 16, "bilinear")[0]
    ref = TF.resized_crop(image.float() / 255, 3, 4, 10, 12, [16, 16], InterpolationMode.BILINEAR,
                          antialias=False)
    inner = (slice(None), slice(1, -1), slice(1, -1))  # edge pixels: we pad at the image, they at the crop
    torch.testing.assert_close(ours[inner], ref[inner], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_data_memory_benchmark_runs(repo):
    """The memory benchmark's smoke run (the numbers themselves are measured, not asserted)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(repo / "benchmarks" / "data_memory.py"), "--sizes", "3000", "6000",
                          "--layouts", "flat", "objects"], check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(("flat ", "objects "))]
    assert [(r[0], r[1]) for r in rows] == [("flat", "3,000"), ("flat", "6,000"), ("objects", "3,000"),
                                            ("objects", "6,000")]
    assert "flat: marginal per pair" in out and "objects: marginal per pair" in out
