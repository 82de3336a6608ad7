"""Benchmark: CLIP embedding throughput and neighbour-search throughput on this machine.

    python benchmarks/embed_index.py            # full: N = 10k, 100k, 1M (about 4-5 minutes on 2 cores)
    python benchmarks/embed_index.py --quick    # smoke: N = 10k only, small batches

Embedding: images/s of the tiny synthetic CLIP (model only, and with open_clip's PIL
preprocessing) and of a randomly initialised ViT-B-16 at a small batch (no weights are loaded).
Search: D = 512 float32 unit vectors drawn around random centres (a clustered cloud like real
embeddings; `--data uniform` is the structureless worst case for IVF). For each N: exact search
(cocu.concepts.retrieval.exact_knn, and faiss IndexFlatIP), and IVF with nlist = 4 sqrt(N) and the
smallest nprobe whose recall@8 against exact search is >= 0.95, all on a sample of queries drawn
from the database; "full self-search" extrapolates the query rate to all N rows.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cocu.config import load_params  # noqa: E402
from cocu.clip.model import load_clip  # noqa: E402
from cocu.concepts.retrieval import build_index, exact_knn, recall_at_k, search_index  # noqa: E402

K = 8
PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")  # the repository's settings


def _timeit(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def bench_embedding(quick: bool) -> list[tuple[str, int, float]]:
    rows = []
    torch.manual_seed(0)
    model, _, pre_val, tok, _ = load_clip(PARAMS.clip, None)  # the synthetic teacher CLIP
    s = model.visual.image_size[0]
    bs = 64 if quick else 256
    x = torch.randn(bs, 3, s, s)
    with torch.inference_mode():
        t = _timeit(lambda: model.encode_image(x), 1 if quick else 3)
        rows.append((f"tiny CLIP image tower ({s}px)", bs, bs / t))
        tokens = tok(["a photo of a red car on the grass next to a small tree"] * bs)
        t = _timeit(lambda: model.encode_text(tokens), 1 if quick else 3)
        rows.append(("tiny CLIP text tower (captions/s)", bs, bs / t))
        rng = np.random.default_rng(0)
        pil = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for _ in range(bs)]
        t = _timeit(lambda: model.encode_image(torch.stack([pre_val(im) for im in pil])), 1 if quick else 3)
        rows.append(("tiny CLIP + open_clip PIL preprocessing", bs, bs / t))
        big = open_clip.create_model("ViT-B-16", pretrained=None).eval()  # random init: no download
        bs = 2 if quick else 8
        x = torch.randn(bs, 3, 224, 224)
        t = _timeit(lambda: big.encode_image(x), 1 if quick else 2)
        rows.append(("ViT-B-16 image tower (224px, random init)", bs, bs / t))
    del big
    return rows


def clustered_unit(n: int, dim: int, rng: np.random.Generator, uniform: bool, chunk: int = 65536) -> np.ndarray:
    """[n, dim] float32 unit vectors: centre + noise (cosine to centre about 0.6), or uniform."""
    out = np.empty((n, dim), dtype=np.float32)
    centres = rng.standard_normal((max(16, int(math.sqrt(n))), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for lo in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - lo), dim), dtype=np.float32) / np.sqrt(dim)
        if not uniform:
            x = x * 1.3 + centres[rng.integers(0, len(centres), len(x))]
        out[lo : lo + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_search(n: int, dim: int, num_queries: int, uniform: bool) -> list[dict]:
    rng = np.random.default_rng(n)
    t0 = time.perf_counter()
    db = clustered_unit(n, dim, rng, uniform)
    gen_s = time.perf_counter() - t0
    q = db[np.sort(rng.choice(n, size=min(num_queries, n), replace=False))]
    rows = []

    t0 = time.perf_counter()
    exact_ids, _ = exact_knn(db, q, K)
    t = time.perf_counter() - t0
    gflops = 2 * len(q) * n * dim / t / 1e9
    rows.append(dict(n=n, method="exact_knn (cocu)", build_s=0.0, qps=len(q) / t, full_s=n * t / len(q),
                     recall=1.0, note=f"{gflops:.0f} GFLOP/s"))

    t0 = time.perf_counter()
    flat = build_index(db, replace(PARAMS.index, type="flat"))
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, _ = search_index(flat, q, K)
    t = time.perf_counter() - t0
    rows.append(dict(n=n, method="faiss IndexFlatIP", build_s=build_s, qps=len(q) / t, full_s=n * t / len(q),
                     recall=recall_at_k(ids, exact_ids), note=f"{2 * len(q) * n * dim / t / 1e9:.0f} GFLOP/s"))
    del flat

    nlist = int(round(4 * math.sqrt(n)))
    t0 = time.perf_counter()
    ivf = build_index(db, replace(PARAMS.index, type="ivf", nlist=nlist, nprobe=1))
    build_s = time.perf_counter() - t0
    chosen = None
    tried = []
    probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p < nlist] + [nlist]  # nlist: exhaustive
    for nprobe in probes:
        ivf.nprobe = nprobe
        t0 = time.perf_counter()
        ids, _ = search_index(ivf, q, K)
        t = time.perf_counter() - t0
        rec = recall_at_k(ids, exact_ids)
        tried.append(f"{nprobe}:{rec:.3f}")
        chosen = (nprobe, t, rec)
        if rec >= 0.95:
            break
    nprobe, t, rec = chosen
    missed = "" if rec >= 0.95 else "recall target 0.95 not reached below nprobe = nlist; "
    rows.append(dict(n=n, method=f"faiss IVF nlist={nlist} nprobe={nprobe}", build_s=build_s, qps=len(q) / t,
                     full_s=n * t / len(q), recall=rec, note=missed + "recall by nprobe " + " ".join(tried)))
    del ivf, db
    print(f"  N={n:,}: data generated in {gen_s:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 10k, small batches")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="database sizes (default 10k 100k 1M)")
    parser.add_argument("--queries", type=int, default=2000, help="query sample per size")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-embed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000, 1_000_000])
    queries = min(args.queries, 500) if args.quick else args.queries
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, faiss {faiss.__version__}, open_clip {open_clip.__version__}, "
          f"threads {args.threads}, cpu: {os.cpu_count()} logical")
    if not args.skip_embed:
        print("\n## Embedding throughput (CPU, inference mode, float32)\n")
        print("| model | batch | items/s |\n|---|---:|---:|")
        for name, bs, ips in bench_embedding(args.quick):
            print(f"| {name} | {bs} | {ips:,.1f} |", flush=True)
    print(f"\n## Neighbour search, D={args.dim}, k={K}, {queries} queries, {args.data} data\n", flush=True)
    rows = []
    for n in sizes:
        rows += bench_search(n, args.dim, queries, args.data == "uniform")
    print("\n| N | method | build s | queries/s | full self-search s (extrapolated) | recall@8 | note |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['method']} | {r['build_s']:.1f} | {r['qps']:,.0f} | {r['full_s']:,.1f} | "
              f"{r['recall']:.3f} | {r['note']} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
