"""Host-to-device copies that do not make the CPU wait for the GPU."""

from __future__ import annotations

import torch

__all__ = ["on_device"]


def on_device(values: torch.Tensor | list, device: torch.device) -> torch.Tensor:
    """``values`` (a CPU tensor or a list of floats) on ``device``, without waiting for it.

    A plain copy from ordinary memory to a GPU makes the CPU wait until the GPU has run
    everything queued before it; a copy from page-locked memory is queued like a kernel. The
    augmentation copies a few small tensors per step, and each wait would stop the CPU from
    preparing the next step while the GPU runs this one.
    """
    tensor = values if isinstance(values, torch.Tensor) else torch.tensor(values)
    if torch.device(device).type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
