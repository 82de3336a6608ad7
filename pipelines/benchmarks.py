"""DVC stage `benchmarks`: write the synthetic segmentation benchmarks (things + background,
stuff only, all classes) in the standard layout under `paths.benchmarks_root`. DVC metrics: the
number of images; `<paths.details>/benchmarks.json`: per benchmark classes and ignored pixels."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("benchmarks")


def main(params_file: Path) -> None:
    from cocu.data.benchmarks import write_synthetic_benchmark  # after run_stage has checked the params
    from cocu.tracking.run_info import write_json, write_metrics

    params = load_params(params_file)
    cfg = params.world
    metrics: dict[str, float] = {}
    for name in cfg.benchmarks:
        metrics.update(write_synthetic_benchmark(cfg, name, cfg.counts.benchmark, Path(params.paths.benchmarks_root)))
    write_metrics(params.paths.benchmarks_metrics, {"images": int(sum(v for k, v in metrics.items() if k.endswith("/images")))})
    write_json(Path(params.paths.details) / "benchmarks.json", metrics)  # per benchmark: classes, ignored pixels
    log.info("benchmarks: %s", metrics)


if __name__ == "__main__":
    run_stage(main, __doc__)
