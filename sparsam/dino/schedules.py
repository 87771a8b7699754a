"""Per-step schedules of DINO: learning rate, weight decay, teacher momentum and temperature."""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_schedule", "warmup_then_constant"]


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
