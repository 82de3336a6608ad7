"""Resumable outputs are reused only when made by the same code (cocu/provenance.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cocu.provenance as provenance
import cocu.training.pretrain as pretrain
from cocu.config import load_params

REPO = Path(__file__).resolve().parents[1]


def test_source_digest_follows_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    (tmp_path / "mod.py").write_text("y = 2\n")
    monkeypatch.setattr(provenance, "PACKAGE", tmp_path)
    first = provenance.source_digest("pkg", "mod.py")
    assert provenance.source_digest("pkg", "mod.py") == first  # deterministic
    (tmp_path / "pkg" / "notes.txt").write_text("other")
    assert provenance.source_digest("pkg", "mod.py") == first  # only .py files count
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    edited = provenance.source_digest("pkg", "mod.py")
    assert edited != first
    (tmp_path / "pkg" / "b.py").write_text("")
    assert provenance.source_digest("pkg", "mod.py") != edited  # a new module counts, even empty
    with pytest.raises(FileNotFoundError, match="nope"):
        provenance.source_digest("nope")


def test_real_packages_have_a_digest() -> None:
    assert provenance.source_digest("concepts") != provenance.source_digest("training")


def test_pretraining_fingerprint_includes_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    params = load_params(REPO / "params.yaml")
    before = pretrain.fingerprint(params, "cocu", 0, [])
    assert pretrain.fingerprint(params, "cocu", 0, []) == before
    monkeypatch.setattr(pretrain, "source_digest", lambda *parts: "edited code")
    assert pretrain.fingerprint(params, "cocu", 0, []) != before
