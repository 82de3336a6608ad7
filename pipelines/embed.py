"""DVC stage `embed`: unit-norm CLIP image and caption embeddings of every pair (float16 .npy,
row i = manifest row i) and of every vocabulary concept ("a photo of a {c}"), with the concept
names in the same row order. A GPU stage through cocu/launch: the shard files are dealt to
`launcher.stages.embed.tasks` array tasks, each finished shard kept in a partial folder (a
pre-empted or failed task redoes only unfinished ones), then one job joins them in manifest order.

DVC metrics `paths.embed_metrics`: pairs, concepts, skipped; `<paths.details>/embed.json`: sizes,
skip reasons, the weights' sha256; MLflow: all of it, the throughput and how the work was split."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("embed")
TIMINGS = ("seconds", "pairs_per_second")


def main(params_file: Path) -> None:
    from cocu.clip.jobs import embed_corpus, embed_inputs  # after run_stage has checked the params
    from cocu.tracking import start_run
    from cocu.tracking.run_info import numeric_leaves, write_json, write_metrics

    params = load_params(params_file)
    stats = embed_corpus(embed_inputs(params), params.launcher)
    timings = {k: stats.pop(k) for k in (*TIMINGS, "tasks", "units_reused")}  # MLflow only: not committed
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
