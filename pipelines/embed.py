"""DVC stage `embed`: unit-norm CLIP image and caption embeddings of every pair (float16 .npy,
row i = manifest row i) and of every vocabulary concept ("a photo of a {c}"), with the concept
names in the same row order. A GPU stage through cocu/launch: the shard files are dealt to
`launcher.stages.embed.tasks` array tasks, each finished shard kept in a partial folder (a
pre-empted or failed task redoes only unfinished ones), then one job joins them in manifest order."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.clip.jobs import embed_corpus, embed_inputs
from cocu.config import load_params
from cocu.stage import run_stage
from cocu.tracking import start_run
from cocu.tracking.run_info import write_json

log = logging.getLogger("embed")


def main(params_file: Path) -> None:
    params = load_params(params_file)
    stats = embed_corpus(embed_inputs(params), params.launcher)
    write_json(params.paths.embed_metrics, {k: v for k, v in stats.items() if k not in ("tasks", "units_reused")})
    with start_run(params, stage="embed") as run:
        run.log_metrics({k: v for k, v in stats.items() if isinstance(v, (int, float))})
        run.set_tags({"clip_weights_sha256": stats["weights_sha256"]})
    log.info("embed: %d pairs, %d concepts, %.0f pairs/s", stats["rows"], stats["concepts"], stats["pairs_per_second"])


if __name__ == "__main__":
    run_stage(main, __doc__)
