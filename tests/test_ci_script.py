""".ci/run checks the free disk before it installs anything: with too little, it stops at once with the
numbers and the file system, instead of failing half-way through pip with ENOSPC."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ci_copy(tmp_path: Path, free_kib: int, *, venv_installed: bool,
             tmp_free_kib: int | None = None) -> tuple[Path, dict[str, str]]:
    """A copy of .ci/run in a folder of its own, with `df` answering `free_kib` available and `make`
    recording that it ran (so a check that lets the run through is seen, and nothing is installed).
    With `tmp_free_kib`, $TMPDIR is another file system with that much available."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", repo / ".ci" / "run")
    (repo / ".ci" / "slurm.sh").write_text('#!/usr/bin/env bash\n"$@"\n')
    (repo / ".ci" / "slurm.sh").chmod(0o755)
    if venv_installed:
        (repo / ".venv").mkdir()
        (repo / ".venv" / ".installed").touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp_line = "fake" if tmp_free_kib is None else f"tmpfs 100000000 1 {tmp_free_kib} 1% /tmp"
    (bin_dir / "df").write_text(
        "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f"for last; do :; done\ncase \"$last\" in {tmp}) line='{tmp_line}' ;; *) line=fake ;; esac\n"
        f"[ \"$line\" = fake ] && line='fake 100000000 1 {free_kib} 1% /'\necho \"$line\"\n")
    (bin_dir / "make").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'make_ran'}\n")
    for tool in ("df", "make"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp)}
    return repo, env


@pytest.mark.parametrize("venv_installed, free_gib, runs", [
    (False, 3, False),   # a fresh clone: the venv (about 7 GiB) and the tests do not fit
    (False, 12, True),
    (True, 3, True),     # the venv is already there: the tests alone fit
    (True, 1, False),
])
def test_ci_checks_the_free_disk_before_installing(tmp_path: Path, venv_installed: bool, free_gib: int,
                                                   runs: bool) -> None:
    repo, env = _ci_copy(tmp_path, free_gib * 1024 * 1024, venv_installed=venv_installed)
    proc = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True,
                          timeout=60)
    if runs:
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "make_ran").read_text().strip() == "test"
    else:
        assert proc.returncode == 1
        assert not (tmp_path / "make_ran").exists()
        need = 2 if venv_installed else 9
        assert f".ci/run: {free_gib} GiB free on the file system of {repo}" in proc.stderr
        assert f"need about {need} GiB" in proc.stderr


@pytest.mark.parametrize("tmp_free_gib, runs, message", [
    (2, True, None),   # a small tmpfs /tmp holds the tests' folders; the venv goes beside the repo
    (1, False, "the tests need about 2 GiB"),
])
def test_ci_counts_a_separate_tmp_file_system_on_its_own(tmp_path: Path, tmp_free_gib: int, runs: bool,
                                                         message: str | None) -> None:
    repo, env = _ci_copy(tmp_path, 8 * 1024 * 1024, venv_installed=False, tmp_free_kib=tmp_free_gib * 1024 * 1024)
    proc = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == (0 if runs else 1), proc.stderr
    assert (tmp_path / "make_ran").exists() == runs
    if message:
        assert f".ci/run: {tmp_free_gib} GiB free on the file system of {tmp_path / 'tmp'}; {message}" in proc.stderr
