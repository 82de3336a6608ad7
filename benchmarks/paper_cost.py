"""Benchmark: what each stage costs at paper scale (27.0M pairs), from per-item costs measured here.

    python benchmarks/paper_cost.py            # measures (a few minutes on 2 cores), prints the tables
    python benchmarks/paper_cost.py --quick    # smaller measurements (a smoke run)
    python benchmarks/paper_cost.py --gpu-tflops 250 --faiss-tflops 40   # another GPU assumption

N = 2,751,755 (CC3M) + 9,716,186 (CC12M) + 14,517,984 (YFCC14M) = 26,985,925 pairs, D = 512 (CLIP
ViT-B/16), L = 8 neighbours, the paper profiles' settings (index: IVF-PQ, nlist 32768, nprobe 32,
m = 64; 30 epochs of GroupViT; the eight benchmarks).

Measured on this CPU, at the paper's shapes: JPEG decode + CLIP preprocessing of a 384 px image,
ViT-B/16 image and text towers (random weights: the cost does not depend on them), the float32
matmul rate, IVF-PQ list scanning at the paper's list length and the exact re-ranking, curation
(`run_curation`) per pair at D = 512, and the paper GroupViT's forward. FLOPs are counted with
torch's FlopCounterMode on the real models (matmuls and convolutions; a training step is counted
as 3 forwards).

GPU-hours are FLOPs / (an assumed effective GPU rate), stated in the output: by default an A100
(80 GB) at 110 TFLOP/s in bf16/fp16 (35% of its 312 TFLOP/s dense peak) for the networks and
exact search, and 14 TFLOP/s for faiss's float32 k-means and list assignment (70% of 19.5).
A data-bound stage takes the larger of its compute time and its decode time on its decoding
processes: `embed.workers` in an embed task, `data.workers` in pre-training (8 each in the paper
profiles). Replace the assumptions with what
scripts/gpu_check.sh measures on your GPUs. Memory and disk are computed from the array shapes and
from bytes per item measured here (parquet sizes).

Per-item times are measured on one thread (torch and faiss), so the CPU column is core-hours.
The machine has 2 cores shared with other work: the load average is printed; per-item times on a
busy machine are upper bounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

PAIRS = {"CC3M": 2_751_755, "CC12M": 9_716_186, "YFCC14M": 14_517_984}
N = sum(PAIRS.values())
D, L = 512, 8
NLIST, NPROBE, PQ_M, REFINE, TRAIN_SIZE, KMEANS_ITERS = 32768, 32, 64, 4, 1_000_000, 25
EPOCHS, PROMPTS, CONTEXT = 30, 3, 77
GB = 1e9
# the eight benchmarks: validation images, a typical image (h, w) before the card's resize, and the card
BENCHMARKS = {  # name: (images, (h, w), resize, crop, stride, long_side_cap)
    "voc": (1449, (375, 500), 448, 448, 224, None),
    "context": (5105, (375, 500), 448, 448, 224, None),
    "coco_object": (5000, (480, 640), 448, 448, 224, None),
    "coco_stuff": (5000, (480, 640), 512, 224, 112, None),
    "cityscapes": (500, (1024, 2048), None, 448, 224, None),
    "ade20k": (2000, (512, 683), 512, 224, 112, None),
    "imagenet_s50": (752, (375, 500), 448, 448, 224, 1000),
    "imagenet_s300": (4097, (375, 500), 448, 448, 224, 1000),
}


@dataclass(frozen=True)
class Assumptions:
    gpu: str = "A100 80GB"
    gpu_tflops: float = 110.0  # bf16/fp16 dense, effective (35% of 312)
    faiss_tflops: float = 14.0  # float32 GEMM in faiss's k-means and assignment, effective (70% of 19.5)
    train_workers: int = 8  # pre-training data workers per GPU (data.workers in the paper profiles)
    embed_workers: int = 8  # decoding processes per embed task (embed.workers in the paper profiles)
    node_ram_gb: float = 256.0


# ----------------------------------------------------------------------------------------------
# formulas (pure: tests/test_paper_cost.py checks them)


def index_memory(n: int = N, d: int = D, nlist: int = NLIST, pq_m: int = PQ_M, hnsw_m: int = 32) -> dict[str, float]:
    """Bytes of each index kind over n vectors of dimension d (vectors or codes, ids, centroids, links)."""
    ids = 8 * n  # IVF: one int64 id per vector
    centroids = 4 * nlist * d
    return {
        "flat fp32": 4 * n * d,
        "flat fp16 (faiss-gpu useFloat16; the embeddings file)": 2 * n * d,
        "IVF-Flat fp32": 4 * n * d + ids + centroids,
        "IVF-SQ8": n * d + ids + centroids,
        f"IVF-PQ m={pq_m} (8-bit codes)": pq_m * n + ids + centroids + 4 * 256 * d,
        f"HNSW M={hnsw_m} fp32": 4 * n * d + 4 * 2 * hnsw_m * n,
    }


def windows(size: tuple[int, int], resize: int | None, crop: int, stride: int, cap: int | None) -> int:
    """Sliding windows of one image under a protocol card (cocu.eval.segmenter's geometry)."""
    from cocu.eval.segmenter import capped_size, rescale_size

    h, w = capped_size(*size, cap)
    if resize is not None:
        h, w = rescale_size(h, w, resize, None)
    grid = lambda s: max(s - min(crop, s) + stride - 1, 0) // stride + 1  # noqa: E731 (slide_inference's)
    return grid(h) * grid(w)


def hours(seconds: float) -> float:
    return seconds / 3600


# ----------------------------------------------------------------------------------------------
# measurements


def best_time(fn, repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_decode(n: int) -> dict[str, float]:
    """A 384 px photo-like JPEG (quality 90): full decode, and decode + CLIP's 224 px preprocessing."""
    import open_clip

    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(n):
        small = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)  # smooth content, like a photo's
        img = Image.fromarray(small).resize((384, 384), Image.BICUBIC)
        noisy = np.clip(np.asarray(img, np.int16) + rng.integers(-12, 12, (384, 384, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    pre = open_clip.image_transform(224, is_train=False)

    def decode():
        for b in jpegs:
            Image.open(io.BytesIO(b)).convert("RGB")

    def decode_pre():
        for b in jpegs:
            pre(Image.open(io.BytesIO(b)).convert("RGB"))

    return {"decode_s": best_time(decode) / n, "decode_pre_s": best_time(decode_pre) / n,
            "jpeg_bytes": float(np.mean([len(b) for b in jpegs]))}


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure_clip(batch: int) -> dict[str, float]:
    """ViT-B/16 (QuickGELU, as OpenAI's weights) image and text towers: FLOPs and CPU seconds per item."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()  # random init: no download
    tok = open_clip.get_tokenizer("ViT-B-16-quickgelu")
    x = torch.randn(batch, 3, 224, 224)
    text = tok(["a photo of a red car parked next to a small tree on a sunny day"] * (4 * batch))
    with torch.inference_mode():
        f_img = count_flops(lambda: model.encode_image(x[:1]))
        f_txt = count_flops(lambda: model.encode_text(text[:1]))
        t_img = best_time(lambda: model.encode_image(x), repeat=2) / batch
        t_txt = best_time(lambda: model.encode_text(text), repeat=2) / len(text)
    return {"flops_image": f_img, "flops_text": f_txt, "cpu_s_image": t_img, "cpu_s_text": t_txt,
            "params": float(sum(p.numel() for p in model.parameters()))}


def measure_gemm() -> float:
    """float32 matmul rate of this CPU (GFLOP/s), torch."""
    a, b = torch.randn(4096, 512), torch.randn(8192, 512)
    return 2 * 4096 * 8192 * 512 / best_time(lambda: torch.mm(a, b.T)) / 1e9


def measure_ivfpq(n: int, queries: int) -> dict[str, float]:
    """IVF-PQ at the paper's list length: n clustered vectors in n / (N / nlist) lists, nprobe
    lists scanned per query (the same number of codes as at 27M); the coarse step against nlist
    centroids timed on its own; the exact re-ranking of refine * L candidates; bytes per vector."""
    import faiss

    from cocu.concepts.retrieval import refine_exact

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(64, n // 500), D)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    per_list = N / NLIST
    nlist = max(8, int(round(n / per_list)))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(D), D, nlist, PQ_M, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(x[: min(n, 50 * nlist + 20_000)])
    index.add(x)
    index.nprobe = min(NPROBE, nlist)
    q = x[rng.choice(n, queries, replace=False)]
    scan_s = best_time(lambda: index.search(q, REFINE * L), repeat=2) / queries
    scanned = index.nprobe * n / nlist
    coarse = faiss.IndexFlatIP(D)
    coarse.add(rng.standard_normal((NLIST, D)).astype(np.float32))
    coarse_s = best_time(lambda: coarse.search(q, NPROBE), repeat=2) / queries
    emb16 = x.astype(np.float16)
    _, cand = index.search(q, REFINE * L)
    refine_s = best_time(lambda: refine_exact(emb16, q, cand, L), repeat=2) / queries
    with tempfile.TemporaryDirectory() as tmp:
        faiss.write_index(index, f"{tmp}/i.faiss")
        size = os.path.getsize(f"{tmp}/i.faiss")
    return {"scan_s": scan_s * per_list * NPROBE / scanned, "coarse_s": coarse_s, "refine_s": refine_s,
            "bytes_per_vector": (size - 4 * nlist * D - 4 * 256 * D) / n, "sample": float(n), "nlist": float(nlist)}


def measure_curate(n: int) -> dict[str, float]:
    """`run_curation` at D = 512, L = 8 (index excluded): seconds and archive bytes per pair."""
    spec = importlib.util.spec_from_file_location("bench_curation", Path(__file__).with_name("curation.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import dataclasses

    from cocu.concepts.archive import read_caption_concepts, run_curation
    from cocu.concepts.retrieval import exact_self_knn
    from cocu.config import load_params

    world = bench.make_world(n, D, vocab=2000, seed=0)
    neigh, _ = exact_self_knn(world["emb"], L)
    with tempfile.TemporaryDirectory() as tmp:
        emb_path, neigh_path, concepts_path = bench.write_inputs(world, neigh, Path(tmp) / "in")
        captions = read_caption_concepts(concepts_path, world["names"])
        cfg = dataclasses.replace(load_params(Path(__file__).resolve().parents[1] / "params.yaml").curation,
                                  batch_size=1024, shard_size=n)  # the repo's curation settings
        t0 = time.perf_counter()
        run_curation(emb_path, neigh_path, captions, world["names"], world["concept_emb"].astype(np.float32),
                     Path(tmp) / "out", cfg, progress=False)
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "out").glob("archive-*.parquet"))
    return {"s_per_pair": seconds / n, "bytes_per_pair": size / n}


def measure_groupvit(timed: bool) -> dict[str, float]:
    """The paper GroupViT: FLOPs of one training sample's forward (224 px image, a caption and K
    prompts of 77 tokens) and of one evaluation window at 224 and 448 px; optionally the CPU
    seconds of one window at 224."""
    from cocu.config import paper_model_config
    from cocu.models.factory import build_model
    from cocu.training.batches import random_pairs

    cfg = paper_model_config()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images, texts, prompts = random_pairs(1, 224, cfg.text.context_length, PROMPTS)
    with torch.inference_mode():
        f_train = count_flops(lambda: model(images, texts, prompts))
        f224 = count_flops(lambda: model.encode_image_groups(torch.randn(1, 3, 224, 224)))
        f448 = count_flops(lambda: model.encode_image_groups(torch.randn(1, 3, 448, 448)))
        t224 = best_time(lambda: model.encode_image_groups(torch.randn(1, 3, 224, 224)), 1) if timed else float("nan")
    return {"flops_sample_fwd": f_train, "flops_window_224": f224, "flops_window_448": f448, "cpu_s_window_224": t224,
            "params": float(sum(p.numel() for p in model.parameters()))}


def measure_manifest(n: int) -> dict[str, float]:
    """Manifest parquet bytes per row and pandas bytes per row, captions of about 60 characters."""
    import pandas as pd

    from cocu.data.manifest import write_manifest

    rng = np.random.default_rng(0)
    words = np.array(["photo", "of", "a", "the", "red", "man", "woman", "dog", "street", "city", "with", "on",
                      "tree", "car", "blue", "sky", "in", "at", "beach", "house", "people", "old", "new"])
    captions = [" ".join(words[rng.integers(0, len(words), rng.integers(6, 16))]) for _ in range(n)]
    frame = pd.DataFrame({"key": [f"yfcc14m/{i:09d}" for i in range(n)],
                          "shard": [f"yfcc14m/{i // 10000:05d}.tar" for i in range(n)], "caption": captions})
    with tempfile.TemporaryDirectory() as tmp:
        write_manifest(frame, f"{tmp}/m.parquet")
        size = os.path.getsize(f"{tmp}/m.parquet")
    return {"parquet_bytes_per_row": size / n, "pandas_bytes_per_row": frame.memory_usage(deep=True).sum() / n,
            "caption_chars": float(np.mean([len(c) for c in captions]))}


# ----------------------------------------------------------------------------------------------
# the tables


def fmt(x: float, unit: str = "") -> str:
    if x != x:  # nan
        return "-"
    for bound, spec in ((1e4, ",.0f"), (100, ".0f"), (10, ".1f"), (0, ".2f")):
        if abs(x) >= bound:
            return f"{x:{spec}}{unit}"
    return f"{x:.2g}{unit}"


def tables(m: dict, a: Assumptions) -> str:
    gpu = a.gpu_tflops * 1e12
    faiss_rate = a.faiss_tflops * 1e12
    cpu_gemm = m["gemm_gflops"] * 1e9
    clip, dec, ivf, cur, gv, man = m["clip"], m["decode"], m["ivfpq"], m["curate"], m["groupvit"], m["manifest"]
    out = [f"N = {' + '.join(f'{v:,}' for v in PAIRS.values())} = {N:,} pairs (27.0M), D = {D}, L = {L}.",
           f"Assumed GPU: {a.gpu}, {a.gpu_tflops:.0f} TFLOP/s effective in bf16/fp16 (networks, exact search), "
           f"{a.faiss_tflops:.0f} TFLOP/s in faiss's float32 k-means/assignment; {a.embed_workers} decoding "
           f"workers per embed task, {a.train_workers} per GPU in pre-training. Measured here on one core: float32 matmul {m['gemm_gflops']:.0f} GFLOP/s; "
           "the CPU column is core-hours at the measured per-item costs.", ""]
    rows = []
    # pairs
    pairs_cpu = N * dec["decode_s"]
    rows.append(("pairs (validation)", f"N x decode {fmt(dec['decode_s'] * 1e3)} ms", "-",
                 fmt(hours(pairs_cpu)), f"~1 GB a task; join: N x {fmt(man['pandas_bytes_per_row'])} B = "
                 f"{fmt(N * man['pandas_bytes_per_row'] / GB)} GB", f"manifest {fmt(N * man['parquet_bytes_per_row'] / GB)} GB"))
    # embed
    f_pair = clip["flops_image"] + clip["flops_text"]
    embed_gpu = N * f_pair / gpu
    embed_load = N * dec["decode_pre_s"] / a.embed_workers  # embed.workers decoding processes per task
    embed_cpu = N * (clip["cpu_s_image"] + clip["cpu_s_text"] + dec["decode_pre_s"])
    rows.append(("embed (ViT-B/16)", f"N x {fmt(f_pair / 1e9)} GFLOP (image {fmt(clip['flops_image'] / 1e9)} + text "
                 f"{fmt(clip['flops_text'] / 1e9)}); decode+preprocess {fmt(dec['decode_pre_s'] * 1e3)} ms on "
                 f"{a.embed_workers} embed.workers", f"{fmt(hours(max(embed_gpu, embed_load)))} (compute "
                 f"{fmt(hours(embed_gpu))}, decoding {fmt(hours(embed_load))}; with embed.workers 0: "
                 f"{fmt(hours(max(embed_gpu, embed_load * a.embed_workers)))})",
                 f"{fmt(hours(embed_cpu))} without a GPU",
                 f"GPU ~2 GB (fp16 weights {fmt(clip['params'] * 2 / GB)} GB + a batch)",
                 f"2 x N x D x 2 B = {fmt(4 * N * D / GB)} GB (+ as much in the partial folder until joined)"))
    # index: IVF-PQ trained once, queries in tasks
    f_train = KMEANS_ITERS * TRAIN_SIZE * NLIST * D * 2 + N * NLIST * D * 2  # k-means + assigning every row
    q_cpu = N * (ivf["scan_s"] + ivf["refine_s"])
    q_coarse = N * NLIST * D * 2
    idx_bytes = index_memory()[f"IVF-PQ m={PQ_M} (8-bit codes)"]
    rows.append((f"index (IVF-PQ, nlist {NLIST}, m {PQ_M}, re-rank {REFINE}L)",
                 f"train {KMEANS_ITERS} x {TRAIN_SIZE:,} x {NLIST} x D x 2 + add N x {NLIST} x D x 2 = "
                 f"{fmt(f_train / 1e15)} PFLOP; per query: scan {fmt(ivf['scan_s'] * 1e3)} ms + re-rank "
                 f"{fmt(ivf['refine_s'] * 1e3)} ms (CPU) + coarse {fmt(NLIST * D * 2 / 1e6)} MFLOP",
                 f"train+add {fmt(hours(f_train / faiss_rate))}; coarse {fmt(hours(q_coarse / faiss_rate))}",
                 f"queries {fmt(hours(q_cpu))} (scan + re-rank on CPU)",
                 f"index {fmt(idx_bytes / GB)} GB + the embeddings mapped for re-ranking ({fmt(2 * N * D / GB)} GB page cache)",
                 f"index {fmt(idx_bytes / GB)} GB; neighbours N x L x 12 B = {fmt(N * L * 12 / GB)} GB"))
    exact = 2 * N * N * D
    rows.append(("index (flat, exact) on GPUs", f"2 N^2 D = {fmt(exact / 1e18)} EFLOP (each task searches its rows "
                 "against all N)", fmt(hours(exact / gpu)),
                 f"{fmt(hours(exact / 2 / cpu_gemm))} (the symmetric blocked search, N^2 D, at the matmul rate)",
                 f"GPU: N x D fp16 = {fmt(2 * N * D / GB)} GB (fits 40 and 80 GB GPUs)",
                 f"neighbours {fmt(N * L * 12 / GB)} GB"))
    # curate
    rows.append(("curate", f"N x {fmt(cur['s_per_pair'] * 1e6)} us (measured, D = {D}, V = 2000)", "-",
                 fmt(hours(N * cur["s_per_pair"])), "batch-bounded (~1 GB, estimated) + inputs mapped",
                 f"archives N x {fmt(cur['bytes_per_pair'])} B = {fmt(N * cur['bytes_per_pair'] / GB)} GB"))
    # pretrain
    f_step = 3 * gv["flops_sample_fwd"]
    train_flops = EPOCHS * N * f_step
    train_load = EPOCHS * N * dec["decode_pre_s"] / a.train_workers  # decode + crop/resize, about CLIP's
    train_gpu = max(train_flops / gpu, train_load)
    rows.append((f"pretrain (GroupViT, {EPOCHS} epochs, per variant and seed)",
                 f"{EPOCHS} x N x 3 x {fmt(gv['flops_sample_fwd'] / 1e9)} GFLOP (fwd; 1 + {PROMPTS} texts); "
                 f"loading {EPOCHS} x N x {fmt(dec['decode_pre_s'] * 1e3)} ms on {a.train_workers} data workers",
                 f"{fmt(hours(train_gpu))} (compute {fmt(hours(train_flops / gpu))}, loading "
                 f"{fmt(hours(train_load))}; / 16 GPUs: {fmt(hours(train_gpu) / 16)} h)", "-",
                 "see gpu_check (train_step peak memory)", "checkpoints ~0.7 GB each"))
    # evaluate
    work = {b: n * windows(size, r, c, s, cap) for b, (n, size, r, c, s, cap) in BENCHMARKS.items()}
    eval_flops = sum(work[b] * gv[f"flops_window_{BENCHMARKS[b][3]}"] for b in BENCHMARKS)
    per_bench = ", ".join(f"{b} {work[b]:,}" for b in BENCHMARKS)
    rows.append(("evaluate (8 benchmarks, per checkpoint)",
                 f"windows: {per_bench}; {fmt(gv['flops_window_224'] / 1e9)} GFLOP at 224 px, "
                 f"{fmt(gv['flops_window_448'] / 1e9)} at 448", fmt(hours(eval_flops / gpu)),
                 fmt(hours(eval_flops / (gv["flops_window_224"] / gv["cpu_s_window_224"])))
                 if gv["cpu_s_window_224"] == gv["cpu_s_window_224"] else "-",
                 "~2 GB", "results + overlays: MB"))
    out.append("| stage | work at 27.0M pairs (formula, per-item cost measured here) | GPU-hours | CPU core-hours "
               "| memory | disk |")
    out.append("|---|---|---:|---:|---|---|")
    out += [f"| {' | '.join(r)} |" for r in rows]
    out += ["", f"Which index fits in memory at {N:,} x {D} (vectors or codes + ids + centroids):", "",
            f"| index | GB | 40 GB GPU | 80 GB GPU | {a.node_ram_gb:.0f} GB node |", "|---|---:|---|---|---|"]
    for kind, size in index_memory().items():
        fit = lambda cap: "yes" if size / GB <= 0.9 * cap else "no"  # noqa: E731 (10% headroom)
        gpu_fit = "-" if kind.startswith("HNSW") else None
        out.append(f"| {kind} | {size / GB:.1f} | {gpu_fit or fit(40)} | {gpu_fit or fit(80)} | {fit(a.node_ram_gb)} |")
    out += ["", f"IVF-PQ measured here: {ivf['bytes_per_vector']:.1f} bytes a vector in the written index "
            f"(m = {PQ_M} code bytes + 8 id bytes), on {int(ivf['sample']):,} vectors in {int(ivf['nlist'])} lists of "
            f"~{N / NLIST:.0f} (the paper's list length)."]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small measurements (a smoke run)")
    parser.add_argument("--gpu", default=Assumptions.gpu)
    parser.add_argument("--gpu-tflops", type=float, default=Assumptions.gpu_tflops)
    parser.add_argument("--faiss-tflops", type=float, default=Assumptions.faiss_tflops)
    parser.add_argument("--train-workers", type=int, default=Assumptions.train_workers)
    parser.add_argument("--embed-workers", type=int, default=Assumptions.embed_workers)
    args = parser.parse_args()
    a = Assumptions(args.gpu, args.gpu_tflops, args.faiss_tflops, args.train_workers, args.embed_workers)
    import faiss

    torch.set_num_threads(1)  # per-item costs on one core: the table's CPU column is core-hours
    faiss.omp_set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; measuring on one thread ...", flush=True)
    q = args.quick
    m = {}
    for name, fn in (("gemm_gflops", measure_gemm), ("decode", lambda: measure_decode(8 if q else 64)),
                     ("manifest", lambda: measure_manifest(20_000 if q else 200_000)),
                     ("clip", lambda: measure_clip(2 if q else 8)),
                     ("ivfpq", lambda: measure_ivfpq(20_000 if q else 200_000, 200 if q else 2000)),
                     ("curate", lambda: measure_curate(2_000 if q else 20_000)),
                     ("groupvit", lambda: measure_groupvit(timed=not q))):
        t0 = time.perf_counter()
        m[name] = fn()
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print()
    print(tables(m, a))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
