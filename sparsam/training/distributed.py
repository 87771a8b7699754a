"""torch.distributed for DINO: who this process is, and what its ranks must agree on.

sparsam never starts processes itself: ``torchrun`` does (one process per GPU, on one or many
nodes), and `init_from_environment` joins the process group it describes. Everything here is a
no-op in a single process, where no process group is initialised.

Work that needs no communication, such as embedding images, is split into shards: every rank
takes one contiguous block of the inputs (`shard_range`), and `shard_and_gather` puts the ranks'
results back together in input order.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "average_batchnorm_statistics",
    "barrier",
    "broadcast_object",
    "gather_objects",
    "init_from_environment",
    "is_distributed",
    "is_main_process",
    "mean_over_ranks",
    "no_sharding",
    "on_main_process",
    "raise_if_any_rank_failed",
    "rank",
    "shard_and_gather",
    "shard_range",
    "sharding_active",
    "to_batchnorm",
    "to_sync_batchnorm",
    "world_size",
]

_T = TypeVar("_T")

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
        If torchrun's variables are only partly set, "cuda" is asked for without CUDA or
        with fewer GPUs than ``LOCAL_RANK`` needs, or ``device`` names no torch device.
    """
    present = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not present or is_distributed():
        if is_distributed() and use_cuda:
            return torch.device("cuda", torch.cuda.current_device())
        if device == "auto":
            return torch.device("cuda" if use_cuda else "cpu")
        try:
            return torch.device(device)
        except RuntimeError as error:
            raise ValueError(
                f"device={device!r} is not a device torch knows; expected 'auto', 'cpu', "
                "'cuda' or 'cuda:N'."
            ) from error
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


def mean_over_ranks(row: dict[str, float], device: torch.device) -> dict[str, float]:
    """The ranks' mean of each value, so that every rank records the same history."""
    if not is_distributed() or world_size() == 1:
        return row
    names = sorted(row)
    values = torch.tensor([row[name] for name in names], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return dict(zip(names, (values / world_size()).tolist(), strict=True))


def barrier() -> None:
    """Wait until every rank has arrived here."""
    if is_distributed():
        dist.barrier()


def on_main_process(check: Callable[[], _T]) -> _T:
    """Run ``check()`` on rank 0 only; every rank returns its result or raises its error.

    Under torchrun, a check of the file system that only one rank failed would leave the
    others waiting for it in their next collective. ``ValueError`` and ``OSError`` of
    ``check`` reach every rank as ``ValueError`` with the same message; other errors end
    rank 0 alone.
    """
    outcome: tuple[bool, Any] = (True, None)
    if is_main_process():
        try:
            outcome = (True, check())
        except (ValueError, OSError) as error:
            outcome = (False, str(error))
    succeeded, value = broadcast_object(outcome)
    if not succeeded:
        raise ValueError(value)
    return value


def raise_if_any_rank_failed(error: BaseException | None) -> None:
    """Raise on every rank if ``error`` is not None on any rank; call it on every rank.

    A rank that failed alone and left would leave the others waiting in their next
    collective, or, worse, let them finish a result that lacks its part. Here the failed
    rank raises ``error`` itself and every other rank raises an error that names the failed
    rank and repeats its message: ``ValueError`` where the failure was a ``ValueError`` or an
    ``OSError`` (bad input, a file that cannot be read), ``RuntimeError`` otherwise. Where
    several ranks failed, the first in rank order is named.

    Parameters
    ----------
    error : BaseException or None
        What this rank raised in the step the ranks agree on, or None if it succeeded.

    Raises
    ------
    ValueError or RuntimeError
        On the ranks that succeeded, when another rank failed.
    """
    _raise_reported_failure(error, gather_objects(_failure_report(error)))


def _failure_report(error: BaseException | None) -> tuple[str, str, bool] | None:
    # Exceptions need not pickle; their name, message and kind always do.
    if error is None:
        return None
    return type(error).__name__, str(error), isinstance(error, (ValueError, OSError))


def _raise_reported_failure(
    error: BaseException | None, reports: list[tuple[str, str, bool] | None]
) -> None:
    if error is not None:
        raise error
    for failed_rank, report in enumerate(reports):
        if report is not None:
            name, message, bad_input = report
            raise (ValueError if bad_input else RuntimeError)(
                f"rank {failed_rank} of {len(reports)} failed with {name}: {message}"
            )


# Off inside `no_sharding`; a context variable, so that threads and tasks each have their own.
_SHARDING = contextvars.ContextVar("sparsam_sharding", default=True)


def sharding_active() -> bool:
    """True where estimators split their work over the ranks: in a process group of more
    than one rank, outside `no_sharding`."""
    return _SHARDING.get() and world_size() > 1


@contextlib.contextmanager
def no_sharding() -> Iterator[None]:
    """Inside this block every rank works on the input it is given, alone.

    ``DinoFeaturizer.transform`` then embeds all of its own ``X`` and gathers nothing, so the
    ranks may pass different images (``sparsam embed`` embeds each rank's rows this way).
    Training is unaffected: ``fit`` still trains one model on all ranks.

    Examples
    --------
    >>> from sparsam.training.distributed import no_sharding, sharding_active
    >>> with no_sharding():
    ...     sharding_active()
    False
    """
    token = _SHARDING.set(False)
    try:
        yield
    finally:
        _SHARDING.reset(token)


def shard_range(n_items: int, shard: int | None = None, n_shards: int | None = None) -> range:
    """The contiguous block of ``range(n_items)`` that one rank works on.

    The blocks follow each other in rank order and cover every item once; their sizes differ
    by at most one, the first ``n_items % n_shards`` ranks taking one item more. With more
    ranks than items, the last ranks get empty blocks.

    Parameters
    ----------
    n_items : int
        Number of items to share, at least 0.
    shard : int, optional
        Whose block: this process's `rank` when omitted.
    n_shards : int, optional
        Number of blocks: the `world_size` when omitted.

    Returns
    -------
    range
        Indices ``start`` to ``stop`` of the block.

    Examples
    --------
    >>> [shard_range(5, shard, n_shards=2) for shard in (0, 1)]
    [range(0, 3), range(3, 5)]
    """
    shard = rank() if shard is None else shard
    n_shards = world_size() if n_shards is None else n_shards
    if n_items < 0 or not 0 <= shard < n_shards:
        raise ValueError(
            f"shard_range({n_items}, shard={shard}, n_shards={n_shards}): expected "
            "n_items >= 0 and 0 <= shard < n_shards."
        )
    base, extra = divmod(n_items, n_shards)
    start = shard * base + min(shard, extra)
    return range(start, start + base + (shard < extra))


def shard_and_gather(compute: Callable[[range], np.ndarray], n_items: int) -> np.ndarray:
    """``compute`` on this rank's shard of ``n_items`` items; every rank's rows, in order.

    Call it on every rank with the same ``n_items``. Each rank computes only the rows of its
    `shard_range`, and receives the rows of all ranks concatenated in rank order, which is
    input order. Outside a process group (or inside `no_sharding`) it returns
    ``compute(range(n_items))``. The rows travel with ``all_gather_object``, which places
    them on the rank's current CUDA device under NCCL (`init_from_environment` sets it).

    Parameters
    ----------
    compute : callable
        Takes a ``range`` of item indices and returns an array with one row per index; it
        must return the same dtype and trailing shape on every rank.
    n_items : int
        Number of items in all.

    Returns
    -------
    numpy.ndarray
        ``n_items`` rows, the same on every rank.

    Raises
    ------
    ValueError
        If the ranks passed different ``n_items``; and as `raise_if_any_rank_failed` when
        ``compute`` failed on some rank (every rank raises).
    """
    if not sharding_active():
        return compute(range(n_items))
    error, rows = None, None
    try:
        rows = compute(shard_range(n_items))
    except Exception as caught:
        error = caught
    # One collective carries the sizes, the failures and the rows: no rank can be left
    # waiting for another that failed, or that was given other items.
    gathered = gather_objects((n_items, _failure_report(error), rows))
    sizes = [size for size, _, _ in gathered]
    if len(set(sizes)) > 1:
        raise ValueError(
            f"Ranks 0 to {len(sizes) - 1} were given {sizes} items: every rank must pass the "
            "same inputs, of which each computes its shard (or work on each rank's own inputs "
            "inside sparsam.training.distributed.no_sharding())."
        )
    _raise_reported_failure(error, [report for _, report, _ in gathered])
    return np.concatenate([shard_rows for _, _, shard_rows in gathered])


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
