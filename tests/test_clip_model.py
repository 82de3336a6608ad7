"""cocu.clip.model: tiny CLIP, local weights files (never a download), checksums, preprocessing."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from cocu.config import ClipConfig
from cocu.clip.model import ChecksumError, build_tiny_clip, load_clip, save_weights, tiny_model_cfg
from cocu.clip.teacher import normalize_uint8
from cocu.data.shards import RawSample, write_shards

TINY = ClipConfig(
    source="synthetic", arch="ViT-B-16", weights_file=None, expected_sha256=None, image_size=16, embed_dim=32,
    vision_width=32, vision_layers=1, vision_head_width=16, patch_size=8, vision_pool="tok", text_width=32,
    text_layers=1, text_head_width=16, context_length=16,
)


def pretrained(arch: str) -> ClipConfig:
    """A `pretrained` config of `arch` (its weights file is only read by the teacher stage's import)."""
    return dataclasses.replace(TINY, source="pretrained", arch=arch, weights_file="clip.pt")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def make_raw_samples(n: int, size: int = 16, seed: int = 0) -> list[RawSample]:
    """`n` tiny pairs: a coloured square on noise, captioned with its colour."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    out = []
    for i in range(n):
        c = names[i % len(names)]
        img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        img[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = COLOURS[c]
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        out.append(RawSample(key=f"s{i:05d}", image=buf.getvalue(), caption=f"a {c} square number {i}"))
    return out


def make_shards(tmp_path: Path, n: int, shard_size: int = 8, size: int = 16) -> list[Path]:
    return write_shards(make_raw_samples(n, size), tmp_path / "shards", shard_size)


def _features(model: torch.nn.Module, tok, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        return model.encode_image(x), model.encode_text(tok(["a red square", "a blue square"]))


def test_local_weights_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, _, _, tok, digest = load_clip(TINY, None)
    assert digest is None
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)  # a different random init must be overwritten by the file
    loaded, _, _, tok2, digest = load_clip(TINY, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    for a, b in zip(_features(model, tok), _features(loaded, tok2)):
        assert torch.equal(a, b)
    assert not loaded.training


def test_missing_weights_file_names_path_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "clip.pt"
    for cfg in (TINY, pretrained("ViT-B-16")):
        with pytest.raises(FileNotFoundError, match="paths.clip_weights") as e:
            load_clip(cfg, missing)
        assert str(missing) in str(e.value)
    with pytest.raises(FileNotFoundError, match="paths.clip_weights"):
        load_clip(pretrained("ViT-B-16"), None)


def test_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    digest = save_weights(build_tiny_clip(TINY), path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not path.with_name("w.pt.tmp").exists()
    load_clip(ClipConfig(**{**TINY.__dict__, "expected_sha256": digest.upper()}), path)  # case-insensitive
    with pytest.raises(ChecksumError, match="expected"):
        load_clip(ClipConfig(**{**TINY.__dict__, "expected_sha256": "0" * 64}), path)


def test_pretrained_profile_loads_local_file_of_a_registered_arch(tmp_path: Path) -> None:
    """The pretrained path on a tiny registered architecture: open_clip state dicts as .pt and
    .safetensors both load (their open_clip_config.json beside them says GELU), with identical
    tensors; a hub schema is refused."""
    (tmp_path / "cocu-test-tiny.json").write_text(json.dumps(tiny_model_cfg(TINY)))
    open_clip.add_model_config(tmp_path / "cocu-test-tiny.json")
    torch.manual_seed(0)
    ref = build_tiny_clip(TINY)
    pt = tmp_path / "tiny.pt"
    torch.save(ref.state_dict(), pt)
    from safetensors.torch import save_file

    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(st))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_model_cfg(TINY)}))
    cfg = pretrained("cocu-test-tiny")
    for path in (pt, st):
        model, _, pre_val, tok, digest = load_clip(cfg, path)
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
        for a, b in zip(ref.state_dict().values(), model.state_dict().values()):
            assert torch.equal(a, b)
        assert pre_val(Image.new("RGB", (40, 30))).shape == (3, 16, 16)
        assert tok(["a cat"]).shape == (1, 16)
    with pytest.raises(ValueError, match="built-in"):
        load_clip(pretrained("hf-hub:someone/clip"), pt)


def test_val_preprocessing_matches_tensor_path() -> None:
    """open_clip's PIL preprocessing and the teacher's uint8-tensor path normalise identically."""
    _, _, pre_val, _, _ = load_clip(TINY, None)
    arr = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    a = pre_val(Image.fromarray(arr))
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    b = normalize_uint8(torch.from_numpy(arr)[None], mean, std)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_tiny_model_shapes() -> None:
    model, _, _, tok, _ = load_clip(TINY, None)
    img, txt = _features(model, tok)
    assert img.shape == (2, TINY.embed_dim) and txt.shape == (2, TINY.embed_dim)
    assert model.visual.image_size == (16, 16)
    assert tok(["x"]).shape == (1, TINY.context_length)
