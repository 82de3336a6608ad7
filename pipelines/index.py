"""DVC stage `index`: the L nearest images of every image by CLIP embedding (inner product).

Trained once, in one job: the exact search's row order (`index.type: flat`) or a faiss index
(ivf, ivfpq, hnsw) holding every row, written to `paths.index`, which the query tasks read. The
queries then run as `launcher.stages.index.tasks` array tasks over row ranges, joined in row order.
For approximate indexes, recall@L against exact search on a sample is measured and logged.

DVC metrics `paths.index_metrics`: pairs (and recall@L for approximate indexes);
`<paths.details>/index.json`: every statistic; MLflow: the same numbers."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("index")


def main(params_file: Path) -> None:
    from cocu.concepts.retrieval import run_index  # after run_stage has checked the params
    from cocu.tracking import start_run
    from cocu.tracking.run_info import numeric_leaves, write_json, write_metrics

    params = load_params(params_file)
    paths = params.paths
    metrics = run_index(paths.image_embeddings, params.index, params.launcher, paths.index, paths.neighbours,
                        paths.neighbour_sims)
    metrics = {k: v for k, v in metrics.items() if k != "tasks"}  # outputs do not depend on the split
    headline = {"pairs": metrics["num_images"]}
    if metrics["recall_at_l"] is not None:  # measured for approximate indexes only (exact search: 1 by definition)
        headline["recall"] = metrics["recall_at_l"]
    write_metrics(paths.index_metrics, headline)
    write_json(Path(paths.details) / "index.json", metrics)
    with start_run(params, stage="index") as run:
        run.log_metrics(numeric_leaves(metrics))
    log.info("index: %s", metrics)


if __name__ == "__main__":
    run_stage(main, __doc__)
