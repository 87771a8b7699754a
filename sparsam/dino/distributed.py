"""torch.distributed for DINO: who this process is, and what its ranks must agree on.

sparsam never starts processes itself: ``torchrun`` does (one process per GPU, on one or many
nodes), and `init_from_environment` joins the process group it describes. Everything here is a
no-op in a single process, where no process group is initialised.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "average_batchnorm_statistics",
    "broadcast_object",
    "gather_objects",
    "init_from_environment",
    "is_distributed",
    "is_main_process",
    "rank",
    "to_batchnorm",
    "to_sync_batchnorm",
    "world_size",
]

# torchrun sets these for every process it starts (and so do SLURM-launched torchrun jobs).
_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """True inside an initialised process group (with one or more ranks)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the process group; 0 in a single process."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the process group; 1 in a single process."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, the only rank that writes checkpoints and outputs."""
    return rank() == 0


def init_from_environment(device: str = "auto") -> torch.device:
    """Join the process group that ``torchrun`` describes, and return this rank's device.

    Reads ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. On
    CUDA (``device`` "auto" with CUDA available, or "cuda") every process takes the GPU of
    its ``LOCAL_RANK`` and the NCCL backend; on the CPU the gloo backend. Outside torchrun,
    or when a process group is already initialised, nothing is joined.

    Parameters
    ----------
    device : str, default="auto"
        "auto", "cpu" or "cuda"; an explicit index ("cuda:1") is overridden by
        ``LOCAL_RANK`` under torchrun, since each process must own one GPU.

    Returns
    -------
    torch.device
        The device this process trains on.

    Raises
    ------
    ValueError
        If torchrun's variables are only partly set, or "cuda" is asked for without CUDA or
        with fewer GPUs than ``LOCAL_RANK`` needs.
    """
    present = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not present or is_distributed():
        if is_distributed() and use_cuda:
            return torch.device("cuda", torch.cuda.current_device())
        if device == "auto":
            return torch.device("cuda" if use_cuda else "cpu")
        return torch.device(device)
    missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"Found {', '.join(present)} but not {', '.join(missing)} in the environment: "
            "start distributed runs with torchrun, which sets all of them."
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here.")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                "start at most one process per GPU (torchrun --nproc-per-node)."
            )
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


@torch.no_grad()
def average_batchnorm_statistics(module: nn.Module) -> None:
    """Average the BatchNorm running statistics of ``module`` over the ranks, in place.

    Without SyncBatchNorm (which torch offers on GPUs only) every rank's running statistics
    follow its own shard of the data. Averaged after every update, they are the running
    average of the ranks' mean batch statistics, the same on every rank.
    """
    if not is_distributed() or world_size() == 1:
        return
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
            for buffer in (layer.running_mean, layer.running_var):
                dist.all_reduce(buffer)
                buffer.div_(world_size())


_ORIGINAL_CLASS = "_sparsam_batchnorm_class"


def to_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer a SyncBatchNorm that remembers its class."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, nn.SyncBatchNorm
        ):
            synced = nn.SyncBatchNorm.convert_sync_batchnorm(child)
            setattr(synced, _ORIGINAL_CLASS, type(child))
            setattr(module, name, synced)
        else:
            to_sync_batchnorm(child)
    return module


def to_batchnorm(module: nn.Module) -> nn.Module:
    """Undo `to_sync_batchnorm` in place: the original classes, holding the same parameter
    and buffer tensors (so an optimizer built on the synced model keeps working)."""
    for name, child in module.named_children():
        original = getattr(child, _ORIGINAL_CLASS, None)
        if isinstance(child, nn.SyncBatchNorm) and original is not None:
            plain = original(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            for parameter_name, parameter in child.named_parameters(recurse=False):
                setattr(plain, parameter_name, parameter)
            for buffer_name, buffer in child.named_buffers(recurse=False):
                setattr(plain, buffer_name, buffer)
            plain.train(child.training)
            setattr(module, name, plain)
        else:
            to_batchnorm(child)
    return module
