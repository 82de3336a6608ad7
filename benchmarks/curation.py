"""Benchmark: vectorised curation vs a per-pair reference loop that restates docs/method.md §2-4.

    python benchmarks/curation.py            # full: N = 100k (exact and IVF), N = 20k with clustering
    python benchmarks/curation.py --quick    # smoke run, a few seconds

Inputs (generated, seeded): N unit-norm float16 image embeddings (D = 512) around N / 100 topic
centres; V = 4k concepts; each topic has a pool of 10 concepts and each caption names 2-3 concepts
of its topic's pool, so neighbours share concepts; a concept's embedding is the mean centre of the
topics whose pool holds it, plus noise. Embeddings, neighbours and caption concepts are written
as the `curate` stage reads them, and the vectorised path is the stage's own `run_curation`
(parquet shards included) after the `index` stage's own search (flat, or a faiss IVF index).

The reference loop, per pair: one brute-force numpy inner product against all N rows, top-L by
argpartition, a Python loop per neighbour and per concept for the archive and the score, and a
Lloyd k-means per archive from the same deterministic init, in plain numpy and, as the official
code does, in scikit-learn (both timed). It is timed on `--ref-pairs` pairs and extrapolated to N
(stated in the output), with whichever is faster for it of one thread (BLAS and OpenMP) or the
default threads. Both paths must give the same archives: the benchmark counts any pair whose
concept order, scores (rtol 1e-4) or clusters differ.

Search: the machine's float32 matmul peak (best of numpy and torch, measured in the same run);
`exact_knn` and faiss IndexFlatIP on the same `--faiss-queries` queries back to back; then the
full N x N exact search as the `index` stage runs it (`flat` on a CPU: `exact_self_knn`, which
uses the symmetry of X X^T to do about half the multiply-adds; its rate is printed both as done
and as the equivalent 2 N^2 D of a plain search); IVF (faiss, `--nlist`, the smallest of
`--nprobes` reaching recall@L 0.95). Each ratio is printed with its matmul bound: the reference
rate against the symmetric search's multiply-adds at the measured peak with curation for free.

Peak memory: `run_curation` alone in a fresh process at N/4 and N (same shard size): peak total RSS (VmHWM, which
includes the memory-mapped inputs' pages, reclaimable) and peak anonymous RSS (sampled every 5 ms).

The machine has 2 cores shared with other work: the 1-min load average is printed at the start
and the end, and every ratio is computed from numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from cocu.concepts.archive import (  # noqa: E402
    read_archives,
    read_caption_concepts,
    run_curation,
    write_caption_concepts,
)
from cocu.config import CurationConfig, load_params  # noqa: E402
from cocu.concepts.retrieval import (  # noqa: E402
    build_index,
    exact_knn,
    recall_at_k,
    search_index,
    search_neighbours,
)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# inputs


def make_world(n: int, d: int, vocab: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    topics = max(1, n // 100)
    centres = unit(rng.standard_normal((topics, d)))
    topic = rng.integers(0, topics, n)
    noise = rng.standard_normal((n, d)) * (0.9 / math.sqrt(d))
    emb = unit(centres[topic] + noise).astype(np.float16)  # [N, D]
    pools = np.stack([rng.choice(vocab, 10, replace=False) for _ in range(topics)])  # [T, 10]
    acc = np.zeros((vocab, d))
    np.add.at(acc, pools.ravel(), np.repeat(centres, 10, axis=0))
    concept_emb = unit(acc + rng.standard_normal((vocab, d)) / math.sqrt(d)).astype(np.float16)  # [V, D]
    picks = np.take_along_axis(pools[topic], np.argsort(rng.random((n, 10)), axis=1), 1)[:, :3]  # [N, 3]
    counts = rng.integers(2, 4, n)
    lists = [row[:k].tolist() for row, k in zip(picks, counts)]
    names = [f"concept{c:05d}" for c in range(vocab)]
    return {"emb": emb, "concept_emb": concept_emb, "lists": lists, "names": names}


def write_inputs(world: dict, neigh: np.ndarray, folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "emb.npy", world["emb"])
    np.save(folder / "neigh.npy", neigh)
    names = world["names"]
    write_caption_concepts(folder / "concepts.parquet", [f"{i:09d}" for i in range(len(neigh))],
                           [[names[c] for c in row] for row in world["lists"]])
    return folder / "emb.npy", folder / "neigh.npy", folder / "concepts.parquet"


# ------------------------------------------------------------------------------------------------
# the per-pair reference (docs/method.md §2-4, one pair at a time)


def farthest_point_init(x: np.ndarray, k: int) -> np.ndarray:
    centres = [0]
    d = ((x - x[0]) ** 2).sum(1)
    for _ in range(1, k):
        centres.append(int(np.argmax(d)))
        d = np.minimum(d, ((x - x[centres[-1]]) ** 2).sum(1))
    return x[centres].copy()


def kmeans_one(x: np.ndarray, k: int, iters: int, backend: str) -> list[int]:
    """One archive: Lloyd from the farthest-point init, plain numpy or scikit-learn (the official library)."""
    c = farthest_point_init(x, k)
    if backend == "sklearn":
        labels = KMeans(k, init=c, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(x).labels_
    else:
        labels = None
        for _ in range(iters):
            new = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                if np.any(labels == j):
                    c[j] = x[labels == j].mean(0)
    first: dict[int, int] = {}
    return [first.setdefault(int(lab), len(first)) for lab in labels]


def reference_pair(i: int, db: np.ndarray, lists: list, concept_emb: np.ndarray, num_l: int,
                   cfg: CurationConfig, kmeans: str) -> tuple[list[int], list[float], list[int]]:
    sims = db @ db[i]  # [N] brute-force kNN query
    cand = np.argpartition(-sims, num_l - 1)[:num_l]
    neighbours = cand[np.lexsort((cand, -sims[cand]))]
    archive: list[int] = []
    for j in neighbours:
        for c in lists[j]:
            if c not in archive:
                archive.append(c)
    anchor = db[i]
    g, s = {}, {}
    for c in archive:
        u = concept_emb[c]
        g[c] = float(u @ anchor)
        s[c] = [float(u @ db[j]) for j in neighbours if c in lists[j]] + [g[c]]
    big = 0.0
    for c in archive:
        for value in s[c]:
            big = max(big, value)
    score = {c: (g[c] / big if big > 0 else 0.0) + g[c] / (sum(s[c]) / len(s[c])) for c in archive}
    ranked = sorted(archive, key=lambda c: -score[c])
    if not cfg.cluster:
        clusters = [0] * len(ranked)
    elif len(ranked) > cfg.min_cluster_size:
        k = math.ceil(cfg.cluster_ratio * len(ranked))
        clusters = kmeans_one(concept_emb[ranked], k, cfg.kmeans_iters, kmeans)
    else:
        clusters = list(range(len(ranked)))
    return ranked, [score[c] for c in ranked], clusters


def run_reference(rows: np.ndarray, world: dict, num_l: int, cfg: CurationConfig,
                  kmeans: str = "numpy") -> tuple[list, float, str]:
    """The reference on `rows`, timed with its faster thread setting: (archives, seconds, setting).

    A multi-threaded gemv (or scikit-learn's OpenMP k-means of a dozen points) is much slower
    than a single-threaded one when it is small or the cores are busy, and faster when it is
    memory-bound and they are not: one thread (BLAS and OpenMP) and the default are both timed on
    a tenth of the rows, and the faster one runs all of them.
    """
    db = world["emb"].astype(np.float32)
    concept_emb = world["concept_emb"].astype(np.float32)

    def run(sub: np.ndarray) -> tuple[list, float]:
        t0 = time.perf_counter()
        out = [reference_pair(int(i), db, world["lists"], concept_emb, num_l, cfg, kmeans) for i in sub]
        return out, time.perf_counter() - t0

    probe = rows[: max(1, len(rows) // 10)]
    run(rows[:2])  # warm-up (first calls into BLAS, OpenMP and scikit-learn)
    with threadpool_limits(1):
        t_one = run(probe)[1]
    t_all = run(probe)[1]
    if t_one <= t_all:
        with threadpool_limits(1):
            return (*run(rows), "1 thread")
    return (*run(rows), f"{os.cpu_count()} threads")


def compare(reference: list, table, rows: np.ndarray, names: list[str]) -> dict[str, int]:
    index = {c: i for i, c in enumerate(names)}
    concepts = table.column("concepts").to_pylist()
    scores = table.column("scores").to_pylist()
    clusters = table.column("clusters").to_pylist()
    bad = {"order": 0, "scores": 0, "clusters": 0}
    for (ref_c, ref_s, ref_k), i in zip(reference, rows):
        got = [index[c] for c in concepts[i]]
        bad["order"] += got != ref_c
        close = len(ref_s) == len(scores[i]) and np.allclose(scores[i], ref_s, rtol=1e-4, atol=1e-5)
        bad["scores"] += not close
        bad["clusters"] += got == ref_c and clusters[i] != ref_k
    return bad


# ------------------------------------------------------------------------------------------------
# machine peak, searches, memory


def matmul_peak() -> tuple[float, str]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4096, 512), dtype=np.float32)
    b = rng.standard_normal((8192, 512), dtype=np.float32)
    out = np.empty((4096, 8192), dtype=np.float32)
    flops = 2 * 4096 * 8192 * 512
    best = {}
    for name, fn in (("numpy", lambda: np.matmul(a, b.T, out=out)),
                     ("torch", lambda: torch.mm(torch.from_numpy(a), torch.from_numpy(b).T))):
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = flops / min(times) / 1e9
    name = max(best, key=best.get)
    return best[name], f"{name} (numpy {best['numpy']:.0f}, torch {best['torch']:.0f} GFLOP/s)"


RSS_CHILD = """
import json, sys, threading, time
from pathlib import Path
import numpy as np
from cocu.concepts.archive import read_caption_concepts, run_curation
from cocu.config import CurationConfig
a = json.loads(sys.argv[1])
peak_anon, stop = [0], threading.Event()
def status(key):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(ln.split()[1]) for ln in lines if ln.startswith(key))
def sample():
    while not stop.is_set():
        peak_anon[0] = max(peak_anon[0], status("RssAnon:"))
        time.sleep(0.005)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
names = Path(a["names"]).read_text().splitlines()
captions = read_caption_concepts(a["concepts"], names)
base, base_anon = status("VmRSS:"), status("RssAnon:")
t0 = time.perf_counter()
run_curation(a["emb"], a["neigh"], captions, names, np.load(a["concept_emb"]), a["out"],
             CurationConfig(**a["cfg"]), progress=False)
seconds = time.perf_counter() - t0
stop.set()
thread.join()
print(json.dumps([seconds, status("VmHWM:") / 1024, peak_anon[0] / 1024, base / 1024, base_anon / 1024]))
"""


def measure_rss(world: dict, paths: tuple[Path, Path, Path], cfg: CurationConfig) -> list[float]:
    """run_curation alone in a fresh interpreter (no faiss loaded): seconds and memory in MB."""
    folder = paths[0].parent
    (folder / "names.txt").write_text("\n".join(world["names"]))
    np.save(folder / "concept_emb.npy", world["concept_emb"])
    args = {"emb": str(paths[0]), "neigh": str(paths[1]), "concepts": str(paths[2]),
            "names": str(folder / "names.txt"), "concept_emb": str(folder / "concept_emb.npy"),
            "out": str(folder / "rss_out"), "cfg": asdict(cfg)}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, json.dumps(args)], capture_output=True, text=True,
                          check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def curate_files(world: dict, neigh: np.ndarray, folder: Path, cfg: CurationConfig):
    """Write the stage inputs, run `run_curation` (timed) and read the archives back."""
    emb_path, neigh_path, concepts_path = write_inputs(world, neigh, folder)
    captions = read_caption_concepts(concepts_path, world["names"])
    _, seconds = timed(run_curation, emb_path, neigh_path, captions, world["names"], world["concept_emb"],
                       folder / "out", cfg, progress=False)
    return read_archives(folder / "out"), seconds, (emb_path, neigh_path, concepts_path)


def bench_search(a, world: dict, res: dict) -> np.ndarray:
    """exact_knn vs faiss IndexFlatIP on the same queries back to back, then the stage's full N x N search."""
    emb, peak = world["emb"], res["matmul_peak_gflops"]
    flat = faiss.IndexFlatIP(a.d)
    flat.add(emb.astype(np.float32))
    q = emb[: a.faiss_queries]
    sub_flops = 2 * len(q) * a.n * a.d / 1e9
    _, t_ours = timed(exact_knn, emb, q, a.l)
    _, t_flat = timed(flat.search, q.astype(np.float32), a.l)
    res |= {"subset_exact_knn_gflops": sub_flops / t_ours, "faiss_flat_gflops": sub_flops / t_flat}
    print(f"{len(q)} queries x {a.n}, back to back: exact_knn {sub_flops / t_ours:.1f} GFLOP/s "
          f"({sub_flops / t_ours / peak:.0%} of peak), faiss IndexFlatIP {sub_flops / t_flat:.1f} GFLOP/s "
          f"({sub_flops / t_flat / peak:.0%} of peak)")
    del flat
    nb, t_search = timed(stage_search, emb, a.l)
    plain = 2 * a.n * a.n * a.d / 1e9  # GFLOP of a plain N x N search
    done = self_search_gflop(a.n, a.d)
    faiss_full = plain / res["faiss_flat_gflops"]
    res |= {"search_s": t_search, "search_gflops": done / t_search, "search_equivalent_gflops": plain / t_search,
            "faiss_flat_full_s_extrapolated": faiss_full, "search_bound_s": done / peak}
    print(f"the index stage's exact search (flat: exact_self_knn), all N x N (float16 input): {t_search:.1f} s; "
          f"{done / t_search:.1f} GFLOP/s done = {done / t_search / peak:.0%} of the matmul peak (target >= 50%), "
          f"{plain / t_search:.1f} GFLOP/s plain-search equivalent = {plain / t_search / peak:.0%}; faiss "
          f"IndexFlatIP at its rate above would take {faiss_full:.1f} s ({faiss_full / t_search:.2f}x longer)")
    return nb.ids


# the repository's settings (params.yaml), with the sizes each benchmark sets
PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def self_search_gflop(n: int, d: int) -> float:
    """GFLOP that exact_self_knn multiplies for N x N: every block pair a <= b once, 2 |a| |b| D each."""
    sizes = np.diff(np.r_[np.arange(0, n, PARAMS.index.block_size), n]).astype(np.float64)
    return (n * n + float(np.sum(sizes**2))) * d / 1e9


def bound_rate(n: int, d: int, peak: float) -> float:
    """Pairs/s if the exact search ran at the matmul peak and curation were free (the ratios' bound)."""
    return n / (self_search_gflop(n, d) / peak)


def stage_search(emb: np.ndarray, k: int):
    """What the `index` stage runs with `index.type: flat` on a CPU (exact_self_knn, default blocks)."""
    assert faiss.get_num_gpus() == 0, "flat search would not run exact_self_knn (a GPU)"
    return search_neighbours(emb, replace(PARAMS.index, type="flat", num_neighbours=k))


def bench_exact(a, world: dict, neigh: np.ndarray, rows: np.ndarray, tmp: Path, res: dict):
    cfg = replace(PARAMS.curation, cluster=False, batch_size=a.batch_size, shard_size=max(1, a.n // 4))
    table, t_cur, paths = curate_files(world, neigh, tmp / "exact", cfg)
    ref, t_ref, blas = run_reference(rows, world, a.l, cfg)
    ref_rate, t_search = len(rows) / t_ref, res["search_s"]
    vec_rate = a.n / (t_search + t_cur)
    bad = compare(ref, table, rows, world["names"])
    res["exact"] = {"curate_s": t_cur, "vectorised_pairs_s": vec_rate, "reference_pairs_s": ref_rate,
                    "speedup": vec_rate / ref_rate, "total_over_search": (t_search + t_cur) / t_search,
                    "mismatches": bad, "reference_threads": blas}
    print(f"\n[exact search, no clustering, N={a.n}]")
    print(f"  reference loop: {ref_rate:.1f} pairs/s (timed on {len(rows)} pairs, extrapolated to N; {blas})")
    bound = bound_rate(a.n, a.d, res["matmul_peak_gflops"]) / ref_rate
    res["exact"]["matmul_bound_speedup"] = bound
    print(f"  vectorised: search {t_search:.1f} s + curation {t_cur:.1f} s (run_curation, parquet included) "
          f"-> {vec_rate:.0f} pairs/s; speedup {vec_rate / ref_rate:.1f}x (target >= 20x; matmul bound {bound:.0f}x)")
    print(f"  total curation / bare search = {(t_search + t_cur) / t_search:.2f} (target <= 1.5)")
    print(f"  same archives on the {len(rows)} reference pairs: mismatches {bad}")
    return table, ref_rate, paths


def bench_ivf(a, world: dict, neigh: np.ndarray, rows: np.ndarray, exact_table, ref_rate: float, tmp: Path,
              res: dict) -> None:
    emb, nprobes = world["emb"], [int(x) for x in a.nprobes.split(",")]
    icfg = replace(PARAMS.index, type="ivf", nlist=a.nlist, nprobe=nprobes[0], train_size=min(a.n, 50 * a.nlist))
    index, t_build = timed(build_index, emb, icfg)
    sample = rows[: min(1000, len(rows))]  # nprobe is chosen on these, recall reported on all rows
    for nprobe in nprobes:
        index.nprobe = nprobe
        if recall_at_k(search_index(index, emb[sample], a.l)[0], neigh[sample]) >= 0.95:
            break
    (ivf_ids, _), t_ivf = timed(search_index, index, emb, a.l)
    recall = recall_at_k(ivf_ids[rows], neigh[rows])
    cfg = replace(PARAMS.curation, cluster=False, batch_size=a.batch_size, shard_size=max(1, a.n // 4))
    table, t_cur, _ = curate_files(world, ivf_ids, tmp / "ivf", cfg)
    got, want = table.column("concepts"), exact_table.column("concepts")
    same = np.mean([got[int(i)].as_py() == want[int(i)].as_py() for i in rows])
    rate = a.n / (t_build + t_ivf + t_cur)
    res["ivf"] = {"nlist": a.nlist, "nprobe": index.nprobe, "recall_at_l": recall, "build_s": t_build,
                  "search_s": t_ivf, "curate_s": t_cur, "pairs_s": rate, "speedup": rate / ref_rate,
                  "search_speedup_vs_exact": res["search_s"] / t_ivf, "same_archive_share": float(same)}
    print(f"\n[IVF nlist={a.nlist}, nprobe={index.nprobe} (the smallest of {nprobes} with recall >= 0.95 "
          f"on {len(sample)} queries), N={a.n}]")
    print(f"  recall@{a.l} = {recall:.4f} on the {len(rows)} reference pairs (target >= 0.95)")
    speed = res["search_s"] / t_ivf
    print(f"  build {t_build:.1f} s + search {t_ivf:.1f} s ({speed:.1f}x faster than exact) + curation "
          f"{t_cur:.1f} s -> {rate:.0f} pairs/s; speedup vs the reference loop "
          f"{rate / ref_rate:.1f}x (target >= 100x)")
    print(f"  archives identical to the exact-search ones: {same:.1%} of the reference pairs")


def bench_cluster(a, tmp: Path, res: dict) -> None:
    world = make_world(a.n_cluster, a.d, a.vocab, a.seed + 1)
    nb, t_search = timed(stage_search, world["emb"], a.l)
    neigh = nb.ids
    cfg = replace(PARAMS.curation, cluster=True, batch_size=a.batch_size, shard_size=max(1, a.n_cluster // 2))
    table, t_cur, _ = curate_files(world, neigh, tmp / "cluster", cfg)
    rows = np.sort(np.random.default_rng(2).choice(a.n_cluster, min(a.ref_pairs, a.n_cluster), replace=False))
    rate = a.n_cluster / (t_search + t_cur)
    best = bound_rate(a.n_cluster, a.d, res["matmul_peak_gflops"])
    res["cluster"] = {"search_s": t_search, "curate_s": t_cur, "vectorised_pairs_s": rate}
    print(f"\n[exact search + clustering, N={a.n_cluster}]")
    print(f"  vectorised: search {t_search:.1f} s + curation {t_cur:.1f} s -> {rate:.0f} pairs/s")
    for backend in ("numpy", "sklearn"):
        ref, t_ref, blas = run_reference(rows, world, a.l, cfg, backend)
        bad = compare(ref, table, rows, world["names"])
        ref_rate = len(rows) / t_ref
        res["cluster"][backend] = {"reference_pairs_s": ref_rate, "speedup": rate / ref_rate,
                                   "matmul_bound_speedup": best / ref_rate, "mismatches": bad,
                                   "threads": blas}
        print(f"  reference loop, k-means per archive in {backend}: {ref_rate:.1f} pairs/s (timed on "
              f"{len(rows)} pairs, extrapolated; {blas}); speedup {rate / ref_rate:.1f}x (target >= 100x; "
              f"matmul bound {best / ref_rate:.0f}x); mismatches {bad}")


def bench_memory(a, world: dict, neigh: np.ndarray, tmp: Path, res: dict) -> None:
    small = max(1000, a.n // 4)
    sworld = make_world(small, a.d, a.vocab, a.seed + 2)
    sneigh, _ = exact_knn(sworld["emb"], sworld["emb"], a.l)
    res["rss"] = {}
    print("\n[memory: run_curation with clustering, alone in a fresh interpreter, batch "
          f"{a.batch_size}, shards of {max(1, small // 4)} pairs]")
    shard = max(1, small // 4)  # the same shard size for both: a shard is the unit of write (and of memory)
    for n, w, nb in ((small, sworld, sneigh), (a.n, world, neigh)):
        paths = write_inputs(w, nb, tmp / f"rss_{n}")
        cfg = replace(PARAMS.curation, cluster=True, batch_size=a.batch_size, shard_size=shard)
        sec, hwm, anon, base, base_anon = measure_rss(w, paths, cfg)
        res["rss"][str(n)] = {"seconds": sec, "vmhwm_mb": hwm, "peak_anon_mb": anon, "rss_before_mb": base,
                              "anon_before_mb": base_anon}
        print(f"  N={n:>7}: {sec:.1f} s ({n / sec:.0f} pairs/s); RSS before the run {base:.0f} MB, peak RSS "
              f"{hwm:.0f} MB (counts mapped input pages), peak anonymous RSS {anon:.0f} MB "
              f"({anon - base_anon:.0f} MB above the interpreter's before the run)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="pairs for the exact and IVF runs")
    p.add_argument("--n-cluster", type=int, default=20_000, help="pairs for the run with clustering")
    p.add_argument("--l", type=int, default=8, help="neighbours per anchor (L)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--ref-pairs", type=int, default=2000, help="pairs timed in the reference loop")
    p.add_argument("--nlist", type=int, default=256)
    p.add_argument("--nprobes", type=str, default="2,4,8,16,32,64", help="IVF: smallest with recall >= 0.95")
    p.add_argument("--faiss-queries", type=int, default=4096, help="queries for the IndexFlatIP rate")
    p.add_argument("--batch-size", type=int, default=1024, help="curation batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--keep-files", action="store_true", help="keep the generated inputs and archives")
    p.add_argument("--quick", action="store_true", help="smoke run: N = 4k, D = 128, 200 reference pairs")
    a = p.parse_args()
    if a.quick:
        a.n, a.n_cluster, a.d, a.vocab, a.ref_pairs = 4000, 2000, 128, 500, 200
        a.nlist, a.faiss_queries = 32, 1000
    threads = {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads()}
    res: dict = {"n": a.n, "n_cluster": a.n_cluster, "L": a.l, "D": a.d, "V": a.vocab, "threads": threads,
                 "loadavg_start": os.getloadavg()[0]}
    tmp = Path(tempfile.mkdtemp(prefix="cocu_bench_"))
    print(f"# curation benchmark: N={a.n}, L={a.l}, D={a.d}, V={a.vocab}; threads {threads}; "
          f"1-min load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    peak, peak_note = matmul_peak()
    res["matmul_peak_gflops"] = peak
    print(f"matmul peak (float32 4096x512 @ 512x8192, best of 5): {peak:.1f} GFLOP/s, {peak_note}")

    world = make_world(a.n, a.d, a.vocab, a.seed)
    neigh = bench_search(a, world, res)
    rows = np.sort(np.random.default_rng(1).choice(a.n, min(a.ref_pairs, a.n), replace=False))
    exact_table, ref_rate, _ = bench_exact(a, world, neigh, rows, tmp, res)
    bench_ivf(a, world, neigh, rows, exact_table, ref_rate, tmp, res)
    bench_cluster(a, tmp, res)
    if not a.skip_memory:
        bench_memory(a, world, neigh, tmp, res)
    res["loadavg_end"] = os.getloadavg()[0]
    print(f"\n1-min load average at the end {res['loadavg_end']:.1f}: other processes on the 2 shared cores "
          "slow every number above (both paths and the peak); ratios are measured in the same run.")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    if a.keep_files:
        print(f"inputs and archives kept in {tmp}")
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
