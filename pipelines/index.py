"""DVC stage `index`: the L nearest images of every image by CLIP embedding (inner product).

Trained once, in one job: the exact search's row order (`index.type: flat`) or a faiss index
(ivf, ivfpq, hnsw) holding every row, written to `paths.index`, which the query tasks read. The
queries then run as `launcher.stages.index.tasks` array tasks over row ranges, joined in row order.
For approximate indexes, recall@L against exact search on a sample is measured and logged."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.concepts.retrieval import run_index
from cocu.config import load_params
from cocu.stage import run_stage
from cocu.tracking import start_run
from cocu.tracking.run_info import write_json

log = logging.getLogger("index")


def main(params_file: Path) -> None:
    params = load_params(params_file)
    paths = params.paths
    metrics = run_index(paths.image_embeddings, params.index, params.launcher, paths.index, paths.neighbours,
                        paths.neighbour_sims)
    write_json(paths.index_metrics, {k: v for k, v in metrics.items() if k != "tasks"})  # outputs: not the split
    with start_run(params, stage="index") as run:
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
    log.info("index: %s", metrics)


if __name__ == "__main__":
    run_stage(main, __doc__)
