"""DVC stage `pretrain`: GroupViT pre-training of every configured run, `pretrain.variants` x
`pretrain.seeds` (runs with the same seed share their initial weights and data order: the pairing
of every comparison in the report).

Variants differ only in where the K extra prompts come from: `baseline` (concepts of the pair's own
caption), `cocu` (cluster-guided sampling from the concept archive), `ranking` (top-K of the
archive, the official code's default), `expansion` (uniform over the archive), `oracle` (the
hidden ground truth: an upper bound, never a method) and `precision<P>` (the curation-precision
ablation). Runs go through `cocu/launch`: locally `pretrain.parallel` runs at a time, each a
process with `pretrain.threads` threads; on SLURM every run is its own pre-emptible job, all
submitted at once. A run whose folder holds a finished run of the same settings, inputs and code
is exported again without training, so adding a seed or a variant trains only the new runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cocu.config import ConfigError, load_params
from cocu.stage import run_stage

log = logging.getLogger("pretrain")


def main(params_file: Path, runs: str | None = None) -> None:
    params = load_params(params_file)
    from cocu.training.pretrain import train_runs  # after the params are checked
    from cocu.training.runs import configured_runs

    selected = configured_runs(params)
    if runs:  # a subset, e.g. `--runs cocu-s0,oracle-s0` (outside DVC)
        wanted = [r.strip() for r in runs.split(",") if r.strip()]
        names = {f"{v}-s{s}": (v, s) for v, s in selected}
        unknown = [r for r in wanted if r not in names]
        if unknown:
            raise ConfigError(f"{params_file}: --runs {', '.join(unknown)} not among the configured runs "
                              f"{', '.join(names)} (pretrain.variants x pretrain.seeds)")
        selected = [names[r] for r in wanted]
    summaries = train_runs(Path(params_file).resolve(), params, selected)
    for name, summary in summaries.items():
        log.info("pretrain %s: %d steps, final loss %.4f", name, summary.get("steps", 0),
                 summary.get("final/loss", float("nan")))


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default=None, help="comma-separated run names (<variant>-s<seed>); default: all")


if __name__ == "__main__":
    run_stage(main, __doc__, _flags)
