"""Launch helpers, and two gloo processes on CPU against one process on the concatenated batch.

Equivalence is checked with the model in eval mode: in training mode each rank draws its own
Gumbel noise and the projectors' BatchNorm uses per-rank batch statistics (SyncBatchNorm is
cuda-only), so neither matches one process exactly; in eval mode every sample's features depend
on that sample alone, which isolates what DDP must get right: the gathered negatives, the label
offsets and the gradient bookkeeping (the differentiable gather + DDP's averaging).
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cocu.launch.device import autocast_context, grad_scaler, resolve_device
from cocu.launch.distributed import (
    DistInfo, destroy_process_group, from_env, gather_with_grad, init_process_group, unwrap, wrap_ddp,
)
from cocu.config import ImageEncoderConfig, ModelConfig, ProjectorConfig, TextEncoderConfig
from cocu.models.factory import build_model
from cocu.training.batches import InMemoryBatches, random_pairs
from cocu.training.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, save_checkpoint
from cocu.training.losses import GroupViTLoss
from cocu.training import loop
from cocu.training.loop import train
from cocu.training.pretrain import prepare_run_dir
from tests.conftest import BASE_TRAIN

MICRO = ModelConfig(
    image=ImageEncoderConfig(img_size=32, patch_size=8, in_chans=3, width=32, depths=(1, 1, 1), num_heads=(2, 2, 2),
                             num_group_tokens=(4, 2, 0), num_output_groups=(4, 2), mlp_ratio=4.0,
                             token_mlp_ratio=0.5, drop_path=0.1, gumbel_tau=1.0, group_token_std=0.02,
                             gumbel_noise=True),
    text=TextEncoderConfig(context_length=16, vocab_size=1000, width=32, layers=1, heads=2, mlp_ratio=4.0),
    projector=ProjectorConfig(hidden_dim=64, out_dim=32, activation="relu"),
    temperature=0.07, max_logit_scale=100.0, prompt_pool="max", init="groupvit",  # the segment path through the gather
)


def test_dist_info_from_torchrun_and_slurm_env() -> None:
    assert from_env({}) == DistInfo(0, 1, 0)
    assert from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == DistInfo(3, 8, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_LOCALID": "2"}
    assert from_env(slurm) == DistInfo(5, 6, 2)
    assert from_env({**slurm, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}) == DistInfo(0, 2, 0)
    assert DistInfo(0, 2).is_main and not DistInfo(1, 2).is_main


def test_single_process_switches_are_no_ops() -> None:
    cpu = resolve_device("cpu")
    assert cpu.type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    with autocast_context(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not grad_scaler(cpu, "fp16").is_enabled()
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, DistInfo(), cpu) is model and unwrap(model) is model
    x = torch.randn(3, 2)
    assert gather_with_grad(x, 1) is x
    init_process_group(DistInfo())  # one process: nothing to join
    assert not torch.distributed.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TIMEOUT = timedelta(seconds=60)  # a rank left waiting in a collective fails the test instead of hanging it


def _spawn(fn, out_dir: Path) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(_free_port())
    mp.spawn(fn, args=(str(out_dir),), nprocs=2, join=True)


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return random_pairs(n, 32, 16, 2, seed=7, vocab_size=1000)


def _equivalence_worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist = DistInfo(rank, 2, rank)
    init_process_group(dist)
    try:
        torch.manual_seed(0)
        ddp = wrap_ddp(build_model(MICRO).eval(), dist, torch.device("cpu"))
        images, texts, prompts = (t[4 * rank : 4 * rank + 4] for t in _batch())
        losses = GroupViTLoss(rank, 2)(ddp(images, texts, prompts))
        losses["loss"].backward()
        grads = {n: p.grad for n, p in unwrap(ddp).named_parameters()}
        torch.save({"losses": {k: v.detach() for k, v in losses.items()}, "grads": grads},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    _spawn(_equivalence_worker, tmp_path)
    torch.manual_seed(0)
    model = build_model(MICRO).eval()
    single = GroupViTLoss()(model(*_batch()))
    single["loss"].backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key in ("loss", "itc", "mlc"):  # each rank: mean over its rows; their mean: the global loss
        mean = 0.5 * (ranks[0]["losses"][key] + ranks[1]["losses"][key])
        torch.testing.assert_close(mean, single[key].detach())
    expected = torch.cat([p.grad.flatten() for p in model.parameters()])
    layers: dict[str, list[str]] = {}  # module -> the names of its own parameters
    for name, _ in model.named_parameters():
        layers.setdefault(name.rpartition(".")[0], []).append(name)
    single_grads = {n: p.grad for n, p in model.named_parameters()}
    for r in range(2):
        got = torch.cat([ranks[r]["grads"][n].flatten() for n, _ in model.named_parameters()])
        assert (got - expected).norm() < 1e-5 * expected.norm()
        # per layer, relative to the layer's gradient norm, not per parameter: some parameters have
        # an exact gradient of 0 (the output biases of token-mixing MLPs feeding a LayerNorm, the key
        # biases of attention: shift invariances), so both implementations compute rounding noise for
        # them, whose size follows the layer's other gradients (measured: <= 4e-6 of the layer's
        # norm here, while a missing all-reduce or a wrong rank slice errs by O(1) in most layers)
        for layer, names in layers.items():
            want = torch.cat([single_grads[n].flatten() for n in names])
            have = torch.cat([ranks[r]["grads"][n].flatten() for n in names])
            error = float((have - want).norm())
            assert error <= 1e-4 * float(want.norm()) + 1e-8 * float(expected.norm()), (r, layer, error)


def _train_worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist = DistInfo(rank, 2, rank)
    init_process_group(dist, timeout=TIMEOUT)
    try:
        images, texts, prompts = random_pairs(16, 32, 16, 2, seed=1, vocab_size=1000)
        data = InMemoryBatches(images, texts, prompts, batch_size=2, seed=3, rank=rank, world_size=2)
        cfg = replace(BASE_TRAIN, batch_size=2, epochs=1, warmup_epochs=0, steps=4, warmup_steps=1, accum_steps=2,
                      base_lr=0.5, checkpoint_every=2, log_every=1, num_prompts=2)
        torch.manual_seed(0)
        model = build_model(MICRO)
        first = train(model, cfg, data, Path(out_dir) / "run", dist, stop_at_step=2)
        resumed = build_model(MICRO)
        if rank == 1:  # a stale listing of the shared folder on rank 1's node: it sees no checkpoint
            loop.latest_checkpoint = lambda run_dir: None
        second = train(resumed, cfg, data, Path(out_dir) / "run", dist)  # every rank resumes rank 0's
        assert first.step == 2 and second.resumed_from == 2 and second.finished
        torch.save(dict(resumed.named_parameters()), Path(out_dir) / f"weights{rank}.pt")
    finally:
        destroy_process_group()


@pytest.mark.slow
def test_ddp_training_with_accumulation_and_resume_keeps_ranks_identical(tmp_path: Path) -> None:
    _spawn(_train_worker, tmp_path)
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # per-rank noise
    # parameters only: on CPU (no SyncBatchNorm) each rank's BatchNorm running statistics see its
    # own micro-batches; DDP re-broadcasts rank 0's buffers every forward and rank 0 checkpoints
    w0, w1 = (torch.load(tmp_path / f"weights{r}.pt") for r in range(2))
    assert w0.keys() == dict(build_model(MICRO).named_parameters()).keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    for name, value in state["model"].items():
        if name in w0:
            assert torch.equal(value, w0[name]), name


STALE_STAMP, NEW_STAMP = "settings of an earlier run", "settings of this run"


def _restart_worker(rank: int, out_dir: str) -> None:
    """Both ranks of a run whose settings changed: rank 0 is slow to get to the clean-up, rank 1
    is early; after `prepare_run_dir` neither may see the stale checkpoint, and both train afresh."""
    torch.set_num_threads(1)
    dist = DistInfo(rank, 2, rank)
    init_process_group(dist, timeout=TIMEOUT)
    try:
        run_dir = Path(out_dir) / "run"
        if rank == 0:
            time.sleep(2.0)
        prepare_run_dir(run_dir, NEW_STAMP, dist)
        seen = latest_checkpoint(run_dir)  # any rank's lookup after the clean-up
        images, texts, prompts = random_pairs(8, 32, 16, 2, seed=1, vocab_size=1000)
        data = InMemoryBatches(images, texts, prompts, batch_size=2, seed=3, rank=rank, world_size=2)
        cfg = replace(BASE_TRAIN, batch_size=2, epochs=1, warmup_epochs=0, steps=2, warmup_steps=1, base_lr=0.5,
                      checkpoint_every=2, log_every=1, num_prompts=2)
        torch.manual_seed(0)
        result = train(build_model(MICRO), cfg, data, run_dir, dist)
        torch.save({"seen": None if seen is None else seen.name, "resumed_from": result.resumed_from,
                    "step": result.step}, Path(out_dir) / f"restart{rank}.pt")
    finally:
        destroy_process_group()


@pytest.mark.slow
def test_a_settings_change_restarts_every_rank_afresh(tmp_path: Path) -> None:
    """The stale run folder (another fingerprint, a checkpoint at step 3 that must never be loaded:
    it holds no model) is cleared by rank 0 before any rank looks for a checkpoint."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "fingerprint.txt").write_text(STALE_STAMP)
    save_checkpoint({"step": 3, "stale": True}, checkpoint_path(run_dir, 3))
    _spawn(_restart_worker, tmp_path)
    for rank in range(2):
        got = torch.load(tmp_path / f"restart{rank}.pt")
        assert got == {"seen": None, "resumed_from": None, "step": 2}, rank
    assert (run_dir / "fingerprint.txt").read_text() == NEW_STAMP
    assert [p.name for p in run_dir.glob("ckpt_*.pt")] == ["ckpt_00000002.pt"]
    assert "stale" not in load_checkpoint(run_dir / "ckpt_00000002.pt")
