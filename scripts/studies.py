"""The two studies beyond the default pipeline, each a set of DVC experiments (`dvc exp run --temp`,
so the workspace keeps the default's outputs):

    python scripts/studies.py study         # `make study`: five variants x 8 seeds + the precision ablation,
                                            # its report in reports/study/ (results.md, tables, figures)
    python scripts/studies.py robustness    # `make robustness`: the settings below, 6-10 min each
    python scripts/studies.py table         # reports/robustness.md from the robustness experiments
    python scripts/studies.py study-report  # reports/study/ rebuilt from the last study's results with this
                                            # checkout's report code (seconds; no training)

Settings (cocu/reports/robustness.py says what is computed):
- `machine-avx2`, `machine-default`: the default pipeline re-run end to end with other float kernels
  (`ATEN_CPU_CAPABILITY=avx2` / `default` instead of the detected one) and other thread counts,
  as a fresh clone on another CPU would run it; every committed seed mean must be reproduced
  within its tolerance, and the paired conclusions must hold;
- `world-seed1`, `world-seed2`, `mention-0.35`, `mention-0.5`: other synthetic worlds (world seed,
  caption mention rate); the paired conclusions are reported for each, holding or not. (0.35, not
  0.3: every caption names at least one of the ~3 concepts present, so the lowest reachable
  rate is about 0.34; the world generator refuses 0.3 with that message.)

The committed default results are the reference (`metrics/eval/*.json` of the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cocu.config import flatten  # noqa: E402
from cocu.reports import robustness as R  # noqa: E402
from cocu.reports.comparisons import fmt_interval  # noqa: E402

# every setting is judged on its own, so it gets five training seeds (three left most settings'
# intervals across 0); a machine's reproduction check compares the committed seeds only
FIVE_SEEDS = "pretrain.seeds=[0,1,2,3,4]"
# name -> (environment, dvc exp run -S overrides, kind)
SETTINGS: dict[str, tuple[dict[str, str], list[str], str]] = {
    "machine-avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, ["pretrain.parallel=1", "pretrain.threads=2",
                                                       "teacher.threads=1", FIVE_SEEDS], "machine"),
    "machine-default": ({"ATEN_CPU_CAPABILITY": "default"}, ["eval.threads=2", FIVE_SEEDS], "machine"),
    "world-seed1": ({}, ["world.seed=1", FIVE_SEEDS], "world"),
    "world-seed2": ({}, ["world.seed=2", FIVE_SEEDS], "world"),
    "mention-0.35": ({}, ["world.mention_rate=0.35", FIVE_SEEDS], "world"),
    "mention-0.5": ({}, ["world.mention_rate=0.5", FIVE_SEEDS], "world"),
}
EXP_PREFIX = "robust-"
REPORT_ONLY = ("report.",)  # params that change how results are reported, never a result
STUDY = "study"
STUDY_OVERRIDES = ["pretrain.variants=[baseline,ranking,expansion,cocu,oracle,precision25,precision50,precision75,"
                   "precision100]", "pretrain.seeds=[0,1,2,3,4,5,6,7]", "paths.reports=reports/study"]


def study() -> None:
    """The study experiment, then its generated report (committed in the experiment) into the workspace."""
    cmd = ["dvc", "exp", "run", "--temp", "-n", STUDY]
    for o in STUDY_OVERRIDES:
        cmd += ["-S", o]
    print("== study:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    ref = exp_ref(STUDY)
    if ref is None:
        raise SystemExit("the study experiment left no ref (dvc exp show lists the experiments)")
    subprocess.run(["git", "checkout", ref, "--", "reports/study"], cwd=REPO, check=True)
    print(f"reports/study/ written from experiment {ref[:10]} (commit it to keep it)")


def _world_outputs(lock_text: str) -> dict[str, str]:
    """path -> md5 of the outputs of the stages that make the world, its archives and its benchmarks
    (what the report reads besides the runs' results) in a dvc.lock."""
    lock = yaml.safe_load(lock_text)["stages"]
    return {o["path"]: o.get("md5", "") for stage in ("pairs", "benchmarks", "curate")
            for o in lock.get(stage, {}).get("outs", [])}


def study_report() -> None:
    """reports/study/ rebuilt from the newest study experiment's results with this checkout's report
    code: the runs' results and metrics come from the experiment, the world (manifest, archives,
    benchmarks) from this workspace, which must hold the same files (dvc.lock digests)."""
    import shutil
    import tempfile

    ref = exp_ref(STUDY)
    if ref is None:
        raise SystemExit("no study experiment (run `make study` first)")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    differ = stale_keys(params, yaml.safe_load(_git("show", f"{ref}:params.yaml")), STUDY_OVERRIDES)
    if differ:
        raise SystemExit(f"study experiment {ref[:10]} was made with other params ({', '.join(differ[:5])}): "
                         "re-run `make study`")
    ours, theirs = _world_outputs((REPO / "dvc.lock").read_text()), _world_outputs(_git("show", f"{ref}:dvc.lock"))
    if ours != theirs:
        bad = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        raise SystemExit(f"the workspace's {', '.join(bad)} differ from study experiment {ref[:10]}'s "
                         "(`dvc repro` the default first, or re-run `make study`)")
    for key, value in _parse_overrides(STUDY_OVERRIDES):
        *parents, leaf = key.split(".")
        node = params
        for k in parents:
            node = node[k]
        node[leaf] = value
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "study"
        _git("worktree", "add", "--detach", str(work), "HEAD")
        try:
            ran = [params["paths"][k] for k in ("results", "details", "pretrain_metrics", "pretrain_curves")]
            subprocess.run(["git", "checkout", ref, "--", *ran], cwd=work, check=True)  # what the runs wrote
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            shutil.rmtree(work / "data", ignore_errors=True)  # tracked stubs only; the world is the workspace's
            (work / "data").symlink_to(REPO / "data")
            subprocess.run([sys.executable, "pipelines/report.py"], cwd=work, check=True,
                           env={**os.environ, "PYTHONPATH": str(work)})
            out = REPO / params["paths"]["reports"]
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(work / params["paths"]["reports"], out)
        finally:
            _git("worktree", "remove", "--force", str(work))
    print(f"{params['paths']['reports']}/ rebuilt from study experiment {ref[:10]}'s results (commit it to keep it)")


def run(names: list[str]) -> None:
    for name in names:
        env, overrides, _ = SETTINGS[name]
        cmd = ["dvc", "exp", "run", "--temp", "-f", "-n", EXP_PREFIX + name]
        for o in overrides:
            cmd += ["-S", o]
        print(f"== {name}: {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, check=True)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def exp_ref(name: str) -> str | None:
    """The commit of the newest experiment called `name` (DVC keeps experiments as git refs)."""
    for line in _git("for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)",
                     "refs/exps").splitlines():
        sha, ref = line.split(" ", 1)
        if ref.rsplit("/", 1)[-1] == name:
            return sha
    return None


def _parse_overrides(overrides: list[str]) -> list[tuple[str, object]]:
    """`-S key=value` overrides as (dotted key, YAML value), as DVC reads them."""
    return [(k, yaml.safe_load(v)) for k, v in (o.split("=", 1) for o in overrides)]


def stale_keys(current: dict, experiment: dict, overrides: list[str]) -> list[str]:
    """The dotted params keys where an experiment's params.yaml differs from `current` with the
    setting's `-S key=value` overrides applied: an experiment made before the default changed
    (another recipe) is stale and must not stand in the table for this checkout. The `report:`
    knobs are left out: they change how results are shown, never a result."""
    want = flatten(current)
    want.update(_parse_overrides(overrides))
    got = flatten(experiment)
    return sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k)
                  and not k.startswith(REPORT_ONLY))


def read_runs(rev: str | None, params: dict) -> R.Runs:
    """(variant, seed) -> benchmark -> mIoU from the `evaluate` stage's metrics at `rev` (None: workspace)."""
    folder = params["paths"]["eval_metrics"]
    runs = {}
    for s in params["pretrain"]["seeds"]:
        for v in params["pretrain"]["variants"]:
            rel = f"{folder}/{v}-s{s}.json"
            text = (REPO / rel).read_text() if rev is None else _git("show", f"{rev}:{rel}")
            data = json.loads(text)
            runs[(v, s)] = {k.removeprefix("mIoU/"): float(x) for k, x in data.items() if k.startswith("mIoU/")}
    return runs


def _per_seed(runs: R.Runs, variant: str) -> str:
    """'+8.3, +9.3, +5.9 (3 of 3 > 0)': the paired differences of each seed, mean over benchmarks."""
    diffs = R.differences(runs, variant)
    return ", ".join(f"{d:+.1f}" for d in diffs) + f" ({sum(d > 0 for d in diffs)} of {len(diffs)} > 0)"


COMMITTED = "committed (this checkout)"


def _pooled_count(settings: list[R.Runs], variant: str) -> str:
    diffs = R.pooled_differences(settings, variant)
    return f"{sum(d > 0 for d in diffs)} of {len(diffs)} > 0"


def _kind_table(params: dict, variants: list[str], refs: dict[str, tuple[str | None, list[int]]],
                worlds: list[str]) -> list[str]:
    """Where the gains sit, per setting: the mean IoU gain over the stuff concepts (each judged on the
    stuff benchmark) minus over the things (on the things benchmark), paired by seed
    (cocu.reports.mechanism.kind_contrasts), read from each setting's committed per-class results."""
    import tempfile

    from cocu.data.world import CONCEPTS
    from cocu.reports import mechanism

    kinds = {c.name: c.kind for c in CONCEPTS}
    kb = params["report"]["kind_benchmarks"]
    folder = params["paths"]["results"]
    contrasts: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ref, run_seeds) in refs.items():
            root = REPO / folder
            if ref is not None:
                root = Path(tmp) / name
                root.mkdir()
                archive = subprocess.run(["git", "archive", ref, folder], cwd=REPO, capture_output=True, check=True)
                subprocess.run(["tar", "x", "-C", str(root)], input=archive.stdout, check=True)
                root = root / folder
            seeds = {v: run_seeds for v in ["baseline", *variants]}
            contrasts[name] = {v: list(mechanism.kind_contrasts(root, seeds, kb, kinds, v, "stuff", "thing").values())
                               for v in variants}
    lines = ["", "## Where the gains sit: stuff minus things", "",
             f"Per seed, the mean IoU gain over the baseline on the 8 stuff concepts (each judged on "
             f"`{kb['stuff']}`, among the stuff) minus the mean gain on the 16 things (on `{kb['thing']}`): positive "
             "= the gains sit on the concepts captions rarely name (stuff: 0-5% of their images; things: 52-93%). "
             "Mean [95% t-interval over seeds].", "",
             "| setting | " + " | ".join(f"{v}: stuff − things" for v in variants) + " |", "|---|" + "---|" * len(variants)]
    for name, per in contrasts.items():
        lines.append(f"| {name} | " + " | ".join(fmt_interval(R.stats.t_interval(per[v]), 2) for v in variants) + " |")
    if len(worlds) > 1:
        pooled = {v: [d for n in worlds for d in contrasts[n][v]] for v in variants}
        lines.append(f"| pooled over the {len(worlds)} worlds | " + " | ".join(
            f"{fmt_interval(R.stats.t_interval(pooled[v]), 2)}, {sum(d > 0 for d in pooled[v])} of {len(pooled[v])} > 0"
            for v in variants) + " |")
    return lines


def table(machines: dict[str, str] | None = None) -> str:
    """The robustness table; `machines`: label -> a git revision whose committed results were made on
    another machine with the same code (e.g. an earlier commit of the default run), compared like the
    emulated machines."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    variants = [v for v in params["pretrain"]["variants"] if v != "baseline"]
    committed = read_runs(None, params)
    benchmarks = sorted(next(iter(committed.values())))
    lines = ["# Robustness: another machine, other worlds", "",
             "_Generated by `python scripts/studies.py table` from the DVC experiments that "
             "`python scripts/studies.py robustness` made (`make robustness`); do not edit._", "",
             "Paired differences to the baseline, mIoU mean over the synthetic benchmarks: mean over seeds "
             "[95% t-interval over seeds]. A conclusion holds where the interval keeps its sign.", "",
             "| setting | " + " | ".join(f"{v} − baseline" for v in variants)
             + " | " + " | ".join(f"{v} − baseline per seed" for v in variants) + " |",
             "|---|" + "---|" * (2 * len(variants))]
    settings = {COMMITTED: committed}
    refs: dict[str, tuple[str | None, list[int]]] = {COMMITTED: (None, list(params["pretrain"]["seeds"]))}
    missing, stale = [], []
    for name, (_, overrides, _) in SETTINGS.items():
        ref = exp_ref(EXP_PREFIX + name)
        if ref is None:
            missing.append(name)
            continue
        exp_params = yaml.safe_load(_git("show", f"{ref}:params.yaml"))
        differ = stale_keys(params, exp_params, overrides)
        if differ:
            stale.append(f"{name} ({', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''})")
            continue
        settings[name] = read_runs(ref, exp_params)
        refs[name] = (ref, list(exp_params["pretrain"]["seeds"]))
    kinds = {name: kind for name, (_, _, kind) in SETTINGS.items()}
    for label, rev in (machines or {}).items():
        rev_params = yaml.safe_load(_git("show", f"{rev}:params.yaml"))
        settings[label] = read_runs(rev, rev_params)
        refs[label] = (rev, list(rev_params["pretrain"]["seeds"]))
        kinds[label] = "machine"
    for name, runs in settings.items():
        lines.append(f"| {name} | " + " | ".join(fmt_interval(R.paired(runs, v), 2) for v in variants)
                     + " | " + " | ".join(_per_seed(runs, v) for v in variants) + " |")
    worlds = [n for n in settings if n == COMMITTED or kinds.get(n) == "world"]
    if len(worlds) > 1:
        lines.append(f"| pooled over the {len(worlds)} worlds ({', '.join(worlds)}) | "
                     + " | ".join(fmt_interval(R.pooled([settings[n] for n in worlds], v), 2) for v in variants)
                     + " | " + " | ".join(_pooled_count([settings[n] for n in worlds], v) for v in variants) + " |")
    lines += _kind_table(params, variants, {n: refs.get(n) for n in settings}, worlds)
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    if stale:
        lines += ["", f"Left out, made with other params than this checkout's (re-run them): {'; '.join(stale)}."]
    for name in (n for n in settings if kinds.get(n) == "machine"):
        same_seeds = {k: v for k, v in settings[name].items() if k[1] in params["pretrain"]["seeds"]}
        checks = R.reproduction(committed, same_seeds, params["pretrain"]["variants"], benchmarks)
        ok = sum(c.within for c in checks)
        lines += ["", f"## {name}: committed seed means reproduced within tolerance: {ok} of {len(checks)}", "",
                  "The committed seeds only. Tolerance: committed mean ± t(n−1) · s · √(2/n), the 95% prediction "
                  "interval of a new mean of "
                  "n seeds when only training noise differs.", "",
                  "| variant | benchmark | committed | tolerance | this setting | within |", "|---|---|---|---|---|---|"]
        lines += [f"| {c.variant} | {c.benchmark} | {c.committed:.2f} | ±{c.tolerance:.2f} | {c.new:.2f} | "
                  f"{'yes' if c.within else '**no**'} |" for c in checks]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("study", help="run the study experiment and bring its report into reports/study/")
    sub.add_parser("study-report", help="rebuild reports/study/ from the last study's results with this "
                   "checkout's report code")
    r = sub.add_parser("robustness", help="run the robustness settings as DVC experiments")
    r.add_argument("names", nargs="*", default=list(SETTINGS), help=f"default: all of {', '.join(SETTINGS)}")
    t = sub.add_parser("table", help="write the table")
    t.add_argument("--out", type=Path, default=REPO / "reports" / "robustness.md")
    t.add_argument("--machine", action="append", default=[], metavar="LABEL=REV",
                   help="also compare the results committed at git revision REV (made on another machine)")
    args = parser.parse_args()
    if args.cmd == "study":
        study()
    elif args.cmd == "study-report":
        study_report()
    elif args.cmd == "robustness":
        unknown = [n for n in args.names if n not in SETTINGS]
        if unknown:
            parser.error(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
        run(args.names)
    else:
        machines = dict(m.split("=", 1) for m in args.machine)
        text = table(machines)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(text)


if __name__ == "__main__":
    main()
