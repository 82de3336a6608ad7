"""Stage wiring that the end-to-end test does not reach: the real-profile CLIP import, the
cluster dry run, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cocu.__main__ import main as cli
from pipelines import teacher

from .conftest import REPO, write_params


def test_teacher_imports_a_pretrained_weights_file(tmp_path):
    weights = tmp_path / "ViT-B-16.pt"
    weights.write_bytes(b"not really weights, but bytes with a checksum")
    params = write_params(tmp_path, clip={"source": "pretrained", "weights_file": str(weights)})
    teacher.main(params)
    loaded = json.loads((tmp_path / "metrics" / "teacher.json").read_text())["metrics"]
    import hashlib

    assert loaded["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (tmp_path / "data" / "teacher" / "clip.pt").read_bytes() == weights.read_bytes()


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
