"""DVC stage `report`: the paper's tables and figures regenerated from tracked results.

Reads `results/<variant>/s<seed>/<benchmark>.json`, the pre-training curves, the curation and
teacher metrics and the paper reference numbers (`paths:` in params; knobs in `report:`), never
the MLflow store; writes `results.md`, `tables/*.{md,tex,csv}` and `figures/*.png` under
`paths.reports`. Missing inputs are reported in the page, not a crash.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import ReportConfig, load_params
from cocu.stage import run_stage

log = logging.getLogger("report")


def main(params_file: Path) -> None:
    from cocu.reports.build import build_report  # after run_stage has checked the params

    cfg = ReportConfig.from_params(load_params(params_file))
    outputs = build_report(cfg)
    log.info("report: %d result files, %d outputs under %s", outputs.num_results, len(outputs.files), cfg.out_dir)


if __name__ == "__main__":
    run_stage(main, __doc__)
