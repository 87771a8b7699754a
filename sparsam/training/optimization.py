"""The optimizer both training loops use and its per-step schedules.

AdamW with weight decay on weight matrices only (as in DINO), and the schedules of the learning
rate, weight decay, DINO's teacher momentum and temperature.
"""

from __future__ import annotations

import numpy as np
import torch
from timm.optim import param_groups_weight_decay
from torch import nn

__all__ = [
    "adamw",
    "cosine_schedule",
    "set_step_values",
    "warmup_then_constant",
    "weight_decay_groups",
]


def weight_decay_groups(model: nn.Module) -> list[dict]:
    """Weight decay on weight matrices only: not on biases and normalisation (as in DINO).

    Two groups, ``[decay, no_decay]``, in this order (either may be empty): ``train_step`` sets
    the scheduled weight decay on the first and 0 on the second, and checkpoints store the
    optimizer state in this order.
    """
    # timm's grouping is DINO's (bias or ndim <= 1 exempt; no parameter of a DINO model is
    # 0-dimensional), but it lists the groups [no_decay, decay] and drops empty ones. The
    # placeholder decay is AdamW's default, which train_step replaces on every step.
    groups = param_groups_weight_decay(model, weight_decay=0.01)
    decay = [p for group in groups if group["weight_decay"] for p in group["params"]]
    no_decay = [p for group in groups if not group["weight_decay"] for p in group["params"]]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `weight_decay_groups` of ``model``, whose lr and decay `set_step_values` sets."""
    # One fused kernel for the whole update on a GPU instead of a few per parameter group.
    return torch.optim.AdamW(weight_decay_groups(model), fused=device.type == "cuda")


def set_step_values(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """This step's learning rate on both groups, its weight decay on the weight matrices only."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        group["weight_decay"] = weight_decay if i == 0 else 0.0


def cosine_schedule(
    start: float,
    end: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> np.ndarray:
    """Linear warm-up from ``warmup_start`` to ``start``, then cosine decay to ``end``.

    Parameters
    ----------
    start, end : float
        Value after the warm-up and value at the last step.
    total_steps : int
        Length of the schedule, warm-up included.
    warmup_steps : int, default=0
        Number of warm-up steps; clipped to ``total_steps``.
    warmup_start : float, default=0.0
        Value at step 0 when there is a warm-up.

    Returns
    -------
    values : ndarray of shape (total_steps,)
        The schedule; the first step after the warm-up equals ``start`` and the last equals
        ``end`` (unlike DINO's reference code, which stops one step short of ``end``).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    warmup_steps = min(max(int(warmup_steps), 0), total_steps)
    warmup = np.linspace(warmup_start, start, warmup_steps, endpoint=False)
    n_cosine = total_steps - warmup_steps
    if n_cosine == 1:
        cosine = np.array([end], dtype=float)
    else:
        progress = np.arange(n_cosine) / max(n_cosine - 1, 1)
        cosine = end + 0.5 * (start - end) * (1 + np.cos(np.pi * progress))
    return np.concatenate([warmup, cosine])


def warmup_then_constant(
    start: float, end: float, total_steps: int, warmup_steps: int
) -> np.ndarray:
    """Linear ramp from ``start`` to ``end`` over ``warmup_steps``, then ``end``.

    Used for the teacher temperature: a low temperature at the start avoids an early
    collapse (Caron et al. 2021, appendix).

    Returns
    -------
    values : ndarray of shape (total_steps,)
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    warmup_steps = min(max(int(warmup_steps), 0), total_steps)
    ramp = np.linspace(start, end, warmup_steps, endpoint=False)
    return np.concatenate([ramp, np.full(total_steps - warmup_steps, end, dtype=float)])
