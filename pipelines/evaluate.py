"""DVC stage `evaluate@<variant>-<seed>`: zero-shot segmentation of one pre-trained checkpoint on
every active benchmark (`eval.active`), each under its own protocol card (`eval.benchmarks.<name>`).

Writes `results/<variant>/s<seed>/<benchmark>.json` per benchmark (mIoU, per-class IoU, the card,
the checkpoint's sha256) with example predictions beside the ground truth in
`<benchmark>_examples/`, the DVC metrics file `results/<variant>/s<seed>.json` (`mIoU/<benchmark>`
only: aAcc, mAcc and the rest are in the per-benchmark files), and one MLflow run per checkpoint
holding all of it. One process per checkpoint,
not per benchmark: a process costs about 7 s of start-up (torch, MLflow, the model and tokenizer),
more than a synthetic benchmark's whole evaluation.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("evaluate")
SUMMARY_KEYS = ("mIoU", "aAcc", "mAcc")


def main(params_file: Path, variant: str, seed: int) -> None:
    import torch  # after run_stage has checked the params

    from cocu.data.benchmarks import active_roots
    from cocu.eval.evaluate import evaluate_checkpoint
    from cocu.launch.device import resolve_device
    from cocu.tracking import start_run
    from cocu.tracking.run_info import write_json, write_metrics
    from cocu.training.runs import run_name, run_outputs

    params = load_params(params_file)  # EvalConfig checks that every active name has a protocol card
    if params.eval.threads > 0:
        torch.set_num_threads(params.eval.threads)
    run = run_name(variant, seed)
    out_dir = Path(params.paths.results) / variant / f"s{seed}"
    cards = {b: params.eval.benchmarks[b] for b in params.eval.active}
    results = evaluate_checkpoint(run_outputs(params, variant, seed)["checkpoint"], cards, active_roots(params),
                                  params.data.mean, params.data.std, overlay_root=out_dir,
                                  num_overlays=params.eval.overlays, device=resolve_device("auto"))
    for bench, result in results.items():
        result.update(variant=variant, seed=seed, profile=params.run.profile)
        write_json(out_dir / f"{bench}.json", result)
        log.info("%s on %s: mIoU %.2f | %s", run, bench, result["mIoU"], result["protocol"])
    sha = next(iter(results.values()))["checkpoint_sha256"] if results else None
    write_metrics(out_dir.with_suffix(".json"), {f"mIoU/{b}": r["mIoU"] for b, r in results.items()})
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
