"""`python -m cocu segment`: bad input is one clear error line naming the flag or file, not a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cocu.__main__ import main, read_image
from cocu.config import load_params

from .conftest import REPO


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    png = tmp_path / "scene.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(jpeg, format="JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image, whatever its name says\n")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"never loaded: every error below comes first")
    return {"png": png, "truncated": truncated, "text": text, "empty": _empty(tmp_path), "checkpoint": checkpoint}


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path / "empty.png"


def segment(image: Path, classes: str, checkpoint: Path, *extra: str) -> list[str]:
    return ["segment", str(image), "--classes", classes, "--checkpoint", str(checkpoint),
            "--params", str(REPO / "params.yaml"), *extra]


@pytest.mark.parametrize("classes", ["", " , ,", "background", "background, background"])
def test_no_class_to_segment_into_names_the_flag(files, capsys, classes):
    assert main(segment(files["png"], classes, files["checkpoint"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --classes") and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["text", "truncated", "empty"])
def test_a_file_that_is_not_an_image_names_the_file(files, capsys, kind):
    assert main(segment(files[kind], "sky,grass", files["checkpoint"])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {files[kind]}: not an image") and "Traceback" not in err


def test_missing_image_checkpoint_params_and_protocol_are_named(files, tmp_path, capsys):
    assert main(segment(tmp_path / "nope.png", "sky", files["checkpoint"])) == 2
    assert f"image not found: {tmp_path / 'nope.png'}" in capsys.readouterr().err
    assert main(segment(files["png"], "sky", tmp_path / "nope.pt")) == 2
    assert capsys.readouterr().err.startswith(f"error: --checkpoint: file not found: {tmp_path / 'nope.pt'}")
    args = segment(files["png"], "sky", files["checkpoint"])
    args[args.index("--params") + 1] = str(tmp_path / "missing.yaml")
    assert main(args) == 2
    assert str(tmp_path / "missing.yaml") in capsys.readouterr().err
    assert main(segment(files["png"], "sky", files["checkpoint"], "--protocol", "voc_typo")) == 2
    assert "eval.benchmarks.voc_typo" in capsys.readouterr().err


def test_read_image_returns_rgb_uint8(files):
    image = read_image(files["png"])
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8


def test_segment_image_refuses_no_class_before_loading_the_model(tmp_path):
    from cocu.eval.evaluate import segment_image

    params = load_params(REPO / "params.yaml")
    card = params.eval.benchmarks["synth_things"]  # a card with a background class
    image = np.zeros((8, 8, 3), np.uint8)
    missing = tmp_path / "not-loaded.pt"  # a FileNotFoundError would mean the model was loaded first
    with pytest.raises(ValueError, match="no class to segment into"):
        segment_image(image, [], missing, card, params.data.mean, params.data.std)
    with pytest.raises(ValueError, match="besides background"):
        segment_image(image, ["background"], missing, card, params.data.mean, params.data.std)
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        segment_image(np.zeros((8, 8), np.uint8), ["sky"], missing, card, params.data.mean, params.data.std)
