"""The ``.npy`` file of ``sparsam embed``, written chunk by chunk by one process or several.

Under torchrun every rank embeds its own block of rows (`sparsam.training.distributed.shard_range`)
straight into one memory-mapped file that rank 0 created, so no embedding travels between
processes; rank 0 renames the file into place once every rank has written its rows. After
every chunk the ranks agree on whether all succeeded, so that a failure on one rank stops all
of them at once and leaves no output.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.lib.format import open_memmap

from ._files import atomic_write
from .training import distributed

__all__ = ["write_embeddings"]

_T = TypeVar("_T")


def write_embeddings(
    featurizer: Any,
    images: Sequence[Any],
    names: Sequence[str],
    out: Path,
    *,
    chunk_size: int,
    verbose: int,
) -> tuple[int, int]:
    """Embed ``images`` into the ``.npy`` file ``out`` and list ``names`` beside it.

    The rows go into a hidden temporary file beside ``out``, ``chunk_size`` images at a time;
    once all are written, it is renamed to ``out`` together with ``out.with_suffix(".txt")``,
    which holds ``names`` one per line. If anything fails, neither file is written or changed
    and the temporary file is removed (a process killed outright can leave it behind).

    Call it on every rank of a process group with the same arguments: each rank embeds the
    rows of its `sparsam.training.distributed.shard_range`, in chunks, into the file rank 0
    created, which must therefore lie on a file system that every rank sees.

    Parameters
    ----------
    featurizer : DinoFeaturizer
        Fitted; its ``transform`` embeds each chunk.
    images : sequence
        What ``featurizer.transform`` accepts, sliceable.
    names : sequence of str
        One line per image for the listing.
    out : Path
        The ``.npy`` file; its folder must exist.
    chunk_size : int
        Images per ``transform`` call on each rank.
    verbose : int
        Rank 0 reports the rows written after every chunk when there is more than one.

    Returns
    -------
    shape : tuple of int
        ``(len(images), width)``, the width of the featurizer's current read-out.

    Raises
    ------
    ValueError
        If the ranks were given different images, or (on every rank) when embedding failed
        on another rank with a ``ValueError`` or ``OSError``, such as an unreadable image.
    """
    _check_same_images_on_every_rank(names)
    shape = (len(images), len(featurizer.get_feature_names_out()))
    temporary = distributed.on_main_process(lambda: _create_file_beside(out, shape))
    try:
        embeddings = _on_every_rank(lambda: open_memmap(temporary, mode="r+"), temporary)
        for start, stop, written in _chunks(len(images), chunk_size):
            _on_every_rank(
                functools.partial(_embed_rows, featurizer, images, embeddings, start, stop),
                temporary,
            )
            if verbose and distributed.is_main_process() and len(images) > chunk_size:
                print(f"embedded {written}/{len(images)} images", file=sys.stderr)
        _on_every_rank(embeddings.flush, temporary)
        # Unmap before the rename (no other reference to the map is left): Windows cannot
        # rename a mapped file.
        del embeddings
        listing = out.with_suffix(".txt")
        _on_every_rank(lambda: _publish(temporary, out, listing, names), temporary)
    except BaseException:
        if distributed.is_main_process():
            temporary.unlink(missing_ok=True)
        raise
    return shape


def _check_same_images_on_every_rank(names: Sequence[str]) -> None:
    """Refuse to start when the ranks listed different images (another mount, a file added
    while they searched the folder): rank 0's listing would not describe the others' rows."""
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    found = distributed.gather_objects((len(names), digest))
    if len(set(found)) > 1:
        counts = ", ".join(f"rank {rank}: {count}" for rank, (count, _) in enumerate(found))
        raise ValueError(
            f"The processes found different images in DATA ({counts} images): every process "
            "must see the same files, in the same folder or list, on every node."
        )


def _create_file_beside(out: Path, shape: tuple[int, int]) -> Path:
    """A new hidden float32 ``.npy`` file of ``shape`` next to ``out``, its rows unwritten."""
    temporary = _reserve_beside(out)
    try:
        # Writes the header and sizes the file, and unmaps it at once: each rank opens it
        # to fill in its own rows.
        open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _reserve_beside(path: Path) -> Path:
    """A new, empty hidden file next to ``path`` (created with the umask, as ``open`` does)."""
    while True:
        temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary


def _chunks(n_images: int, chunk_size: int) -> Iterator[tuple[int, int, int]]:
    """This rank's chunks as ``(start, stop, rows written by all ranks afterwards)``.

    Every rank goes through as many chunks as the longest shard (rank 0's) holds, the last
    one possibly empty, so that all ranks meet in the same number of agreements.
    """
    shards = [distributed.shard_range(n_images, shard) for shard in range(distributed.world_size())]
    shard = shards[distributed.rank()]
    for offset in range(0, len(shards[0]), chunk_size):
        start = min(shard.start + offset, shard.stop)
        stop = min(start + chunk_size, shard.stop)
        written = sum(min(len(other), offset + chunk_size) for other in shards)
        yield start, stop, written


def _embed_rows(
    featurizer: Any, images: Sequence[Any], embeddings: np.ndarray, start: int, stop: int
) -> None:
    if start < stop:
        # The rows are this rank's alone: transform must not split them over the ranks again.
        with distributed.no_sharding():
            embeddings[start:stop] = featurizer.transform(images[start:stop])


def _publish(temporary: Path, out: Path, listing: Path, names: Sequence[str]) -> None:
    """Rank 0 renames the complete file onto ``out``, its listing written just before."""
    if distributed.is_main_process():
        with atomic_write(listing, "w") as file:
            file.write("".join(f"{name}\n" for name in names))
            os.replace(temporary, out)


def _on_every_rank(step: Callable[[], _T], temporary: Path) -> _T:
    """``step()`` on every rank; if it failed on any, the temporary file goes and all raise."""
    error, value = None, None
    try:
        value = step()
    except Exception as caught:
        error = caught
    try:
        distributed.raise_if_any_rank_failed(error)
    except Exception:
        if distributed.is_main_process():
            temporary.unlink(missing_ok=True)
        # torchrun stops every process once one exits with an error: the others may leave
        # only after rank 0 has removed the file.
        distributed.barrier()
        raise
    return value
