"""`python -m cocu.check_params`: validate a params file, then write a constant stamp.

The first DVC stage (`params`) runs this. Every other stage depends on the stamp, so `dvc repro`
with a bad params file stops here, before DVC removes any stage's outputs. The stamp's content is
constant, so a valid change to the params re-runs only the stages whose own params changed.
It imports nothing but `cocu.config` (a few milliseconds, no torch).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cocu.config import ConfigError, load_params

STAMP_TEXT = "params valid (python -m cocu.check_params); DVC stages depend on this file\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocu.check_params", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument("--stamp", type=Path, default=None, help="write this constant file once the params are valid")
    args = parser.parse_args(argv)
    try:
        load_params(args.params)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.stamp is not None:
        args.stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.stamp.with_name(args.stamp.name + ".tmp")
        tmp.write_text(STAMP_TEXT)
        os.replace(tmp, args.stamp)
    print(f"{args.params}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
