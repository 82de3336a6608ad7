"""Pretrained CLIP weights: the format and activation are read from the file, a mismatch with
`clip.arch` is refused naming the file, the arch and the fix; small files in each real format
(random weights, a tiny architecture registered in a GELU and a QuickGELU version)."""

from __future__ import annotations

import json
import open_clip
import pytest
import torch

from cocu.config import ClipConfig
from tests.conftest import section
from cocu.clip.model import (
    WeightsFormatError,
    import_weights,
    load_clip,
    load_pretrained,
    read_checkpoint,
)
from cocu.rehearsal import write_open_clip_state_dict, write_openai_state_dict, write_openai_torchscript

GELU, QUICK = "cocu-test-vit", "cocu-test-vit-quickgelu"
# widths of 64: OpenAI's state-dict builder (open_clip.load_openai_model) derives heads = width // 64
TINY_CFG = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 64,
                                            "patch_size": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}


@pytest.fixture(scope="module", autouse=True)
def tiny_archs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archs")
    for name, quick in ((GELU, False), (QUICK, True)):
        (folder / f"{name}.json").write_text(json.dumps({**TINY_CFG, **({"quick_gelu": True} if quick else {})}))
        open_clip.add_model_config(folder / f"{name}.json")


def _features(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return (model.encode_image(torch.randn(2, 3, 32, 32, generator=g)),
                model.encode_text(torch.randint(1, 49407, (2, 16), generator=g)))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # open_clip's OpenAI loader
def test_openai_torchscript_needs_a_quickgelu_arch(tmp_path):
    path = write_openai_torchscript(tmp_path / "ViT-tiny.pt", QUICK)
    info, _ = read_checkpoint(path)
    assert (info.format, info.quick_gelu) == ("openai-torchscript", True)
    model, _, _ = load_pretrained(QUICK, path)
    with pytest.raises(WeightsFormatError) as err:
        load_pretrained(GELU, path)
    message = str(err.value)
    assert str(path) in message and f"clip.arch {GELU} builds GELU" in message
    assert f"Fix: set clip.arch: {QUICK}" in message and "QuickGELU" in message
    # the file really is what open_clip loads as an OpenAI release, and it gives our model's embeddings
    reference = open_clip.load_openai_model(str(path), device="cpu", precision="fp32")
    for ours, theirs in zip(_features(model), _features(reference)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_a_gelu_torchscript_is_refused_for_a_quickgelu_arch(tmp_path):
    path = write_openai_torchscript(tmp_path / "gelu.pt", GELU)
    assert read_checkpoint(path)[0].quick_gelu is False
    load_pretrained(GELU, path)
    with pytest.raises(WeightsFormatError, match=f"trained with GELU.*Fix: set clip.arch: {GELU} "):
        load_pretrained(QUICK, path)


def test_openai_state_dict_is_quickgelu(tmp_path):
    path = write_openai_state_dict(tmp_path / "openai_sd.pt", QUICK)
    info, state = read_checkpoint(path)
    assert (info.format, info.quick_gelu) == ("openai-state-dict", True)
    assert "input_resolution" not in state
    load_pretrained(QUICK, path)
    with pytest.raises(WeightsFormatError, match="OpenAI state dict trained with QuickGELU"):
        load_pretrained(GELU, path)


def test_open_clip_state_dict_reads_its_config_or_is_refused(tmp_path):
    with_config = write_open_clip_state_dict(tmp_path / "hub" / "open_clip_pytorch_model.bin", GELU)
    info, _ = read_checkpoint(with_config)
    assert (info.format, info.quick_gelu) == ("open_clip-state-dict", False)
    load_pretrained(GELU, with_config)
    with pytest.raises(WeightsFormatError, match="open_clip_config.json: model_cfg.quick_gelu = False"):
        load_pretrained(QUICK, with_config)
    bare = write_open_clip_state_dict(tmp_path / "bare" / "weights.pt", GELU, config=False)
    for arch in (GELU, QUICK):
        with pytest.raises(WeightsFormatError, match="records no activation.*open_clip_config.json"):
            load_pretrained(arch, bare)


def test_weights_of_another_shape_are_named(tmp_path):
    other = dict(TINY_CFG, embed_dim=16)
    (tmp_path / "cocu-test-other.json").write_text(json.dumps(other))
    open_clip.add_model_config(tmp_path / "cocu-test-other.json")
    path = write_open_clip_state_dict(tmp_path / "w" / "model.pt", "cocu-test-other")
    with pytest.raises(WeightsFormatError, match=r"do not fit clip.arch cocu-test-vit: .*of other shape"):
        load_pretrained(GELU, path)
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    with pytest.raises(WeightsFormatError, match="not a readable weights file"):
        read_checkpoint(tmp_path / "junk.pt")


def test_import_records_the_check_and_later_loads_agree(tmp_path):
    source = write_openai_torchscript(tmp_path / "ViT-tiny.pt", QUICK)
    cfg = section(ClipConfig, "clip", source="pretrained", weights_file="clip.pt", arch=QUICK)
    metrics = import_weights(cfg, source, tmp_path / "data" / "clip.pt")
    assert metrics["format"] == "openai-torchscript" and metrics["activation"] == "QuickGELU"
    imported, _, _, _, _ = load_clip(cfg, tmp_path / "data" / "clip.pt")
    direct, _, _ = load_pretrained(QUICK, source)
    for a, b in zip(_features(imported), _features(direct)):
        assert torch.equal(a, b)
    with pytest.raises(WeightsFormatError, match="imported for clip.arch"):
        load_clip(section(ClipConfig, "clip", source="pretrained", weights_file="clip.pt", arch=GELU), tmp_path / "data" / "clip.pt")
    # clip.expected_sha256 names the source file; the imported file carries its checksum
    ok = section(ClipConfig, "clip", source="pretrained", weights_file="clip.pt", arch=QUICK, expected_sha256=metrics["weights_sha256"])
    load_clip(ok, tmp_path / "data" / "clip.pt")
    with pytest.raises(ValueError, match="expected"):
        load_clip(section(ClipConfig, "clip", source="pretrained", weights_file="clip.pt", arch=QUICK, expected_sha256="0" * 64), tmp_path / "data" / "clip.pt")
    with pytest.raises(WeightsFormatError, match=f"Fix: set clip.arch: {QUICK}"):
        import_weights(section(ClipConfig, "clip", source="pretrained", weights_file="clip.pt", arch=GELU), source, tmp_path / "data" / "again.pt")
    assert not (tmp_path / "data" / "again.pt").exists()
