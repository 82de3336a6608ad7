"""DVC stage `inputs` (always run): check that every input the profile names exists, and
fingerprint the external ones (names, sizes, mtimes; never their content) into `paths.inputs`.

The external data of a real profile (the img2dataset shards of `pairs.shards_glob`, the benchmarks
under `paths.benchmarks_external`, the CLIP file `clip.weights_file`) is only ever read: it is never
a DVC output, never cached, never written or deleted. DVC tracks these fingerprints instead, and
the stages that read the data depend on them: `pairs.json` (pairs, embed, pretrain), `clip.json`
(teacher), `benchmarks.json` (benchmarks, evaluate). The stage is `always_changed`, so every
`dvc repro` re-checks the data in a second and re-runs exactly what a change affects. On the
synthetic profile the files hold a constant note. A missing input (shards, benchmark folder, CLIP
file, vocabulary) stops the pipeline here, before anything costly runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cocu.config import load_params
from cocu.stage import run_stage

log = logging.getLogger("inputs")


def main(params_file: Path) -> None:
    from cocu.data.sources import fingerprint_inputs, write_fingerprint  # after run_stage has checked the params

    params = load_params(params_file)
    for name, payload in fingerprint_inputs(params).items():
        write_fingerprint(Path(params.paths.inputs) / name, payload)
    log.info("inputs: fingerprints written to %s", params.paths.inputs)


if __name__ == "__main__":
    run_stage(main, __doc__)
