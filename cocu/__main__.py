"""`python -m cocu ...`: small user commands (profiles; the segmentation demo comes with cocu.eval)."""

from __future__ import annotations

import argparse
import shlex
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
    seg = sub.add_parser("segment", help="zero-shot segmentation of one image into the given classes (demo)")
    seg.add_argument("image", type=Path)
    seg.add_argument("--classes", required=True, help='comma-separated class names, e.g. "sky,grass,dog"')
    seg.add_argument("--checkpoint", type=Path, required=True, help="a pre-trained checkpoint (data/checkpoints/*.pt)")
    seg.add_argument("--out", type=Path, default=Path("overlay.png"))
    seg.add_argument("--params", type=Path, default=Path("params.yaml"))
    seg.add_argument("--protocol", default="synth_all", help="protocol card (eval.benchmarks.NAME) to segment under")
    launch = sub.add_parser("launch", help="print the sbatch scripts the pipeline's GPU stages would submit")
    launch.add_argument("--dry-run", action="store_true", required=True, help="print only; submit nothing")
    launch.add_argument("--params", type=Path, default=Path("params.yaml"))
    launch.add_argument("--profile", default=None, help="apply profiles/NAME.yaml first (e.g. paper-cc3m)")
    launch.add_argument("--folder", type=Path, default=Path("profiles"))
    args = parser.parse_args(argv)
    if args.command == "launch":
        return _dry_run(args)
    if args.command == "segment":
        return _segment(args)
    try:
        if args.write:
            profiles.write(args.params, args.name, args.folder)
            print(f"{args.params}: profile {args.name} applied")
            return 0
        if args.exp or args.queue:
            return profiles.run_experiment(args.params, args.name, args.folder, queue=args.queue)
        profiles.compose(args.params, args.name, args.folder)
        print(" ".join(["dvc", "exp", "run", "-n", args.name]
                       + [f"-S {shlex.quote(o)}" for o in profiles.overrides(args.name, args.folder, args.params)]))
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dry_run(args: argparse.Namespace) -> int:
    """One sbatch script per launched stage, as submitit would write it: the job array of each
    N-sized stage (`launcher.stages`) and each pretrain run."""
    from cocu.config import Params, from_dict, read_yaml
    from cocu.launch.executor import ARRAY_STAGES, sbatch_script, stage_launcher, stage_tasks
    from cocu.training.runs import run_name

    try:
        raw = profiles.compose(args.params, args.profile, args.folder) if args.profile else read_yaml(args.params)
        params = from_dict(Params, raw, source=str(args.params))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        jobs = [(stage, stage_launcher(params.launcher, stage), stage_tasks(params.launcher, stage))
                for stage in ARRAY_STAGES]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs += [(f"pretrain-{run_name(v, s)}", params.launcher, 0) for v in params.pretrain.variants
             for s in params.pretrain.seeds]
    for name, launcher, tasks in jobs:
        what = f"array of {tasks} task(s)" if tasks else "job"
        print(f"# ---- {name} ({launcher.cluster}; {what}; profile {params.run.profile}) ----")
        print(sbatch_script(launcher, name, shard=bool(tasks), array=tasks))
    return 0


def _segment(args: argparse.Namespace) -> int:
    """The demo. Bad input (no class, a file that is not an image, a missing checkpoint or params
    file) is one `error:` line naming the flag or file, exit status 2, before any model is loaded."""
    import dataclasses

    import numpy as np

    from cocu.config import load_params
    from cocu.eval.evaluate import segment_image
    from cocu.eval.overlay import write_overlay

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    classes = list(dict.fromkeys(c.strip() for c in args.classes.split(",") if c.strip()))  # order kept, no repeats
    if not [c for c in classes if c != "background"]:
        return fail(f"--classes {args.classes!r} names no class to segment into: give comma-separated names, "
                    'e.g. --classes "sky,grass,dog" (background alone is not enough)')
    try:
        params = load_params(args.params)
    except (ConfigError, FileNotFoundError) as e:
        return fail(str(e))
    if args.protocol not in params.eval.benchmarks:
        return fail(f"--protocol: {args.params} has no protocol card eval.benchmarks.{args.protocol} "
                    f"(known: {', '.join(sorted(params.eval.benchmarks))})")
    if not args.checkpoint.is_file():
        return fail(f"--checkpoint: file not found: {args.checkpoint} (a pre-trained checkpoint, "
                    "e.g. data/checkpoints/cocu-s0.pt from `dvc repro`)")
    try:
        image = read_image(args.image)
    except ValueError as e:
        return fail(str(e))
    card = params.eval.benchmarks[args.protocol]
    if "background" in classes and not card.has_background:
        card = dataclasses.replace(card, has_background=True, bg_thresh=card.bg_thresh or 0.95)
    names = (["background"] + [c for c in classes if c != "background"]) if card.has_background else classes
    pred = segment_image(image, names, args.checkpoint, card, params.data.mean, params.data.std)
    write_overlay(image, pred, names, args.out)
    present = sorted({names[i] for i in np.unique(pred)})
    print(f"{args.out}: {', '.join(present)}")
    return 0


def read_image(path: Path) -> "np.ndarray":
    """[H, W, 3] uint8 RGB of an image file; a missing file or one PIL cannot decode is a ValueError
    naming the file."""
    import numpy as np
    from PIL import Image

    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError: OSError
        raise ValueError(f"{path}: not an image that can be read ({type(e).__name__}: {e})") from None


if __name__ == "__main__":
    sys.exit(main())
