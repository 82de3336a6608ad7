"""cocu.clip.embed: row order = manifest order, unit norm float16, determinism, clear mismatch errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cocu.clip.embed import (
    ManifestMismatch,
    embed_concepts,
    embed_pairs,
    embed_texts,
    read_concept_names,
    read_manifest_keys,
    write_concept_embeddings,
)
from cocu.clip.model import load_clip
from cocu.data import manifest
from cocu.data.shards import SkipCounter, iter_samples
from cocu.data.shards import RawSample, write_shards
from tests.test_clip_model import TINY, make_raw_samples, make_shards

CPU = torch.device("cpu")


@pytest.fixture
def clip():
    torch.manual_seed(0)
    model, _, pre_val, tok, _ = load_clip(TINY, None)
    return model, pre_val, tok


def _corpus(tmp_path: Path, n: int = 20) -> tuple[list[Path], Path]:
    shards = make_shards(tmp_path, n, shard_size=6)
    frame = manifest.index_shards(shards, SkipCounter())
    path = tmp_path / "manifest.parquet"
    manifest.write_manifest(frame, path)
    return shards, path


def _embed(clip, shards, keys, out: Path, batch_size: int = 7) -> tuple[np.ndarray, np.ndarray]:
    model, pre_val, tok = clip
    stats = embed_pairs(model, pre_val, tok, iter_samples(shards), keys, out / "img.npy", out / "txt.npy",
                        batch_size, CPU)
    assert stats.rows == len(keys) and stats.dim == TINY.embed_dim
    assert not list(out.glob("*.tmp.npy"))
    return np.load(out / "img.npy"), np.load(out / "txt.npy")


def test_rows_follow_manifest_order(tmp_path: Path, clip) -> None:
    shards, path = _corpus(tmp_path)
    keys = read_manifest_keys(path)
    img, txt = _embed(clip, shards, keys, tmp_path / "emb")
    assert img.dtype == np.float16 and txt.dtype == np.float16 and img.shape == (20, TINY.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(txt.astype(np.float32), axis=1), 1.0, atol=2e-3)
    model, pre_val, tok = clip
    rows = {s.key: s for s in iter_samples(shards)}
    with torch.no_grad():
        for i in (0, 5, 13, 19):
            s = rows[keys[i]]
            e_img = model.encode_image(pre_val(s.image)[None], normalize=True)[0].numpy()
            e_txt = model.encode_text(tok([s.caption]), normalize=True)[0].numpy()
            np.testing.assert_allclose(img[i].astype(np.float32), e_img, atol=2e-3)
            np.testing.assert_allclose(txt[i].astype(np.float32), e_txt, atol=2e-3)
    assert not np.allclose(img[0], img[1], atol=1e-3)


def test_same_inputs_give_identical_bytes(tmp_path: Path, clip) -> None:
    shards, path = _corpus(tmp_path)
    keys = read_manifest_keys(path)
    _embed(clip, shards, keys, tmp_path / "a")
    _embed(clip, shards, keys, tmp_path / "b")
    for name in ("img.npy", "txt.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_manifest_key_missing_from_shards_raises(tmp_path: Path, clip) -> None:
    shards, path = _corpus(tmp_path, n=10)
    keys = read_manifest_keys(path)
    with pytest.raises(ManifestMismatch, match="'s00003'.*missing"):
        _embed(clip, shards, keys[:3] + ["s00003"] + keys[3:], tmp_path / "e1")  # s00003 twice: 2nd missing
    with pytest.raises(ManifestMismatch, match="'zz'"):
        _embed(clip, shards, keys + ["zz"], tmp_path / "e2")  # shards end early
    with pytest.raises(ManifestMismatch, match="beyond"):
        _embed(clip, shards, keys[:-1], tmp_path / "e3")  # shards have an extra sample
    swapped = keys[:2] + [keys[3], keys[2]] + keys[4:]
    with pytest.raises(ManifestMismatch, match="row 2 key 's00003'"):
        _embed(clip, shards, swapped, tmp_path / "e4")
    assert not list((tmp_path / "e1").glob("*.npy"))  # no partial output left behind


def test_corrupt_sample_in_shards_is_an_error_naming_its_key(tmp_path: Path, clip) -> None:
    shards, path = _corpus(tmp_path, n=10)
    keys = read_manifest_keys(path)
    # truncate the JPEG of s00002 inside the first shard
    members = []
    with tarfile.open(shards[0]) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()
            members.append((m, data[:40] if m.name == "s00002.jpg" else data))
    with tarfile.open(shards[0], "w") as tar:
        for m, data in members:
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    with pytest.raises(ManifestMismatch, match="'s00002' is missing"):
        _embed(clip, shards, keys, tmp_path / "e")


def test_concept_embeddings_and_names(tmp_path: Path, clip) -> None:
    model, _, tok = clip
    names = ["cat", "traffic light", "sky"]
    emb = embed_concepts(model, tok, names, "a photo of a {}", batch_size=2, device=CPU)
    direct = embed_texts(model, tok, ["a photo of a cat", "a photo of a traffic light", "a photo of a sky"], 8, CPU)
    assert emb.dtype == np.float16 and emb.shape == (3, TINY.embed_dim)
    np.testing.assert_array_equal(emb, direct)
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=2e-3)
    write_concept_embeddings(names, emb, tmp_path / "c.npy", tmp_path / "c.txt")
    assert read_concept_names(tmp_path / "c.txt") == names
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), emb)
    with pytest.raises(ValueError):
        write_concept_embeddings(names[:2], emb, tmp_path / "d.npy", tmp_path / "d.txt")


def test_repeated_key_in_shards_is_skipped_like_the_manifest_does(tmp_path: Path, clip) -> None:
    raw = make_raw_samples(6)
    raw.insert(4, RawSample(key=raw[1].key, image=raw[5].image, caption="a duplicate"))
    shards = write_shards(raw, tmp_path / "shards", 3)
    frame = manifest.index_shards(shards, SkipCounter())
    keys = list(frame["key"])
    assert keys == [f"s{i:05d}" for i in range(6)]
    model, pre_val, tok = clip
    stats = embed_pairs(model, pre_val, tok, iter_samples(shards), keys, tmp_path / "i.npy", tmp_path / "t.npy", 4, CPU)
    assert stats.duplicates == 1
    ref, _ = _embed(clip, make_shards(tmp_path / "ref", 6), keys, tmp_path / "ref")
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy"), ref)  # the first copy is the one embedded


def test_embed_corpus_writes_all_outputs(tmp_path: Path) -> None:
    import dataclasses

    from cocu.clip.jobs import EmbedInputs, embed_corpus
    from cocu.clip.model import build_tiny_clip, save_weights
    from tests.test_scaleout import REPO_PARAMS, launcher

    shards, path = _corpus(tmp_path, n=9)
    weights = tmp_path / "clip.pt"
    digest = save_weights(build_tiny_clip(TINY), weights)
    out = tmp_path / "emb"
    inputs = EmbedInputs(manifest=path, shards=tuple(shards), weights=weights, clip=TINY,
                         embed=dataclasses.replace(REPO_PARAMS.embed, batch_size=4), image_keys=("jpg",),
                         caption_key="txt",
                         concepts=("red", "traffic cone"), image_out=out / "img.npy", text_out=out / "txt.npy",
                         concept_out=out / "c.npy", names_out=out / "c.txt")
    metrics = embed_corpus(inputs, launcher())
    assert metrics["rows"] == 9 and metrics["concepts"] == 2 and metrics["weights_sha256"] == digest
    assert metrics["units"] == 2 and metrics["units_reused"] == 0  # one unit per shard file
    assert np.load(out / "img.npy").shape == (9, TINY.embed_dim) and np.load(out / "c.npy").shape == (2, TINY.embed_dim)
    assert read_concept_names(out / "c.txt") == ["red", "traffic cone"]
    assert sorted(p.name for p in out.iterdir()) == ["c.npy", "c.txt", "img.npy", "txt.npy"]  # no partial folder


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_cpu(tmp_path: Path, clip) -> None:
    shards, path = _corpus(tmp_path, n=8)
    keys = read_manifest_keys(path)
    cpu_img, cpu_txt = _embed(clip, shards, keys, tmp_path / "cpu")
    model, pre_val, tok = clip
    embed_pairs(model, pre_val, tok, iter_samples(shards), keys, tmp_path / "g.npy", tmp_path / "gt.npy", 4,
                torch.device("cuda"), autocast=True)
    np.testing.assert_allclose(np.load(tmp_path / "g.npy").astype(np.float32), cpu_img.astype(np.float32), atol=2e-2)
    np.testing.assert_allclose(np.load(tmp_path / "gt.npy").astype(np.float32), cpu_txt.astype(np.float32), atol=2e-2)
    model.cpu()
