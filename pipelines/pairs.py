"""DVC stage `pairs`: the image-caption pairs every later stage reads.

Synthetic profile (`pairs.source: synthetic`): generate the pre-training pairs and the separate
teacher corpus of the synthetic world as webdataset shards, plus a gallery PNG. Real profile
(`pairs.source: webdataset`): validate and index existing img2dataset shards. Either way the
shards are read back, bad samples are skipped and counted, and `manifest.parquet` lists the rest.
The validation (a decode of every image) runs as a job array (`launcher.stages.pairs`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.data import gallery, pairs, world
from cocu.stage import run_stage
from cocu.tracking import start_run
from cocu.tracking.run_info import write_json

log = logging.getLogger("pairs")


def main(params_file: Path) -> None:
    params = load_params(params_file)
    paths, cfg = params.paths, params.world
    if params.pairs.source == "synthetic":
        stats = [
            pairs.build_synthetic_corpus(cfg, cfg.counts.pairs, "pairs", Path(paths.pairs_shards), Path(paths.pairs_manifest),
                                         params.launcher),
            pairs.build_synthetic_corpus(cfg, cfg.counts.teacher, "teacher", Path(paths.teacher_shards),
                                         Path(paths.teacher_manifest), params.launcher),
        ]
        gallery.write_gallery(list(world.generate(cfg, 12, "pairs")), Path(paths.world_gallery))
    else:
        shards = pairs.find_real_shards(params.pairs, Path(paths.pairs_shards))
        stats = [pairs.index_corpus(shards, params.pairs, Path(paths.pairs_manifest), name="pairs",
                                    launcher=params.launcher)]
        pairs.write_empty_corpus(Path(paths.teacher_shards), Path(paths.teacher_manifest))
        pairs.real_gallery(shards, params.pairs, Path(paths.world_gallery))
    metrics = {k: v for s in stats for k, v in s.as_metrics().items()}
    write_json(paths.pairs_metrics, metrics)
    with start_run(params, stage="pairs") as run:
        run.log_metrics(metrics)
        run.log_artifact(paths.world_gallery)
    log.info("pairs: %s", {k: v for k, v in metrics.items() if k.endswith(("valid", "mention_rate"))})


if __name__ == "__main__":
    run_stage(main, __doc__)
