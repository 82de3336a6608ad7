"""Stage wiring that the end-to-end test does not reach: the real-profile CLIP import, the
cluster dry run, and clear errors."""

from __future__ import annotations

import json

import pytest

from cocu.__main__ import main as cli
from pipelines import teacher

from .conftest import REPO, write_params


def test_teacher_imports_a_pretrained_weights_file(tmp_path):
    """The real profile's teacher stage checks OpenAI's release format against clip.arch and imports it."""
    import hashlib

    import torch

    from cocu.clip.model import IMPORT_KEY
    from cocu.rehearsal import write_openai_torchscript
    from tests.test_clip_import import QUICK

    _register_tiny_archs(tmp_path)
    weights = write_openai_torchscript(tmp_path / "ViT-B-16.pt", QUICK)
    params = write_params(tmp_path, clip={"source": "pretrained", "arch": QUICK, "weights_file": str(weights)})
    teacher.main(params)
    assert json.loads((tmp_path / "metrics" / "teacher.json").read_text()) == {}  # DVC metrics: nothing measured
    loaded = json.loads((tmp_path / "metrics" / "details" / "teacher.json").read_text())["metrics"]
    assert loaded["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert loaded["format"] == "openai-torchscript" and loaded["activation"] == "QuickGELU"
    record = torch.load(tmp_path / "data" / "teacher" / "clip.pt", weights_only=True)[IMPORT_KEY]
    assert record["source_sha256"] == loaded["weights_sha256"] and record["arch"] == QUICK


def test_teacher_refuses_openai_weights_for_a_gelu_arch(tmp_path, caplog):
    from cocu.rehearsal import write_openai_torchscript
    from tests.test_clip_import import GELU, QUICK

    _register_tiny_archs(tmp_path)
    weights = write_openai_torchscript(tmp_path / "ViT-B-16.pt", QUICK)
    params = write_params(tmp_path, clip={"source": "pretrained", "arch": GELU, "weights_file": str(weights)})
    with pytest.raises(SystemExit) as done:  # as the DVC stage runs it: one line, status 2, no traceback
        run_stage_cli(teacher.main, params)
    assert done.value.code == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert str(weights) in record.getMessage() and f"set clip.arch: {QUICK}" in record.getMessage()
    assert record.exc_info is None
    assert not (tmp_path / "data" / "teacher" / "clip.pt").exists()


def _register_tiny_archs(tmp_path):
    import open_clip

    from tests.test_clip_import import GELU, QUICK, TINY_CFG

    for name, extra in ((GELU, {}), (QUICK, {"quick_gelu": True})):
        (tmp_path / f"{name}.json").write_text(json.dumps({**TINY_CFG, **extra}))
        open_clip.add_model_config(tmp_path / f"{name}.json")


def run_stage_cli(main, params):
    import sys

    from cocu.stage import run_stage

    argv, sys.argv = sys.argv, ["stage", "--params", str(params)]
    try:
        run_stage(main, None)
    finally:
        sys.argv = argv


def test_teacher_missing_weights_file_names_the_key(tmp_path):
    params = write_params(tmp_path, clip={"source": "pretrained", "weights_file": str(tmp_path / "nope.pt")})
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*clip\.weights_file"):
        teacher.main(params)


def test_teacher_checksum_mismatch(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"abc")
    params = write_params(tmp_path, clip={"source": "pretrained", "weights_file": str(weights),
                                          "expected_sha256": "0" * 64})
    with pytest.raises(ValueError, match="expected"):
        teacher.main(params)


def test_dry_run_prints_the_paper_sbatch_scripts(capsys):
    assert cli(["launch", "--dry-run", "--profile", "paper-cc3m", "--params", str(REPO / "params.yaml"),
                "--folder", str(REPO / "profiles")]) == 0
    out = capsys.readouterr().out
    blocks = out.split("# ---- ")[1:]
    names = [b.split(" ", 1)[0] for b in blocks]
    assert names[:5] == ["pairs", "embed", "index", "curate", "evaluate"]
    assert "pretrain-cocu-s0" in names and "pretrain-baseline-s0" in names
    embed, pretrain = blocks[1], blocks[names.index("pretrain-cocu-s0")]
    assert "#SBATCH --nodes=1" in embed and "#SBATCH --gpus-per-node=1" in embed
    assert "array of 4 task(s)" in embed and "#SBATCH --array=0-3%4" in embed  # launcher.stages.embed.tasks
    assert "gpus-per-node" not in blocks[0] and "#SBATCH --array=0-15%16" in blocks[0]  # pairs: CPU tasks
    for line in ("#SBATCH --nodes=4", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --signal=USR2@120", "#SBATCH --partition=gpu", "#SBATCH --requeue"):
        assert line in pretrain
