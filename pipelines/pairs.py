"""DVC stage `pairs`: the image-caption pairs every later stage reads.

Synthetic profile (`pairs.source: synthetic`): generate the pre-training pairs and the separate
teacher corpus of the synthetic world as webdataset shards inside the repo, plus a gallery PNG.
Real profile (`pairs.source: webdataset`): validate and index the existing img2dataset shards named
by `pairs.shards_glob` (outside the repo: only read, never a DVC output; keys source-qualified when
there are several sources), after checking they are the ones the `inputs` stage fingerprinted.
Either way the shards are read back, bad samples are skipped and counted, and `manifest.parquet`
lists the rest.
The validation (a decode of every image) runs as a job array (`launcher.stages.pairs`).

Writes `paths.pairs_metrics` (DVC metrics: valid pairs, skipped count), `<paths.details>/pairs.json`
(per corpus: shards, written, valid, skip reasons, mention rate) and an MLflow run with all of it
plus the wall clock, which no committed file holds (a re-run with the same inputs changes no byte).
"""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("pairs")


def main(params_file: Path) -> None:
    from cocu.data import pairs, sources  # after run_stage has checked the params
    from cocu.tracking import start_run
    from cocu.tracking.run_info import write_json, write_metrics

    params = load_params(params_file)
    paths, cfg = params.paths, params.world
    if params.pairs.source == "synthetic":
        stats = [
            pairs.build_synthetic_corpus(cfg, cfg.counts.pairs, "pairs", Path(paths.pairs_shards), Path(paths.pairs_manifest),
                                         params.launcher),
            pairs.build_synthetic_corpus(cfg, cfg.counts.teacher, "teacher", Path(paths.teacher_shards),
                                         Path(paths.teacher_manifest), params.launcher),
        ]
        pairs.synthetic_gallery(cfg, Path(paths.pairs_manifest), Path(paths.world_gallery))
    else:
        shards = sources.pair_shards(params)
        fingerprint = Path(paths.inputs) / "pairs.json"
        sources.check_unchanged(fingerprint, sources.pairs_inputs(params), "the pair shards")
        stats = [pairs.index_corpus(shards, params.pairs, Path(paths.pairs_manifest), name="pairs",
                                    launcher=params.launcher)]
        sources.check_unchanged(fingerprint, sources.pairs_inputs(params), "the pair shards")  # not during the read
        pairs.write_empty_corpus(Path(paths.pairs_shards), None)  # the synthetic shards' folder stays empty
        pairs.write_empty_corpus(Path(paths.teacher_shards), Path(paths.teacher_manifest))
        pairs.real_gallery(shards, params.pairs, Path(paths.pairs_manifest), Path(paths.world_gallery))
    write_metrics(paths.pairs_metrics, pairs.headline(stats[0]))
    write_json(Path(paths.details) / "pairs.json", {s.name: s.as_details() for s in stats})
    metrics = {k: v for s in stats for k, v in s.as_metrics().items()}  # the wall clock goes here only
    with start_run(params, stage="pairs") as run:
        run.log_metrics(metrics)
        run.log_artifact(paths.world_gallery)
    log.info("pairs: %s", {k: v for k, v in metrics.items() if k.endswith(("valid", "mention_rate", "seconds"))})


if __name__ == "__main__":
    run_stage(main, __doc__)
