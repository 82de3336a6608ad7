"""DVC stage `report`: the paper's tables and figures regenerated from tracked results.

Reads `results/<variant>/s<seed>/<benchmark>.json`, the pre-training curves, the curation and
teacher metrics and the paper reference numbers (`paths:` in params; knobs in `report:`), never
the MLflow store; writes `results.md`, `tables/*.{md,tex,csv}` and `figures/*.png` under
`paths.reports`. Missing inputs are reported in the page, not a crash.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params, to_dict
from cocu.reports.build import build_report
from cocu.reports.config import ReportConfig
from cocu.stage import run_stage

log = logging.getLogger("report")


def main(params_file: Path) -> None:
    params = load_params(params_file)
    paths = params.paths
    cfg = ReportConfig(results_dir=paths.results, curves_dir=paths.pretrain_metrics, paper_numbers=paths.paper_numbers,
                       out_dir=paths.reports, curate_metrics=str(Path(paths.details) / "curate.json"),
                       teacher_metrics=str(Path(paths.details) / "teacher.json"),
                       gallery=paths.world_gallery, **to_dict(params.report))
    outputs = build_report(cfg)
    log.info("report: %d result files, %d outputs under %s", outputs.num_results, len(outputs.files), cfg.out_dir)


if __name__ == "__main__":
    run_stage(main, __doc__)
