""".ci/run checks the free disk before it installs anything: with too little, it stops at once with the
numbers and the file system, instead of failing half-way through pip with ENOSPC."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ci_copy(tmp_path: Path, free_kib: int, *, venv_installed: bool) -> tuple[Path, dict[str, str]]:
    """A copy of .ci/run in a folder of its own, with `df` answering `free_kib` available and `make`
    recording that it ran (so a check that lets the run through is seen, and nothing is installed)."""
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
    (bin_dir / "df").write_text(
        "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f"echo 'fake 100000000 1 {free_kib} 1% /'\n")
    (bin_dir / "make").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'make_ran'}\n")
    for tool in ("df", "make"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
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
