"""Where a checkpoint's zero-shot segmentation loses its mIoU (cocu/eval/diagnostics.py says what
each number means):

    python scripts/diagnose.py data/checkpoints/oracle-s0.pt                  # synth_things
    python scripts/diagnose.py data/checkpoints/*-s0.pt --benchmark synth_stuff --images 200

One row per checkpoint: the protocol's mIoU, the same segments without the background rule, with
the true background, the grouping's ceiling (each segment labelled with its majority class), the
segments per image and the image-level presence AUC of the classes; on a card with a background,
also where the protocol's foreground lands (% of its pixels on the background, % of the images
where most of it does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cocu.config import load_params  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--benchmark", default="synth_things", help="a card of eval.benchmarks (default synth_things)")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--images", type=int, default=None, help="only the first N images")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    if args.benchmark not in params.eval.benchmarks:
        ap.error(f"--benchmark {args.benchmark!r}: not a card of eval.benchmarks in {args.params} "
                 f"(cards: {', '.join(params.eval.benchmarks)})")
    import torch

    from cocu.data.benchmarks import benchmark_root
    from cocu.data.readers import open_benchmark
    from cocu.eval.diagnostics import FOREGROUND_SHARES, diagnose_benchmark, predictions_for
    from cocu.eval.evaluate import load_model
    from cocu.eval.runner import benchmark_text_embeddings
    from cocu.models.text import build_tokenizer

    torch.set_num_threads(max(1, params.eval.threads))
    card = params.eval.benchmarks[args.benchmark]
    bench = open_benchmark(card, benchmark_root(params, args.benchmark))
    cols = predictions_for(card)
    shares = FOREGROUND_SHARES if card.has_background else ()
    print(f"{args.benchmark}: mIoU of each prediction from the same segments (x 100)\n")
    print("| checkpoint | " + " | ".join(cols) + " | segments / image | presence AUC | "
          + "".join(f"{c} (%) | " for c in shares) + "images |")
    print("|---" * (len(cols) + len(shares) + 4) + "|")
    for ckpt in args.checkpoints:
        model, cfg = load_model(ckpt, torch.device("cpu"))
        text = benchmark_text_embeddings(model, build_tokenizer(cfg.text), bench)
        r = diagnose_benchmark(model, bench, text, scale=model.scale(), mean=params.data.mean, std=params.data.std,
                               max_images=args.images)
        print(f"| {ckpt} | " + " | ".join(f"{r[c]:.2f}" for c in cols)
              + f" | {r['segments_per_image']:.2f} | {r['presence_auc']:.3f} | "
              + "".join(f"{r[c]:.1f} | " for c in shares) + f"{int(r['images'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
