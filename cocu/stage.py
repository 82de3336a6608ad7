"""What every `pipelines/*.py` entry point shares: `--params`, logging, and a clear error exit.

A stage script imports only this module and `cocu.config` at its top and its heavy libraries
(torch, numpy, the stage's library) inside `main`, so `run_stage` checks the params file before
any of them load: a bad file fails in a fraction of a second, before any work is done.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from cocu.config import ConfigError, load_params


def run_stage(main: Callable[..., None], doc: str | None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Parse `--params PATH` (default params.yaml) and any extra flags, validate the params file, then
    call `main(params, **flags)`.

    A bad params file or a missing input ends the process with status 2 and a one-line message that
    names the file or key, instead of a traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    if extra is not None:
        extra(parser)
    args = vars(parser.parse_args())
    params = args.pop("params")
    try:
        load_params(params)  # before `main` imports anything heavy
        main(params, **args)
    except (ConfigError, FileNotFoundError) as e:
        logging.getLogger("cocu").error("%s", e)
        sys.exit(2)
