"""The rehearsal: the paper profile end to end on real-shaped data, as a user runs it (a fresh copy
of the repo, docs/paper_profile.md's commands, `dvc repro` on SLURM), with the external data folder
read-only and compared file by file before and after (root ignores permissions)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cocu import profiles
from cocu.config import Params, flatten, from_dict
from cocu.rehearsal import SOURCES, listing, write_gallery, write_img2dataset

from .conftest import REPO

PAPER = "paper-cc3m-cc12m-yfcc14m"


def _marked_keys(path: Path) -> set[str]:
    """Dotted keys whose line (or a parent's line) carries a `# rehearsal` comment."""
    marked, stack = set(), []
    for line in path.read_text().splitlines():
        body = line.split("#", 1)[0]
        if not body.strip() or ":" not in body or body.lstrip().startswith("-"):
            continue
        indent = len(body) - len(body.lstrip())
        key = body.strip().split(":", 1)[0].strip()
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        if "# rehearsal" in line:
            marked.add(".".join(k for _, k in stack))
    return marked


def test_rehearsal_profile_is_the_paper_profile_with_sizes_shrunk():
    """Every key of the paper profile is in the rehearsal profile, and only the keys marked
    `# rehearsal` differ; the model keeps the paper's shapes."""
    paper = flatten(yaml.safe_load((REPO / "profiles" / f"{PAPER}.yaml").read_text()))
    rehearsal_file = REPO / "profiles" / "rehearsal.yaml"
    rehearsal = flatten(yaml.safe_load(rehearsal_file.read_text()))
    marked = _marked_keys(rehearsal_file)
    assert set(paper) <= set(rehearsal), set(paper) - set(rehearsal)
    differ = {k for k in rehearsal if paper.get(k, object()) != rehearsal[k]}
    unmarked = {k for k in differ if not any(k == m or k.startswith(m + ".") for m in marked)}
    assert not unmarked, f"rehearsal keys that differ from {PAPER} without a `# rehearsal` mark: {unmarked}"
    params = from_dict(Params, profiles.compose(REPO / "params.yaml", "rehearsal", REPO / "profiles"))
    image, text = params.model.image, params.model.text
    assert (image.img_size, image.patch_size, image.num_group_tokens, image.num_output_groups) == \
        (224, 16, (64, 8, 0), (64, 8))
    assert (text.context_length, text.vocab_size) == (77, 49408)
    assert params.clip.arch == "ViT-B-16-quickgelu" and params.launcher.cluster == "slurm"
    assert sorted(params.pairs.shards_glob) == sorted(SOURCES)
    assert all(p.startswith("../cocu-rehearsal/") for p in params.pairs.shards_glob.values())  # outside the repo


def test_listing_sees_content_mode_and_mtime_changes(tmp_path):
    write_img2dataset(tmp_path / "cc3m", "cc3m", n=3, per_shard=2)
    write_gallery(tmp_path / "vocabulary" / "gallery.json", ["cat", "hot dog"])
    before = listing(tmp_path)
    assert listing(tmp_path) == before
    assert {row[0] for row in before} >= {".", "cc3m", "cc3m/00000.tar", "cc3m/00000.parquet",
                                          "cc3m/00000_stats.json", "vocabulary/gallery.json"}
    tar = tmp_path / "cc3m" / "00001.tar"
    st = tar.stat()
    data = bytearray(tar.read_bytes())
    data[-1] ^= 1
    tar.write_bytes(bytes(data))
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the hash sees it
    assert listing(tmp_path) != before
    (tmp_path / "cc3m" / "extra").write_text("x")
    (tmp_path / "cc3m" / "extra").unlink()  # nothing left but the folder's mtime
    changed = {r[0] for r in set(listing(tmp_path)) ^ set(before)}
    assert changed == {"cc3m", "cc3m/00001.tar"}


# --------------------------------------------------------------------------------------------
# end to end


def _controller_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=10).returncode == 0


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _copy_repo(dest: Path) -> None:
    """The repo as a fresh clone of this checkout has it (tracked and new, not ignored, files)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git = ["git", "-c", "user.name=cocu rehearsal", "-c", "user.email=rehearsal@cocu.local"]
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], git + ["commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not _controller_up(), reason="no SLURM controller (`scontrol ping` failed; start one with "
                    "scripts/slurm_up.sh)")
def test_rehearsal_runs_end_to_end_on_slurm_and_never_touches_the_data(tmp_path):
    """docs/paper_profile.md section 7, as written, at CI size: data outside the repo (read-only),
    the vocabulary converted, the profile written, `dvc repro` through SLURM; then every output
    exists, all three colliding sources are kept, and the data folder is byte-for-byte unchanged."""
    data, repo = tmp_path / "cocu-rehearsal", tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the profile's default store, inside the copy
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _copy_repo(repo)
    _run([sys.executable, "-m", "cocu.rehearsal", str(data), "--pairs-per-source", "16", "--per-shard", "8"],
         repo, env)
    timings["data"] = time.perf_counter() - t0
    _run([sys.executable, "-m", "cocu.concepts.official", "../cocu-rehearsal/vocabulary/gallery.json",
          "configs/vocabulary/cocu_official.txt"], repo, env)
    partition = os.environ.get("COCU_SLURM_PARTITION")
    if partition:  # the doc's "edit launcher.partition"
        profile = repo / "profiles" / "rehearsal.yaml"
        profile.write_text(profile.read_text().replace("partition: debug", f"partition: {partition}"))
    _run([sys.executable, "-m", "cocu", "profile", "rehearsal", "--write"], repo, env)
    subprocess.run(["chmod", "-R", "a-w", str(data)], check=True)
    before = listing(data)
    try:
        t1 = time.perf_counter()
        _run(["dvc", "repro", "inputs"], repo, env)
        _run([sys.executable, "-m", "cocu", "launch", "--dry-run"], repo, env)
        out = _run(["dvc", "repro"], repo, env, timeout=1500)
        timings["dvc repro"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        again = _run(["dvc", "repro"], repo, env)
        timings["second dvc repro"] = time.perf_counter() - t2
        after = listing(data)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(data)], check=True)
    print(json.dumps({k: round(v, 1) for k, v in timings.items()}))
    assert after == before, "the pipeline wrote, moved or deleted something under the external data folder"
    assert before[0][0] == "." and len(before) > 100

    # the second run re-checks the inputs and re-runs nothing else
    ran = [line for line in again.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'inputs':"], ran

    # SLURM ran the GPU stages
    assert "submitted SLURM job" in out
    assert list((repo / "logs" / "submitit" / "embed").iterdir())

    # all three sources kept, keys and shard ids qualified, nothing written beside the data
    manifest = pd.read_parquet(repo / "data" / "pairs" / "manifest.parquet")
    assert len(manifest) == 48 and manifest["key"].is_unique
    assert manifest["key"].str.split("/").str[0].value_counts().to_dict() == {s: 16 for s in SOURCES}
    assert set(manifest["shard"].str.split("/").str[0]) == set(SOURCES)
    fingerprint = json.loads((repo / "data" / "inputs" / "pairs.json").read_text())
    assert fingerprint["count"] == 9 and all(e["path"].startswith("../cocu-rehearsal/") for e in fingerprint["shards"])
    assert not list((repo / "data" / "pairs" / "shards").iterdir())
    assert not list((repo / "data" / "benchmarks").iterdir())
    teacher = json.loads((repo / "metrics" / "details" / "teacher.json").read_text())["metrics"]
    assert (teacher["format"], teacher["activation"], teacher["arch"]) == \
        ("openai-torchscript", "QuickGELU", "ViT-B-16-quickgelu")

    # every benchmark evaluated for every variant, and the report built
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for variant in params["pretrain"]["variants"]:
        for bench in params["eval"]["active"]:
            result = json.loads((repo / "results" / variant / "s0" / f"{bench}.json").read_text())
            assert 0.0 <= result["mIoU"] <= 100.0 and result["num_images"] == 2
    assert (repo / "reports" / "results.md").is_file()


@pytest.mark.slow
def test_paper_profile_overrides_apply_through_dvc_exp_run(tmp_path):
    """`python -m cocu profile NAME --exp` passes the overlay to `dvc exp run -S`; a mapping-valued
    key that params.yaml holds as null (pairs.shards_glob) and brace patterns must reach params.yaml."""
    (tmp_path / "profiles").mkdir()
    shutil.copy(REPO / "profiles" / f"{PAPER}.yaml", tmp_path / "profiles")
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"pairs": base["pairs"], "clip": base["clip"]}))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"show": {
        "cmd": "cp params.yaml seen.yaml", "params": ["pairs", "clip"], "outs": [{"seen.yaml": {"cache": False}}]}}}))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], git + ["commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, env=env)
    items = [o for o in profiles.overrides(PAPER, tmp_path / "profiles", tmp_path / "params.yaml")
             if o.startswith(("pairs.", "clip."))]
    assert "pairs.shards_glob={cc3m: /datasets/cc3m/*.tar, cc12m: /datasets/cc12m/*.tar, " \
           "yfcc14m: /datasets/yfcc14m/*.tar}" in items
    items.append("pairs.caption_key='{odd}.txt'")  # a brace pattern in a plain string survives too
    _run(["dvc", "exp", "run", "-n", "p", *[a for o in items for a in ("-S", o)]], tmp_path, env)
    seen = yaml.safe_load((tmp_path / "seen.yaml").read_text())
    assert seen["pairs"]["shards_glob"] == {"cc3m": "/datasets/cc3m/*.tar", "cc12m": "/datasets/cc12m/*.tar",
                                           "yfcc14m": "/datasets/yfcc14m/*.tar"}
    assert seen["pairs"]["caption_key"] == "{odd}.txt" and seen["clip"]["arch"] == "ViT-B-16-quickgelu"
