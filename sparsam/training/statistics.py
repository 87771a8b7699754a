"""Per-step values kept on the training device and read on the host only now and then.

Reading a CUDA tensor's value (``.item()``, ``float()``, ``math.isfinite``) makes the CPU wait
until the GPU has run every queued kernel; once per step, that wait stops the CPU from queueing
the next step while the GPU still runs this one. `StepStatistics` sums a step's values where
they were computed and records the first non-finite loss there too, so that the host reads them
once per ``check_every`` steps, at checkpoints and at the end of an epoch.
"""

from __future__ import annotations

import torch

__all__ = ["StepStatistics"]


class StepStatistics:
    """Sums of per-step values and the first non-finite loss, kept on the device.

    Parameters
    ----------
    device : torch.device
        Where the steps' values live.
    totals : dict of float, optional
        Sums carried over (an epoch resumed from a checkpoint).

    Examples
    --------
    >>> import torch
    >>> statistics = StepStatistics(torch.device("cpu"))
    >>> for step, loss in enumerate([2.0, float("nan"), float("inf")]):
    ...     statistics.check(step, torch.tensor(loss))
    ...     statistics.add({"kl": torch.tensor(0.5)})
    >>> statistics.first_non_finite()
    (1, nan)
    >>> statistics.totals()
    {'kl': 1.5}
    """

    def __init__(self, device: torch.device, totals: dict[str, float] | None = None) -> None:
        self.device = device
        self._totals: dict[str, torch.Tensor | float] = dict(totals or {})
        self._bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self._bad_value = torch.zeros((), dtype=torch.float32, device=device)

    def check(self, step: int, loss: torch.Tensor) -> None:
        """Remember ``loss`` and ``step`` if this is the first non-finite loss (on the device)."""
        loss = loss.detach().float()
        first = (self._bad_step < 0) & ~torch.isfinite(loss)
        self._bad_step = torch.where(first, step, self._bad_step)
        self._bad_value = torch.where(first, loss, self._bad_value)

    def add(self, values: dict[str, torch.Tensor]) -> None:
        """Add a step's ``values`` (0-d tensors) to the sums, on the device."""
        for name, value in values.items():
            self._totals[name] = self._totals.get(name, 0.0) + value.detach().float()

    def first_non_finite(self) -> tuple[int, float] | None:
        """The step and value of the first non-finite loss added, or None (one host read)."""
        step = int(self._bad_step)
        return None if step < 0 else (step, float(self._bad_value))

    def how_stopped(self, bad_step: int, current_step: int, check_every: int) -> str:
        """How far training went past ``bad_step``, for the error a loop raises."""
        if bad_step == current_step:
            return "training stopped before this step changed the model"
        return (
            f"training stopped {current_step - bad_step} step(s) later (the loss is read every "
            f"{check_every} steps on this device, so the model may hold non-finite weights; "
            "checkpoints are written only after a read)"
        )

    def totals(self) -> dict[str, float]:
        """The sums as floats (one host read)."""
        return {name: float(total) for name, total in self._totals.items()}
