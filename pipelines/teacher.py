"""DVC stage `teacher`: the CLIP that curation uses, written to `paths.clip_weights`.

Synthetic profile: train the tiny open_clip CLIP that stands in for web-scale CLIP on the separate
teacher corpus with open_clip's CLIP loss, measured by held-out retrieval and its zero-shot
concept accuracy and neighbour precision against the hidden ground truth. Real profile
(`clip.source: pretrained`): check the local weights file `clip.weights_file` (sha256, optional
expected checksum; never a download; its format and activation against `clip.arch`: OpenAI's
weights need a `-quickgelu` architecture, see cocu/clip/model.py) and import it into
`paths.clip_weights`, so the weights are a DVC-tracked dependency of everything downstream. The
`inputs` stage's `clip.json` (the file's name, size and mtime) makes a replaced file re-run this stage.

`paths.teacher_metrics` (DVC metrics) holds a few headline numbers; `<paths.details>/teacher.json`
the held-out metrics, epoch history and per-step losses; MLflow all of it and the wall clock."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("teacher")


def main(params_file: Path) -> None:
    from cocu.clip.model import check_weights_file, import_weights  # after run_stage has checked the params
    from cocu.clip.teacher import QualityProbe, headline, run_teacher
    from cocu.data import world
    from cocu.data.manifest import read_ground_truth
    from cocu.data.shards import SkipCounter, iter_samples, list_shards
    from cocu.tracking import start_run
    from cocu.tracking.run_info import write_json, write_metrics

    params = load_params(params_file)
    paths = params.paths
    details = Path(paths.details) / "teacher.json"
    if params.clip.source == "pretrained":
        weights = Path(params.clip.weights_file) if params.clip.weights_file else None
        check_weights_file(weights, None, key="clip.weights_file")  # a clear error if it is missing
        metrics = import_weights(params.clip, weights, Path(paths.clip_weights))
        write_metrics(paths.teacher_metrics, {})  # nothing measured: the weights are imported
        write_json(details, {"metrics": metrics})
        log.info("teacher: imported %s (%s, %s, sha256 %s)", weights, params.clip.arch, metrics["activation"],
                 metrics["weights_sha256"])
        return
    truth = read_ground_truth(paths.teacher_manifest)
    probe = QualityProbe.from_ground_truth(truth["key"], truth["gt_present"], world.concept_names(),
                                           prompt=params.embed.prompt, k=params.index.num_neighbours)
    counter = SkipCounter()
    samples = iter_samples(list_shards(paths.teacher_shards), counter, params.pairs.image_keys, params.pairs.caption_key)
    with start_run(params, stage="teacher") as run:
        result = run_teacher(samples, params.clip, params.teacher, Path(paths.clip_weights), details, probe)
        write_metrics(paths.teacher_metrics, headline(result.metrics, sum(counter.as_dict().values())))
        for step, loss in enumerate(result.losses):
            if step % params.teacher.log_every == 0 or step == len(result.losses) - 1:
                run.log_metrics({"loss": loss}, step=step)
        run.log_metrics({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
        run.log_metrics(result.timings)
        run.log_metrics({f"skipped/{k}": v for k, v in counter.as_dict().items()})
        run.log_artifact(details)
    log.info("teacher: %s", json.dumps({k: round(v, 4) for k, v in {**result.metrics, **result.timings}.items()
                                        if isinstance(v, float)}))


if __name__ == "__main__":
    run_stage(main, __doc__)
