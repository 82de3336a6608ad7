"""DVC stage `evaluate`: zero-shot segmentation of every configured checkpoint (`pretrain.variants` x
`pretrain.seeds`) on every active benchmark (`eval.active`), each under its own protocol card
(`eval.benchmarks.<name>`).

Per run `<variant>-s<seed>` it writes `results/<variant>/s<seed>/<benchmark>.json` (mIoU, per-class
IoU, the card, the checkpoint's sha256), `<benchmark>.counts.npz` (per-image counts: the paired
bootstrap of the report resamples them) and example predictions beside the ground truth in
`<benchmark>_examples/`; the DVC metrics file `<paths.eval_metrics>/<variant>-s<seed>.json`
(`mIoU/<benchmark>` only: aAcc, mAcc and the rest are in the per-benchmark files, and in MLflow); and
one MLflow run per checkpoint. The benchmarks of a checkpoint run through cocu/launch, dealt to
`launcher.stages.evaluate.tasks` jobs: 1 (the default) is one job (locally a plain call), the
model loaded once (a process costs seconds of start-up, more than a synthetic benchmark's whole
evaluation); on a cluster with the eight real benchmarks, one task per benchmark runs them side by side.
Locally `pretrain.parallel` checkpoints are evaluated at a time, each in its own process; on a
cluster every checkpoint's jobs are submitted at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("evaluate")
SUMMARY_KEYS = ("mIoU", "aAcc", "mAcc")


def main(params_file: Path) -> None:
    from cocu.eval.jobs import evaluate_runs  # after run_stage has checked the params
    from cocu.tracking import start_run
    from cocu.tracking.run_info import write_json, write_metrics
    from cocu.training.runs import configured_runs, run_name

    params = load_params(params_file)  # EvalConfig checks that every active name has a protocol card
    runs = configured_runs(params)
    for (variant, seed), results in zip(runs, evaluate_runs(Path(params_file), params, runs)):
        run = run_name(variant, seed)
        out_dir = Path(params.paths.results) / variant / f"s{seed}"
        for bench, result in results.items():
            result.update(variant=variant, seed=seed, profile=params.run.profile)
            write_json(out_dir / f"{bench}.json", result)
            log.info("%s on %s: mIoU %.2f | %s", run, bench, result["mIoU"], result["protocol"])
        sha = next(iter(results.values()))["checkpoint_sha256"] if results else None
        write_metrics(Path(params.paths.eval_metrics) / f"{run}.json", {f"mIoU/{b}": r["mIoU"] for b, r in results.items()})
        tags = {"variant": variant, "seed": seed, "benchmarks": ",".join(results)}
        with start_run(params, stage="evaluate", run_name=f"{run}/eval", tags=tags, log_params=False) as mlflow_run:
            mlflow_run.log_params({"variant": variant, "seed": seed, "checkpoint_sha256": sha,
                                   **{f"protocol/{b}": r["protocol"] for b, r in results.items()}})
            mlflow_run.log_metrics({f"{b}/{k}": r[k] for b, r in results.items() for k in SUMMARY_KEYS
                                    if r[k] is not None})
            for bench in results:
                for png in sorted((out_dir / f"{bench}_examples").glob("*.png")):
                    mlflow_run.log_artifact(png, artifact_path=f"examples/{bench}")


if __name__ == "__main__":
    run_stage(main, __doc__)
