"""Numeric precision of training and inference: which autocast dtype, and the autocast itself."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "resolve_precision"]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means full fp32.

    ``"auto"`` picks bf16 on CUDA devices that support it and fp32 on the CPU: on a 2-core
    CPU with AMX and AVX512-BF16, bf16 autocast made a ViT forward+backward 1.5x (ViT-S/16,
    224 px) to 2.4x (4 blocks, 96 wide, 16 px) slower than fp32, although a bare bf16 matrix
    product ran 4.7x faster: the casts autocast adds cost more than the matrix units save at
    these sizes (``benchmarks/RESULTS.md``). ``"bf16"`` forces autocast anywhere.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
