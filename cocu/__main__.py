"""`python -m cocu ...`: small user commands (profiles; the segmentation demo comes with cocu.eval)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cocu import profiles
from cocu.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocu", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profile", help="apply a profile (profiles/NAME.yaml) to params.yaml")
    prof.add_argument("name")
    prof.add_argument("--params", type=Path, default=Path("params.yaml"))
    prof.add_argument("--folder", type=Path, default=Path("profiles"))
    how = prof.add_mutually_exclusive_group()
    how.add_argument("--exp", action="store_true", help="dvc exp run -n NAME -S ... (default: print the command)")
    how.add_argument("--queue", action="store_true", help="as --exp, queued (dvc queue start runs it)")
    how.add_argument("--write", action="store_true", help="merge the profile into the params file in place")
    args = parser.parse_args(argv)
    try:
        if args.write:
            profiles.write(args.params, args.name, args.folder)
            print(f"{args.params}: profile {args.name} applied")
            return 0
        if args.exp or args.queue:
            return profiles.run_experiment(args.params, args.name, args.folder, queue=args.queue)
        profiles.compose(args.params, args.name, args.folder)
        print(" ".join(["dvc", "exp", "run", "-n", args.name] + [f"-S '{o}'" for o in profiles.overrides(args.name, args.folder)]))
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
