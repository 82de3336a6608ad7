"""Benchmark: the N-sized stages as SLURM job arrays of 1, 2 and 4 tasks, smoke-sized.

    python benchmarks/scaleout.py                   # on the local SLURM (scripts/slurm_up.sh)
    python benchmarks/scaleout.py --tasks 1 2 4 8 --partition debug --keep /tmp/scaleout

Runs the real stage scripts (`python pipelines/<stage>.py --params ...`, as `dvc repro` does) on
the synthetic world at smoke size with `launcher.cluster: slurm` and `launcher.stages.<stage>.tasks`
= 1, 2, 4 (one task per CPU core, 1 GB). Shards, curation shards, index blocks and search batches
are made small so that every split has work to share. The stages that do not grow with N
(`benchmarks`, `teacher`, `pretrain`) run once, before the first split's `embed` and `evaluate`,
and every split reads their outputs. Prints the wall time of each stage for each split, and
whether each split's outputs are the same bytes as the 1-task run's (pairs: both manifests;
embed: image, caption and concept embeddings; index: neighbour ids and similarities; curate: the
archive shards; evaluate: the result files and overlays).

The wall times include SLURM's scheduling and each job's Python start-up (imports of torch etc.),
which dominate at smoke size; on a 2-core machine at most 2 one-core tasks run at once, so 4 tasks
cannot be faster than 2. What the table shows is that the split changes no output byte.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCALED = ("pairs", "embed", "index", "concepts", "curate", "evaluate")  # concepts: not split (curate needs it)
ONCE = {"embed": ("benchmarks", "teacher"), "evaluate": ("pretrain",)}  # before the first split's stage
COMMON = ("benchmarks_root", "clip_weights", "teacher_metrics", "benchmarks_metrics", "runs", "checkpoints",
          "pretrain_metrics")  # paths written once and read by every split


def outputs(stage: str, paths: dict) -> dict[str, bytes]:
    """The files whose bytes must not depend on the split (relative name -> bytes)."""
    def tree(folder: str, pattern: str) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob(pattern))
                if p.is_file()}

    def named(*keys: str) -> dict[str, bytes]:
        return {k: Path(paths[k]).read_bytes() for k in keys}

    if stage == "pairs":
        return named("pairs_manifest", "teacher_manifest")
    if stage == "embed":
        return named("image_embeddings", "caption_embeddings", "concept_embeddings", "concept_names")
    if stage == "index":
        return named("neighbours", "neighbour_sims")
    if stage == "concepts":
        return named("caption_concepts")
    if stage == "curate":
        return tree(paths["archives"], "archive-*.parquet")
    return tree(str(Path(paths["results"]) / "baseline" / "s0"), "*")  # evaluate: results + overlays


def write_params(folder: Path, common: Path, tasks: int, partition: str) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    smoke = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    for section, values in smoke.items():
        raw[section].update(values)
    for key, value in raw["paths"].items():
        if value is None:
            continue
        if key in ("vocabulary", "synonyms", "paper_numbers"):
            raw["paths"][key] = str(REPO / value)
        else:
            raw["paths"][key] = str((common if key in COMMON else folder) / value)
    raw["world"]["shard_size"] = 16  # 96 pairs: 6 shard files (pairs and embed units)
    raw["curation"]["shard_size"] = 24  # 4 archive shards
    raw["index"].update(block_size=32, batch_size=32)  # 3 blocks of the exact search
    raw["pretrain"].update(variants=["baseline"], seeds=[0], threads=1)
    raw["eval"].update(threads=1)
    launcher = raw["launcher"]
    launcher.update(cluster="slurm", partition=partition, cpus_per_task=1, mem_gb=2, timeout_min=20,
                    signal_delay_s=60, folder=str(folder / "jobs"))
    for stage in launcher["stages"]:
        launcher["stages"][stage].update(tasks=tasks, cpus_per_task=1, mem_gb=2, timeout_min=20)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_stage(stage: str, params: Path, log: Path) -> float:
    cmd = [sys.executable, str(REPO / "pipelines" / f"{stage}.py"), "--params", str(params)]  # one run: baseline-s0
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write(f"\n==== {stage} ({params})\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"{stage} failed for {params} (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--partition", default=os.environ.get("COCU_SLURM_PARTITION", "debug"))
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp folder)")
    args = parser.parse_args()
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        sys.exit("no SLURM controller answers `scontrol ping` (start one with scripts/slurm_up.sh)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="cocu-scaleout-"))
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}", HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
                      PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    log = root / "stages.log"
    print(f"work folder {root}; stage logs in {log}; load average {os.getloadavg()[0]:.1f} (2 cores)", flush=True)
    splits = {t: write_params(root / f"tasks{t}", root / "common", t, args.partition) for t in args.tasks}
    wall: dict[tuple[str, int], float] = {}
    for stage in SCALED:
        for i, (tasks, params) in enumerate(splits.items()):
            if i == 0:
                for once in ONCE.get(stage, ()):
                    print(f"  {once} (once) ...", flush=True)
                    run_stage(once, params, log)
            wall[stage, tasks] = run_stage(stage, params, log)
            print(f"  {stage:9s} {tasks} task(s): {wall[stage, tasks]:6.1f} s", flush=True)
    paths = {t: yaml.safe_load(p.read_text())["paths"] for t, p in splits.items()}
    first = args.tasks[0]
    header = "| stage | " + " | ".join(f"{t} task{'s' * (t > 1)} (s)" for t in args.tasks) + " | outputs identical |"
    print("\n" + header + "\n|" + "---|" * (len(args.tasks) + 2))
    for stage in SCALED:
        ref = outputs(stage, paths[first])
        same = bool(ref) and all(outputs(stage, paths[t]) == ref for t in args.tasks[1:])
        label = ("yes" if same else "NO") + (" (not split)" if stage == "concepts" else "")
        print(f"| {stage} | " + " | ".join(f"{wall[stage, t]:.1f}" for t in args.tasks)
              + f" | {label}, {len(ref)} file{'s' * (len(ref) != 1)} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}. Wall times include SLURM scheduling and each "
          "job's start-up; on 2 cores at most 2 one-core tasks run at once.")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
