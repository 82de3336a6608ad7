"""DVC stage `pretrain@<variant>-<seed>`: GroupViT pre-training of one variant at one seed.

Variants differ only in where the K extra prompts come from: `baseline` (concepts of the pair's own
caption), `cocu` (cluster-guided sampling from the concept archive), `ranking` (top-K of the
archive, the official code's default), `expansion` (uniform over the archive) and `oracle` (the
hidden ground truth: an upper bound, never a method). The run goes through `cocu/launch`:
in-process with `launcher.cluster: local`, a pre-emptible submitit job on SLURM.
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

from cocu.config import ConfigError, load_params
from cocu.stage import run_stage

log = logging.getLogger("pretrain")


def main(params_file: Path, variant: str, seed: int) -> None:
    params = load_params(params_file)
    if variant not in params.pretrain.variants:
        raise ConfigError(f"{params_file}: variant {variant!r} is not in pretrain.variants {params.pretrain.variants}")

    from cocu.launch.executor import run_job  # after the params are checked
    from cocu.launch.jobs import CheckpointableTask
    from cocu.training import pretrain
    from cocu.training.runs import run_name, run_outputs

    run_dir = run_outputs(params, variant, seed)["run_dir"]
    task = CheckpointableTask(functools.partial(pretrain.pretrain_job, Path(params_file).resolve(), variant, seed), run_dir)
    summary = run_job(task, cfg=params.launcher, name=f"pretrain-{run_name(variant, seed)}")
    log.info("pretrain %s: %s", run_name(variant, seed), summary)


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, default=0)


if __name__ == "__main__":
    run_stage(main, __doc__, _flags)
