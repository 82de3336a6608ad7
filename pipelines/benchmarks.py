"""DVC stage `benchmarks`: the synthetic segmentation benchmarks (things + background, stuff only,
all classes, as `world.benchmarks` lists them) written in the standard layout under
`paths.benchmarks_root` inside the repo; and, on a real profile, a check of the layout of every
active real benchmark under `paths.benchmarks_external` (only read, never written: its files'
fingerprint is the `inputs` stage's `benchmarks.json`). DVC metrics: the number of images;
`<paths.details>/benchmarks.json`: per benchmark classes and ignored pixels."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("benchmarks")


def main(params_file: Path) -> None:
    from cocu.data.benchmarks import check_real_benchmarks, check_roots_apart, write_synthetic_benchmark  # checked params first
    from cocu.tracking.run_info import write_json, write_metrics

    params = load_params(params_file)
    check_roots_apart(params)
    cfg = params.world
    root = Path(params.paths.benchmarks_root)
    root.mkdir(parents=True, exist_ok=True)  # a DVC output even when no synthetic set is written
    metrics: dict[str, float] = {}
    for name in cfg.benchmarks:
        metrics.update(write_synthetic_benchmark(cfg, name, cfg.counts.benchmark, root))
    metrics.update(check_real_benchmarks(params))
    write_metrics(params.paths.benchmarks_metrics, {"images": int(sum(v for k, v in metrics.items() if k.endswith("/images")))})
    write_json(Path(params.paths.details) / "benchmarks.json", metrics)  # per benchmark: classes, ignored pixels
    log.info("benchmarks: %s", metrics)


if __name__ == "__main__":
    run_stage(main, __doc__)
