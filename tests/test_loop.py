"""The training loop on CPU: exact resume (also through the real input pipeline with worker
processes), checkpoints, tracker calls, the batch contract, learning."""

from __future__ import annotations

import itertools
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cocu.config import (
    ImageEncoderConfig, ModelConfig, ProjectorConfig, TextEncoderConfig, from_dict, tiny_model_config,
)
from cocu.models.factory import build_model
from cocu.training.batches import InMemoryBatches, random_pairs
from cocu.training.checkpoint import (
    capture_rng, latest_checkpoint, list_checkpoints, load_checkpoint, load_model_state, restore_rng,
    sha256_file,
)
from cocu.config import DataConfig
from cocu.training.data import PretrainData
from cocu.training.loop import train
from tests.conftest import BASE_TRAIN

# smaller than the synthetic world's model, with drop path on so that resuming must restore RNG
MICRO = ModelConfig(
    image=ImageEncoderConfig(img_size=32, patch_size=8, in_chans=3, width=32, depths=(1, 1, 1), num_heads=(2, 2, 2),
                             num_group_tokens=(4, 2, 0), num_output_groups=(4, 2), mlp_ratio=4.0,
                             token_mlp_ratio=0.5, drop_path=0.1, gumbel_tau=1.0, group_token_std=0.02,
                             gumbel_noise=True),
    text=TextEncoderConfig(context_length=16, vocab_size=1000, width=32, layers=1, heads=2, mlp_ratio=4.0),
    projector=ProjectorConfig(hidden_dim=64, out_dim=32, activation="none"),
    temperature=0.07, max_logit_scale=100.0, prompt_pool="mean", init="groupvit",
)
CFG = replace(BASE_TRAIN, batch_size=4, epochs=1, warmup_epochs=0, steps=6, warmup_steps=2, accum_steps=2,
              base_lr=0.5, warmup_lr=0.0, min_lr=0.0, checkpoint_every=2, log_every=1, num_prompts=2)


class RecordingTracker:
    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.tags: dict[str, str] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, metrics))

    def log_artifact(self, path: str | Path) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)


def micro_data(n: int = 16) -> InMemoryBatches:
    images, texts, prompts = random_pairs(n, 32, 16, 2, seed=1, vocab_size=1000)
    return InMemoryBatches(images, texts, prompts, batch_size=4, seed=2)


def fresh_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(MICRO)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = fresh_model()
    done = train(straight, CFG, micro_data(), tmp_path / "a")
    assert done.finished and done.step == 6 and done.resumed_from is None

    first = train(fresh_model(), CFG, micro_data(), tmp_path / "b", stop_at_step=3)
    assert not first.finished and first.step == 3
    resumed_model = fresh_model(seed=123)  # different init: everything must come from the checkpoint
    second = train(resumed_model, CFG, micro_data(), tmp_path / "b")
    assert second.resumed_from == 3 and second.finished
    for (name, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    again = train(fresh_model(seed=7), CFG, micro_data(), tmp_path / "b")  # resumes the finished run
    assert again.resumed_from == 6 and again.finished and again.metrics == second.metrics != {}


# ---------------------------------------------------------------------------------------------
# the real input pipeline (tar shards, DataLoader worker processes) under the loop


@pytest.fixture(scope="module")
def pair_shards(tmp_path_factory) -> tuple[list[Path], pd.DataFrame]:
    """24 valid 32x32 pairs in 3 webdataset shards of 8."""
    from cocu.data.manifest import index_shards
    from cocu.data.shards import RawSample, SkipCounter, encode_jpeg, list_shards, write_shards

    folder = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    write_shards([RawSample(f"p{i:03d}", encode_jpeg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), 90),
                            f"caption {i} of {i % 7}") for i in range(24)], folder, shard_size=8)
    shards = list_shards(folder)
    return shards, index_shards(shards, SkipCounter())


def _tokens(texts: list[str]) -> torch.Tensor:
    """One id per word (crc32) in MICRO's vocabulary and context length."""
    out = torch.zeros(len(texts), 16, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [zlib.crc32(w.encode()) % 997 + 1 for w in text.split()][:16]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def _prompts(key: str, caption: str, rng: np.random.Generator) -> list[str]:
    return [caption, *[f"prompt {int(v)}" for v in rng.integers(0, 1000, size=2)]]


# the values the data config had as defaults when these tests were written (paper-style augmentation)
TINY_DATA = DataConfig(shuffle_buffer=8, streams=2, workers=1, split="auto", crop_scale=(0.5, 1.0),
                       crop_ratio=(0.75, 4 / 3), interpolation="bicubic", flip=True, color_jitter=0.4,
                       random_erasing=0.25, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                       token_cache=200_000, prefetch=2)


def shard_stream(pair_shards, **cfg: Any) -> PretrainData:
    shards, manifest = pair_shards
    data_cfg = replace(TINY_DATA, **cfg)
    return PretrainData(shards, manifest, _prompts, _tokens, data_cfg, image_size=32, batch_size=4, seed=3,
                        with_keys=False)


def test_resume_with_data_worker_processes_equals_the_uninterrupted_run(tmp_path: Path, pair_shards) -> None:
    """Through the real pipeline with 2 DataLoader workers: stop at step 2 (of 4 steps of 2
    micro-batches, crossing an epoch of 6), resume in a new model, and end at the uninterrupted
    run's weights; and one worker serving both streams trains to the same weights."""
    cfg = replace(CFG, steps=4, checkpoint_every=2)
    straight = fresh_model()
    train(straight, cfg, shard_stream(pair_shards, workers=2), tmp_path / "a")
    first = train(fresh_model(), cfg, shard_stream(pair_shards, workers=2), tmp_path / "b", stop_at_step=2)
    assert first.step == 2
    resumed = fresh_model(seed=9)
    assert train(resumed, cfg, shard_stream(pair_shards, workers=2), tmp_path / "b").resumed_from == 2
    one_worker = fresh_model()
    train(one_worker, cfg, shard_stream(pair_shards, workers=1), tmp_path / "c")
    for name, a in straight.state_dict().items():
        assert torch.equal(a, resumed.state_dict()[name]), name
        assert torch.equal(a, one_worker.state_dict()[name]), name


def test_checkpoints_are_complete_atomic_and_pruned(tmp_path: Path) -> None:
    tracker = RecordingTracker()
    result = train(fresh_model(), CFG, micro_data(), tmp_path, tracker=tracker)
    names = [p.name for p in tmp_path.iterdir()]
    assert names and all(n.startswith("ckpt_") and n.endswith(".pt") for n in names)  # no temp files
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_00000004.pt", "ckpt_00000006.pt"]
    state = load_checkpoint(latest_checkpoint(tmp_path))  # weights_only=True
    assert state["step"] == 6 and state["batches_consumed"] == 12 and state["samples_seen"] == 48
    assert {"model", "optimizer", "scaler", "rng", "train_config", "model_config"} <= set(state)
    assert len(state["rng"]) == 1 and state["model_config"]["image"]["depths"] == (1, 1, 1)
    assert result.checkpoint_sha256 == sha256_file(result.checkpoint) == tracker.tags["checkpoint_sha256"]
    steps = [s for s, _ in tracker.metrics]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert {"loss", "itc", "mlc", "lr", "images_per_s", "grad_norm"} <= set(tracker.metrics[0][1])
    assert tracker.metrics[0][1]["lr"] == pytest.approx(0.0)  # warmup_lr at step 0, scaled
    assert tracker.params["train.total_batch"] == 8


def test_final_checkpoint_rebuilds_the_model(tmp_path: Path) -> None:
    trained = fresh_model()
    result = train(trained, CFG, micro_data(), tmp_path)
    state, cfg = load_model_state(result.checkpoint)
    rebuilt = build_model(from_dict(ModelConfig, cfg))
    rebuilt.load_state_dict(state)  # strict
    assert rebuilt.cfg == MICRO
    for a, b in zip(trained.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(a, b)


def test_rng_state_roundtrip() -> None:
    state = capture_rng()
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    restore_rng(state)
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_batch_stream_resumes_at_position_and_splits_by_rank() -> None:
    images, texts, prompts = random_pairs(12, 8, 6, 1, seed=0, vocab_size=100)
    single = InMemoryBatches(images, texts, prompts, batch_size=4, seed=5)
    head = list(itertools.islice(single(0), 7))  # 3 batches per epoch: crosses two epoch boundaries
    for start in (0, 2, 5):
        for x, y in zip(head[start:], single(start)):
            assert torch.equal(x["text"], y["text"]) and torch.equal(x["prompts"], y["prompts"])
    assert not torch.equal(head[0]["text"], head[3]["text"])  # reshuffled per epoch
    ranks = [InMemoryBatches(images, texts, prompts, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    for step, parts in enumerate(zip(*(itertools.islice(r(0), 4) for r in ranks))):
        assert torch.equal(torch.cat([p["image"] for p in parts]), head[step]["image"])


@pytest.mark.slow
def test_loss_falls_on_a_tiny_fixed_dataset(tmp_path: Path) -> None:
    """40 steps of the synthetic world's model on 32 random images with distinct captions."""
    images, texts, prompts = random_pairs(32, 64, 32, 3, seed=0)
    cfg = replace(BASE_TRAIN, batch_size=16, epochs=1, warmup_epochs=0, steps=40, warmup_steps=4,
                  base_lr=512 * 1e-3, warmup_lr=0.0, min_lr=0.0, log_every=5, checkpoint_every=100)
    tracker = RecordingTracker()
    torch.manual_seed(0)
    train(build_model(tiny_model_config()), cfg, InMemoryBatches(images, texts, prompts, 16), tmp_path,
          tracker=tracker)
    losses = [m["loss"] for _, m in tracker.metrics]
    assert losses[-1] < 0.5 * losses[0], losses
