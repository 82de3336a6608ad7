"""DVC stage `curate`: the concept archive of every pair (CoCu, docs/method.md §2-5): vision-driven
expansion over the L image neighbours, the official ranking score, and k-means clusters of each
archive's concepts. Parquet shards, streamed with memory bounded by the batch, resumable per
shard (the output is `persist`ed: a killed run redoes only unfinished shards). The shards are the
units of a job array (`launcher.stages.curate.tasks`), after one job that checks and fingerprints
the inputs; the archives are the same bytes for any number of tasks.

DVC metrics `paths.curate_metrics`: pairs, mean archive size, recall of the concepts captions
missed (synthetic world); `<paths.details>/curate.json`: every curation metric and the
leakage audit (with the leaked names), which the report reads; MLflow: the numbers, the time and
how many shards an earlier run had finished (neither is a committed byte)."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import flatten, load_params
from cocu.stage import run_stage

log = logging.getLogger("curate")


def main(params_file: Path) -> None:

    from cocu.clip.embed import read_concept_names
    from cocu.concepts.archive import CurationFiles, read_caption_concepts, run_curation_jobs
    from cocu.concepts.audit import benchmark_class_names, ground_truth_csr
    from cocu.concepts.metrics import curation_metrics, leakage_audit
    from cocu.concepts.vocabulary import load_vocabulary
    from cocu.tracking import start_run
    from cocu.tracking.run_info import numeric_leaves, write_json, write_metrics

    params = load_params(params_file)
    paths, cfg = params.paths, params.curation
    files = CurationFiles(Path(paths.image_embeddings), Path(paths.neighbours), Path(paths.caption_concepts),
                          Path(paths.concept_names), Path(paths.concept_embeddings), Path(paths.archives))
    stats = run_curation_jobs(files, cfg, params.launcher)
    names = read_concept_names(Path(paths.concept_names))
    captions = read_caption_concepts(paths.caption_concepts, names)
    truth = ground_truth_csr(paths.pairs_manifest, names)
    present, mentioned = truth if truth is not None else (None, None)
    metrics = curation_metrics(paths.archives, captions, names, present, mentioned, cfg.top_k)
    vocab = load_vocabulary(paths.vocabulary, paths.synonyms, params.vocabulary)
    leakage = leakage_audit(vocab, benchmark_class_names(params.eval.benchmarks))
    metrics |= {f"leakage/{b}/{k}": v for b, a in leakage.items() for k, v in a.items()}  # names: a list
    metrics |= {"pairs": stats.num_pairs, "shards": stats.num_shards, "missing_neighbours": stats.missing_neighbours}
    headline = {"pairs": stats.num_pairs, "archive_size": metrics["archive_size/mean"]}
    if "missed_recall/archive" in metrics:  # the hidden ground truth: synthetic world only
        headline["missed_recall"] = metrics["missed_recall/archive"]
    write_metrics(paths.curate_metrics, headline)
    write_json(Path(paths.details) / "curate.json", metrics)
    with start_run(params, stage="curate") as run:  # how this run went (time, reused shards): MLflow only
        run.log_metrics({**numeric_leaves(metrics), "seconds": stats.seconds, "shards_reused": stats.shards_reused})
        run.log_params({f"leakage.{b}": ", ".join(a["names"]) for b, a in leakage.items()})
    log.info("curate: %s", {k: round(v, 3) for k, v in flatten(metrics).items() if isinstance(v, float)})


if __name__ == "__main__":
    run_stage(main, __doc__)
