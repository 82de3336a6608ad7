"""DVC stage `evaluate@<variant>-<seed>-<benchmark>`: zero-shot segmentation of one pre-trained
checkpoint on one benchmark under its protocol card (`eval.benchmarks.<name>`), written to
`results/<variant>/s<seed>/<benchmark>.json` (DVC metrics) and to an MLflow run with example
predictions beside the ground truth."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from cocu.config import ConfigError, load_params
from cocu.eval.evaluate import evaluate_checkpoint
from cocu.launch.device import resolve_device
from cocu.stage import run_stage
from cocu.tracking import start_run
from cocu.tracking.run_info import write_json
from cocu.training.runs import run_name, run_outputs

log = logging.getLogger("evaluate")


def main(params_file: Path, variant: str, seed: int, benchmark: str) -> None:
    params = load_params(params_file)
    if benchmark not in params.eval.benchmarks:
        raise ConfigError(f"{params_file}: no protocol card eval.benchmarks.{benchmark}")
    card = params.eval.benchmarks[benchmark]
    if params.eval.threads > 0:
        torch.set_num_threads(params.eval.threads)
    run = run_name(variant, seed)
    out = Path(params.paths.results) / variant / f"s{seed}" / f"{benchmark}.json"
    overlays = out.parent / f"{benchmark}_examples"
    result = evaluate_checkpoint(run_outputs(params, variant, seed)["checkpoint"], benchmark, card,
                                 params.paths.benchmarks_root, params.data.mean, params.data.std, overlay_dir=overlays,
                                 num_overlays=params.eval.overlays, device=resolve_device("auto"))
    result.update(variant=variant, seed=seed, profile=params.run.profile)
    write_json(out, result)
    tags = {"variant": variant, "seed": seed, "benchmark": benchmark, "protocol": result["protocol"]}
    with start_run(params, stage="evaluate", run_name=f"{run}/{benchmark}", tags=tags, log_params=False) as mlflow_run:
        mlflow_run.log_params({"variant": variant, "seed": seed, "benchmark": benchmark,
                               "checkpoint_sha256": result["checkpoint_sha256"]})
        mlflow_run.log_metrics({f"{benchmark}/mIoU": result["mIoU"], f"{benchmark}/aAcc": result["aAcc"]})
        for png in sorted(overlays.glob("*.png")):
            mlflow_run.log_artifact(png, artifact_path=f"examples/{benchmark}")
    log.info("%s on %s: mIoU %.2f | %s", run, benchmark, result["mIoU"], result["protocol"])


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--benchmark", required=True)


if __name__ == "__main__":
    run_stage(main, __doc__, _flags)
