"""DVC stage `embed`: unit-norm CLIP image and caption embeddings of every pair (float16 .npy,
row i = manifest row i) and of every vocabulary concept ("a photo of a {c}"), with the concept
names in the same row order. A GPU stage: it runs through cocu/launch (in-process locally).

DVC metrics `paths.embed_metrics`: pairs, concepts, skipped; `<paths.details>/embed.json`: sizes,
skip reasons, the weights' sha256; MLflow: all of it and the throughput."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("embed")
TIMINGS = ("seconds", "pairs_per_second")


def main(params_file: Path) -> None:
    from cocu.clip.jobs import embed_job, embed_launcher  # after run_stage has checked the params
    from cocu.launch.executor import run_job
    from cocu.tracking import start_run
    from cocu.tracking.run_info import numeric_leaves, write_json, write_metrics

    params = load_params(params_file)
    stats = run_job(functools.partial(embed_job, params), cfg=embed_launcher(params.launcher), name="embed")
    timings = {k: stats.pop(k) for k in TIMINGS}  # MLflow only: a re-run must not change a committed byte
    skipped = {k.removeprefix("skipped/"): stats.pop(k) for k in list(stats) if k.startswith("skipped/")}
    details = {**stats, "skipped": skipped}
    write_metrics(params.paths.embed_metrics, {"pairs": stats["rows"], "concepts": stats["concepts"],
                                               "skipped": sum(skipped.values()) + stats["duplicates_skipped"]})
    write_json(Path(params.paths.details) / "embed.json", details)
    with start_run(params, stage="embed") as run:
        run.log_metrics({**numeric_leaves(details), **timings})
        run.set_tags({"clip_weights_sha256": stats["weights_sha256"]})
    log.info("embed: %d pairs, %d concepts, %.0f pairs/s", stats["rows"], stats["concepts"], timings["pairs_per_second"])


if __name__ == "__main__":
    run_stage(main, __doc__)
