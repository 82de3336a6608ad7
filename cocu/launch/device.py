"""Devices, autocast and gradient scaling: switches that are no-ops on CPU."""

from __future__ import annotations

import contextlib
from typing import ContextManager, Literal, Optional

import torch

AmpDtype = Literal["bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" -> cuda:<local_rank> if CUDA is available else cpu; "cpu"; "cuda" (-> cuda:<local_rank>)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r} (expected auto, cpu or cuda)")


def amp_enabled(device: torch.device, amp_dtype: Optional[AmpDtype]) -> bool:
    """Mixed precision runs only on cuda; on CPU every AMP switch is off."""
    return amp_dtype is not None and device.type == "cuda"


def autocast_context(device: torch.device, amp_dtype: Optional[AmpDtype]) -> ContextManager:
    """torch.autocast in bf16/fp16 on cuda; a null context on CPU or when amp_dtype is None."""
    if not amp_enabled(device, amp_dtype):
        return contextlib.nullcontext()
    assert amp_dtype is not None
    return torch.autocast(device.type, dtype=_DTYPES[amp_dtype])


def grad_scaler(device: torch.device, amp_dtype: Optional[AmpDtype]) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 on cuda (bf16 needs none)."""
    return torch.amp.GradScaler(device.type, enabled=amp_enabled(device, amp_dtype) and amp_dtype == "fp16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> Optional[float]:
    """Peak allocated CUDA memory since the last reset, GiB; None on CPU."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def cuda_rng_states() -> list[torch.Tensor]:
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def set_cuda_rng_states(states: list[torch.Tensor]) -> None:
    if states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states)
