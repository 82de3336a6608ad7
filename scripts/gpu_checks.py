"""The checks that scripts/gpu_check.sh runs, one per call: `python scripts/gpu_checks.py NAME`.

Each check ends with one line `GPUCHECK|<name>|<PASS|FAIL|SKIP>|<throughput>|<detail>` that the
shell script collects into its table; a check that raises prints FAIL with the error. Every check
runs on CUDA; `--cpu` runs the same code on the CPU (small sizes) to try the script without a GPU.

    train   a bf16-autocast training run of the tiny GroupViT through cocu.training.loop.train
    ddp     NCCL process group + DistributedDataParallel step (run it under torchrun, 1 process)
    faiss   faiss on the GPU: exact flat search and IVF / IVF-PQ recall, and the index stage's jobs
    embed   ViT-B/16 image-tower throughput (fp16 autocast), and the embed stage's jobs on CUDA vs CPU
    train_step  benchmarks/train_step.py, its CUDA rows (tiny and paper GroupViT, bf16) as the result
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def report(name: str, status: str, rate: str = "-", detail: str = "") -> None:
    print(f"GPUCHECK|{name}|{status}|{rate}|{detail.replace('|', '/')}", flush=True)


def device(cpu: bool) -> torch.device:
    if cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def params():
    """The repo's params.yaml: every config here is built from it (`dataclasses.replace`)."""
    from cocu.config import load_params

    return load_params(REPO / "params.yaml")


def local_launcher(stage: str, **resources: int):
    """The repo's launcher (params.yaml), in-process, `stage` asking for these resources."""
    base = params().launcher
    one = dataclasses.replace(getattr(base.stages, stage), **resources)
    return dataclasses.replace(base, cluster="local", stages=dataclasses.replace(base.stages, **{stage: one}))


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ----------------------------------------------------------------------------------------------


def check_train(cpu: bool) -> None:
    """cocu.training.loop.train with bf16 autocast (amp: true) on CUDA: loss finite, a checkpoint
    written, and a resumed run reaching the uninterrupted run's weights."""
    from cocu.config import tiny_model_config
    from cocu.models.factory import build_model
    from cocu.training.batches import InMemoryBatches, random_pairs
    from cocu.training.checkpoint import load_checkpoint
    from cocu.training.loop import train

    dev = device(cpu)
    batch, steps = (8, 4) if cpu else (256, 12)
    cfg = dataclasses.replace(params().train, batch_size=batch, epochs=1, warmup_epochs=0, steps=steps,
                              warmup_steps=2, checkpoint_every=steps // 2, log_every=2, num_prompts=3, amp=True,
                              amp_dtype="bf16", accum_steps=1)
    model_cfg = tiny_model_config()
    images, texts, prompts = random_pairs(batch * 4, model_cfg.image.img_size, model_cfg.text.context_length, 3)

    def run(run_dir: Path, stop: int | None = None):
        torch.manual_seed(0)
        model = build_model(model_cfg)
        return train(model, cfg, InMemoryBatches(images, texts, prompts, cfg.batch_size), run_dir,
                     device=dev, stop_at_step=stop)

    with tempfile.TemporaryDirectory() as tmp:
        sync(dev)
        t0 = time.perf_counter()
        full = run(Path(tmp) / "full")
        sync(dev)
        seconds = time.perf_counter() - t0
        run(Path(tmp) / "resumed", stop=steps // 2)
        resumed = run(Path(tmp) / "resumed")
        a, b = (load_checkpoint(r.checkpoint)["model"] for r in (full, resumed))
        same = all(torch.equal(a[k], b[k]) for k in a)
    loss = full.metrics.get("loss", float("nan"))
    ok = full.finished and np.isfinite(loss) and resumed.resumed_from == steps // 2 and same
    report("train bf16 (loop.train)", "PASS" if ok else "FAIL", f"{batch * steps / seconds:.3g} img/s",
           f"tiny GroupViT, batch {batch}, {steps} steps incl. start-up, loss {loss:.3f}, "
           f"resume equal: {same}, amp on {dev.type}")


def check_ddp(cpu: bool) -> None:
    """Under torchrun (1 process): an NCCL process group, all_reduce/broadcast, and a bf16 step of
    the tiny GroupViT wrapped in DistributedDataParallel (gradients all-reduced by NCCL)."""
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    from cocu.launch.device import autocast_context
    from cocu.config import tiny_model_config
    from cocu.models.factory import build_model
    from cocu.training.batches import random_pairs
    from cocu.training.losses import GroupViTLoss

    if "RANK" not in os.environ:
        raise RuntimeError("run under torchrun (RANK/WORLD_SIZE not set)")
    dev = device(cpu)
    backend = "gloo" if cpu else "nccl"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    tdist.init_process_group(backend)
    try:
        x = torch.full((4,), float(tdist.get_rank() + 1), device=dev)
        tdist.all_reduce(x)
        tdist.broadcast(x, 0)
        torch.manual_seed(0)
        cfg = tiny_model_config()
        model = DistributedDataParallel(build_model(cfg).to(dev), device_ids=[dev.index] if dev.type == "cuda" else None)
        batch = 8 if cpu else 256
        images, texts, prompts = (t.to(dev) for t in random_pairs(batch, cfg.image.img_size, cfg.text.context_length, 3))
        loss_fn = GroupViTLoss()
        sync(dev)
        t0 = time.perf_counter()
        steps = 2 if cpu else 5
        for _ in range(steps):
            with autocast_context(dev, "bf16"):
                out = model(images, texts, prompts)
            loss = loss_fn(out)["loss"]
            loss.backward()
        sync(dev)
        rate = batch * steps / (time.perf_counter() - t0)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        ok = x.tolist() == [float(tdist.get_world_size() * (tdist.get_world_size() + 1) / 2)] * 4 \
            and bool(grads) and all(torch.isfinite(g).all() for g in grads)
        report("ddp (torchrun, 1 GPU)", "PASS" if ok else "FAIL", f"{rate:.3g} img/s",
               f"{backend} world {tdist.get_world_size()}, all_reduce {x[0].item():.0f}, DDP fwd+bwd bf16, "
               f"loss {loss.item():.3f}")
    finally:
        tdist.destroy_process_group()


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 200), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def check_faiss(cpu: bool) -> None:
    """faiss-gpu: exact flat search equals the CPU reference, IVF and IVF-PQ recall@8 on a
    sample, and the index stage's own jobs (train once, queries in 2 tasks) on the GPU."""
    import faiss

    from cocu.concepts.retrieval import exact_knn, recall_at_k, run_index, search_neighbours

    gpus = faiss.get_num_gpus()
    if gpus == 0 and not cpu:
        report("faiss gpu", "SKIP", "-", f"faiss {faiss.__version__} has no GPU support (faiss-cpu installed): "
               "flat and IVF on the GPU not checked")
        return
    n, dim, k = (20_000, 64, 8) if cpu else (200_000, 512, 8)
    emb = _clustered(n, dim)
    sample = np.sort(np.random.default_rng(1).choice(n, 1000, replace=False))
    exact, _ = exact_knn(emb, emb[sample], k)
    rows = []
    for kind, extra in (("flat", {}), ("ivf", {"nlist": 1024, "nprobe": 32}),
                        ("ivfpq", {"nlist": 1024, "nprobe": 32, "pq_m": 64 if dim >= 64 else 16, "refine": 4})):
        cfg = dataclasses.replace(params().index, type=kind, num_neighbours=k, train_size=min(n, 100_000),
                                  recall_sample=0, **extra)
        t0 = time.perf_counter()
        found = search_neighbours(emb, cfg)
        seconds = time.perf_counter() - t0
        rows.append((kind, recall_at_k(found.ids[sample], exact), n / seconds))
    with tempfile.TemporaryDirectory() as tmp:
        launcher = local_launcher("index", tasks=2, gpus=1)
        cfg = dataclasses.replace(params().index, type="flat", num_neighbours=k, recall_sample=0)
        np.save(Path(tmp) / "emb.npy", emb[:20_000])
        run_index(Path(tmp) / "emb.npy", cfg, launcher, Path(tmp) / "trained", Path(tmp) / "nb.npy", Path(tmp) / "s.npy")
        stage_ids = np.load(Path(tmp) / "nb.npy")
        whole, _ = exact_knn(emb[:20_000], emb[:20_000], k)
        stage_recall = recall_at_k(stage_ids, whole)
    ok = rows[0][1] >= 0.999 and rows[1][1] >= 0.9 and rows[2][1] >= 0.9 and stage_recall >= 0.999
    report(f"faiss {'gpu' if gpus else 'cpu'} (flat, ivf, ivfpq)", "PASS" if ok else "FAIL",
           ", ".join(f"{kind} {rate:,.0f} q/s" for kind, _, rate in rows),
           f"{gpus} GPU(s), N={n} D={dim}; recall@{k}: " + ", ".join(f"{kind} {r:.3f}" for kind, r, _ in rows)
           + f"; index stage, 2 tasks: recall {stage_recall:.4f}")


def check_embed(cpu: bool) -> None:
    """ViT-B/16 image tower at the paper's shape (224 px, fp16 autocast) and the embed stage's
    jobs on CUDA (autocast) against the same jobs on the CPU."""
    import open_clip

    from cocu.clip.jobs import EmbedInputs, embed_corpus
    from cocu.clip.model import build_tiny_clip, save_weights
    from cocu.data import manifest
    from cocu.data.shards import RawSample, SkipCounter, encode_jpeg, write_shards

    dev = device(cpu)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).to(dev).eval()  # random init
    batch = 4 if cpu else 256
    x = torch.randn(batch, 3, 224, 224, device=dev)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
        model.encode_image(x)
        sync(dev)
        t0 = time.perf_counter()
        reps = 1 if cpu else 10
        for _ in range(reps):
            model.encode_image(x)
        sync(dev)
    vit_rate = batch * reps / (time.perf_counter() - t0)
    del model
    tiny = dataclasses.replace(params().clip, source="synthetic", image_size=32, embed_dim=32, vision_width=32,
                               vision_layers=2, vision_head_width=16, patch_size=8, text_width=32, text_layers=1,
                               text_head_width=16, context_length=16)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = [RawSample(key=f"k{i:05d}", image=encode_jpeg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), 90),
                         caption=f"a photo of thing {i}") for i in range(300)]
        shards = write_shards(raw, root / "shards", 64)
        manifest.write_manifest(manifest.index_shards(shards, SkipCounter()), root / "manifest.parquet")
        torch.manual_seed(0)
        save_weights(build_tiny_clip(tiny), root / "clip.pt")
        out = {}
        for name, dev_name, gpus in (("cuda", "cuda", 1), ("cpu", "cpu", 0)) if not cpu else (("cpu", "cpu", 0),):
            inputs = EmbedInputs(root / "manifest.parquet", tuple(shards), root / "clip.pt", tiny,
                                 dataclasses.replace(params().embed, batch_size=64, device=dev_name, autocast=True),
                                 ("jpg",), "txt",
                                 ("thing", "photo"), root / name / "img.npy", root / name / "txt.npy",
                                 root / name / "c.npy", root / name / "c.txt")
            launcher = local_launcher("embed", tasks=2, gpus=gpus)
            embed_corpus(inputs, launcher)
            out[name] = np.load(root / name / "img.npy").astype(np.float32)
        diff = float(np.abs(out["cuda"] - out["cpu"]).max()) if "cuda" in out else 0.0
    ok = diff < 2e-2 and np.isfinite(vit_rate)
    report(f"embed ({dev.type})", "PASS" if ok else "FAIL", f"ViT-B/16 {vit_rate:.3g} img/s",
           f"image tower only, 224 px, batch {batch}, fp16 autocast; embed stage jobs (2 tasks) on "
           f"{'CUDA vs CPU: max |diff| ' + format(diff, '.4f') if not cpu else 'CPU'}")


def check_train_step(cpu: bool) -> None:
    """benchmarks/train_step.py as it is (its CPU rows, then bf16 on CUDA); its CUDA rows (the CPU
    rows with --cpu) become the result."""
    import subprocess

    cmd = [sys.executable, str(REPO / "benchmarks" / "train_step.py"), "--tiny-batch", "16", "--paper-cpu-batch", "2",
           "--steps", "3", "--warmup", "1", "--gpu-batch", "128"]  # batch 2: the projector's BatchNorm needs > 1
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    out = done.stdout
    print(out, done.stderr[-4000:], flush=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        report("benchmarks/train_step.py", "FAIL", "-", f"exit {done.returncode}: {last[:200]}")
        return
    want = "cpu" if cpu else "cuda"
    # | config | params | device | dtype | batch | fwd+bwd images/s | +AdamW images/s | peak GiB |
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    rows = [r for r in rows if len(r) == 8 and r[0] in ("tiny", "paper") and r[2].startswith(want)]
    if not rows:
        report("benchmarks/train_step.py", "FAIL", "-", f"no {want} row in its table")
        return
    report("benchmarks/train_step.py", "PASS", ", ".join(f"{r[0]} {r[6]} img/s" for r in rows),
           "; ".join(f"{r[0]} {r[3]} batch {r[4]}, peak {r[7]} GiB" for r in rows) + " (a whole AdamW step)")


CHECKS = {"train": check_train, "ddp": check_ddp, "faiss": check_faiss, "embed": check_embed,
          "train_step": check_train_step}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--cpu", action="store_true", help="run on the CPU at small sizes (to try the script)")
    args = parser.parse_args()
    try:
        CHECKS[args.check](args.cpu)
    except Exception as e:  # the table shows it; the traceback goes to the log
        traceback.print_exc()
        report(args.check, "FAIL", "-", f"{type(e).__name__}: {e}".splitlines()[0][:200])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
