"""Training-step throughput of the tiny and the paper GroupViT (images/s, forward + loss + backward).

    python benchmarks/train_step.py                      # CPU: tiny @ 64, paper @ 2; + CUDA if present
    python benchmarks/train_step.py --gpu-batch 256 --steps 10

On CUDA the step runs under bf16 autocast and the table adds the peak allocated memory. The
"+AdamW" column times a whole optimizer step (forward, backward, clip, AdamW) at the same batch.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from cocu.launch.device import autocast_context, peak_memory_gib, reset_peak_memory, synchronize
from cocu.config import ModelConfig, load_params, paper_model_config, tiny_model_config
from cocu.models.factory import build_model, parameter_counts
from cocu.training.batches import random_pairs
from cocu.training.losses import GroupViTLoss
from cocu.training.optim import build_optimizer

TRAIN = load_params(Path(__file__).resolve().parents[1] / "params.yaml").train  # weight decay, betas


@dataclass
class Row:
    config: str
    params: int
    device: str
    dtype: str
    batch: int
    fwd_bwd_ips: float
    step_ips: float
    peak_gib: Optional[float]


def measure(name: str, cfg: ModelConfig, device: torch.device, batch: int, steps: int, warmup: int,
            amp_dtype: Optional[str], max_tokens: Optional[int], num_prompts: int = 3) -> Row:
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    images, texts, prompts = random_pairs(batch, cfg.image.img_size, cfg.text.context_length, num_prompts,
                                          max_tokens=max_tokens)
    images, texts, prompts = images.to(device), texts.to(device), prompts.to(device)
    loss_fn = GroupViTLoss()
    optimizer = build_optimizer(model, replace(TRAIN, batch_size=batch), lr=1e-4)

    def fwd_bwd() -> None:
        with autocast_context(device, amp_dtype):
            out = model(images, texts, prompts)
        loss_fn(out)["loss"].backward()

    def full_step() -> None:
        fwd_bwd()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def rate(fn) -> float:
        for _ in range(warmup):
            fn()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
            model.zero_grad(set_to_none=True)
        synchronize(device)
        return batch * steps / (time.perf_counter() - start)

    reset_peak_memory(device)
    fb = rate(fwd_bwd)
    st = rate(full_step)
    return Row(name, parameter_counts(model)["total"], str(device), amp_dtype or "fp32", batch, fb, st,
               peak_memory_gib(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-batch", type=int, default=64)
    parser.add_argument("--paper-cpu-batch", type=int, default=2)
    parser.add_argument("--gpu-batch", type=int, default=256, help="paper config batch on CUDA")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--max-text-tokens", type=int, default=None,
                        help="longest caption/prompt in BPE tokens (default: the whole context, the worst "
                             "case; the text tower trims padding after the batch's longest text)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cpu = torch.device("cpu")
    tokens = args.max_text_tokens
    rows = [
        measure("tiny", tiny_model_config(), cpu, args.tiny_batch, args.steps, args.warmup, None, tokens),
        measure("paper", paper_model_config(), cpu, args.paper_cpu_batch, max(2, args.steps // 2), 1, None,
                tokens),
    ]
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        rows.append(measure("tiny", tiny_model_config(), gpu, 1024, args.steps, args.warmup, "bf16", tokens))
        rows.append(measure("paper", paper_model_config(), gpu, args.gpu_batch, args.steps, args.warmup,
                            "bf16", tokens))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
          + f"; texts up to {tokens or 'the whole context of'} tokens, 1 caption + 3 prompts per image")
    print("| config | params | device | dtype | batch | fwd+bwd images/s | +AdamW images/s | peak GiB |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        peak = f"{r.peak_gib:.2f}" if r.peak_gib is not None else "-"
        print(f"| {r.config} | {r.params:,} | {r.device} | {r.dtype} | {r.batch} | {r.fwd_bwd_ips:.1f} "
              f"| {r.step_ips:.1f} | {peak} |")


if __name__ == "__main__":
    main()
