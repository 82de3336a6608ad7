"""benchmarks/paper_cost.py: the formulas behind the paper-scale cost table (the measurements are
not checked: they are timings)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cost():
    spec = importlib.util.spec_from_file_location("paper_cost", REPO / "benchmarks" / "paper_cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_cost"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("paper_cost", None)


def test_pair_count_and_index_sizes(cost) -> None:
    assert cost.N == 26_985_925 and cost.D == 512
    sizes = {k: v / 1e9 for k, v in cost.index_memory().items()}
    assert sizes["flat fp32"] == pytest.approx(55.27, abs=0.01)  # 27.0M x 512 x 4 bytes
    assert sizes["flat fp16 (faiss-gpu useFloat16; the embeddings file)"] == pytest.approx(27.63, abs=0.01)
    pq = sizes["IVF-PQ m=64 (8-bit codes)"]
    assert pq == pytest.approx(1.727 + 0.216 + 0.067 + 0.0005, abs=0.002)  # codes + ids + centroids + codebooks
    assert sizes["IVF-SQ8"] == pytest.approx(13.82 + 0.216 + 0.067, abs=0.01)


@pytest.mark.parametrize("name", ["voc", "cityscapes", "ade20k", "imagenet_s300"])
def test_window_count_is_the_segmenters(cost, name: str) -> None:
    from cocu.eval.segmenter import capped_size, rescale_size, slide_inference

    _, size, resize, crop, stride, cap = cost.BENCHMARKS[name]
    h, w = capped_size(*size, cap)
    if resize is not None:
        h, w = rescale_size(h, w, resize, None)
    calls = []

    def infer(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return torch.zeros(1, 2, *x.shape[2:])

    slide_inference(infer, torch.zeros(1, 3, h, w), crop, stride, 2)
    assert cost.windows(size, resize, crop, stride, cap) == len(calls) > 1
