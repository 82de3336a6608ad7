"""DVC stage `index`: the L nearest images of every image by CLIP embedding (inner product),
from a faiss index (`index.type`: flat = exact, ivf, hnsw) with batched search. For approximate
indexes, recall@L against exact search on a sample is measured and logged.

DVC metrics `paths.index_metrics`: pairs (and recall@L for approximate indexes);
`<paths.details>/index.json`: every statistic; MLflow: the same numbers."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("index")


def main(params_file: Path) -> None:
    import faiss  # after run_stage has checked the params
    import numpy as np

    from cocu.concepts.retrieval import search_neighbours
    from cocu.tracking import start_run
    from cocu.tracking.run_info import numeric_leaves, write_json, write_metrics

    params = load_params(params_file)
    paths, cfg = params.paths, params.index
    emb = np.load(paths.image_embeddings, mmap_mode="r")  # [N, D] float16, unit norm
    found = search_neighbours(emb, cfg)
    Path(paths.neighbours).parent.mkdir(parents=True, exist_ok=True)
    np.save(paths.neighbours, found.ids)
    np.save(paths.neighbour_sims, found.sims)
    index = found.index
    if index is None:  # exact search ran as a blocked matrix multiply; keep the equivalent faiss index
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(np.ascontiguousarray(emb, dtype=np.float32))
    faiss.write_index(index, paths.index)
    self_first = float(np.mean(found.ids[:, 0] == np.arange(len(emb))))
    metrics = {"num_images": len(emb), "num_neighbours": cfg.num_neighbours, "type": cfg.type,
               "recall_at_l": found.recall, "missing": found.missing, "self_is_first": self_first,
               "mean_similarity": float(found.sims[:, 1:].mean()) if cfg.num_neighbours > 1 else None}
    headline = {"pairs": len(emb)}
    if found.recall is not None:  # measured for approximate indexes only (exact search: 1 by definition)
        headline["recall"] = found.recall
    write_metrics(paths.index_metrics, headline)
    write_json(Path(paths.details) / "index.json", metrics)
    with start_run(params, stage="index") as run:
        run.log_metrics(numeric_leaves(metrics))
    log.info("index: %s", metrics)


if __name__ == "__main__":
    run_stage(main, __doc__)
