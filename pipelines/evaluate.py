"""DVC stage `evaluate@<variant>-<seed>`: zero-shot segmentation of one pre-trained checkpoint on
every active benchmark (`eval.active`), each under its own protocol card (`eval.benchmarks.<name>`).

Writes `results/<variant>/s<seed>/<benchmark>.json` per benchmark (mIoU, per-class IoU, the card,
the checkpoint's sha256) with example predictions beside the ground truth in
`<benchmark>_examples/`, the DVC metrics file `results/<variant>/s<seed>.json` (mIoU, aAcc, mAcc
per benchmark), and one MLflow run per checkpoint holding all of it. The benchmarks run through
cocu/launch, dealt to `launcher.stages.evaluate.tasks` jobs: 1 (the default) is one job per
checkpoint, the model loaded once, since a process costs about 7 s of start-up (torch, MLflow,
the model and tokenizer), more than a synthetic benchmark's whole evaluation; on a cluster with
the eight real benchmarks, one task per benchmark runs them side by side.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cocu.config import load_params
from cocu.eval.jobs import evaluate_benchmarks
from cocu.stage import run_stage
from cocu.tracking import start_run
from cocu.tracking.run_info import write_json
from cocu.training.runs import run_name, run_outputs

log = logging.getLogger("evaluate")
SUMMARY_KEYS = ("mIoU", "aAcc", "mAcc")


def main(params_file: Path, variant: str, seed: int) -> None:
    params = load_params(params_file)  # EvalConfig checks that every active name has a protocol card
    run = run_name(variant, seed)
    out_dir = Path(params.paths.results) / variant / f"s{seed}"
    cards = {b: params.eval.benchmarks[b] for b in params.eval.active}
    results = evaluate_benchmarks(run_outputs(params, variant, seed)["checkpoint"], cards, params.paths.benchmarks_root,
                                  params.data.mean, params.data.std, out_dir, params.eval.overlays,
                                  params.eval.threads, params.launcher, f"evaluate-{run}")
    for bench, result in results.items():
        result.update(variant=variant, seed=seed, profile=params.run.profile)
        write_json(out_dir / f"{bench}.json", result)
        log.info("%s on %s: mIoU %.2f | %s", run, bench, result["mIoU"], result["protocol"])
    sha = next(iter(results.values()))["checkpoint_sha256"] if results else None
    write_json(out_dir.with_suffix(".json"), {"variant": variant, "seed": seed, "checkpoint_sha256": sha,
                                              **{b: {k: r[k] for k in SUMMARY_KEYS} for b, r in results.items()}})
    tags = {"variant": variant, "seed": seed, "benchmarks": ",".join(results)}
    with start_run(params, stage="evaluate", run_name=f"{run}/eval", tags=tags, log_params=False) as mlflow_run:
        mlflow_run.log_params({"variant": variant, "seed": seed, "checkpoint_sha256": sha,
                               **{f"protocol/{b}": r["protocol"] for b, r in results.items()}})
        mlflow_run.log_metrics({f"{b}/{k}": r[k] for b, r in results.items() for k in SUMMARY_KEYS if r[k] is not None})
        for bench in results:
            for png in sorted((out_dir / f"{bench}_examples").glob("*.png")):
                mlflow_run.log_artifact(png, artifact_path=f"examples/{bench}")


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, default=0)


if __name__ == "__main__":
    run_stage(main, __doc__, _flags)
