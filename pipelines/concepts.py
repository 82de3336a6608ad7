"""DVC stage `concepts`: the vocabulary concepts each caption names (exact matches of its
lower-cased 1- to 4-grams, plurals and synonyms included), as lists in reading order.

DVC metrics `paths.concepts_metrics`: pairs, vocabulary concepts; `<paths.details>/concepts.json`:
also surface forms, concepts per caption and the share of captions without a concept."""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("concepts")


def main(params_file: Path) -> None:
    import numpy as np  # after run_stage has checked the params

    from cocu.concepts.archive import write_caption_concepts
    from cocu.concepts.vocabulary import load_vocabulary
    from cocu.data.manifest import read_manifest
    from cocu.tracking.run_info import write_json, write_metrics

    params = load_params(params_file)
    paths = params.paths
    vocab = load_vocabulary(paths.vocabulary, paths.synonyms, params.vocabulary)
    frame = read_manifest(paths.pairs_manifest)
    concepts = vocab.extract_many(frame["caption"])
    write_caption_concepts(paths.caption_concepts, frame["key"].tolist(), concepts)
    counts = np.array([len(c) for c in concepts])
    metrics = {"vocabulary/concepts": len(vocab), "vocabulary/surface_forms": len(vocab.surface),
               "captions": len(concepts), "concepts_per_caption": float(counts.mean()) if len(counts) else 0.0,
               "captions_without_concept": float((counts == 0).mean()) if len(counts) else 0.0}
    write_metrics(paths.concepts_metrics, {"pairs": metrics["captions"], "concepts": metrics["vocabulary/concepts"]})
    write_json(Path(paths.details) / "concepts.json", metrics)
    log.info("concepts: %s", metrics)


if __name__ == "__main__":
    run_stage(main, __doc__)
