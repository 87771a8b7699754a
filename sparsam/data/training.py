"""The training images of a DINO run: decoded once into memory, or streamed from their files.

DINO asks for batches of given image indices, in an order only it knows (a seeded permutation
per epoch, sharded over the ranks of a process group). `TrainingImages` answers with uint8
batches ``(b, 3, image_size, image_size)``; `in_memory_images` serves them from one decoded
tensor, `streamed_images` decodes them per batch in DataLoader worker processes with pinned
memory and prefetching, so that memory is bounded by workers x prefetch x batch rather than by
the data set. Both resize with the same function, so they give the same batches bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from sparsam.data.cache import image_keys, subset_source
from sparsam.data.inputs import (
    ImageSource,
    ResizedImages,
    as_image_source,
    batch_as_is,
    iter_batches,
    load_images,
)
from sparsam.data.skipping import SkippedImage
from sparsam.training.transfer import on_device

__all__ = [
    "IN_MEMORY_LIMIT_BYTES",
    "TrainingImages",
    "decoded_bytes",
    "in_memory_images",
    "streamed_images",
    "training_images",
]

# in_memory="auto" decodes the training set into RAM up to this size (1 GiB: 85,000 images at
# 64 px, 7,000 at 224 px) and streams it from its files above. Below it, decoding once saves
# the per-epoch decoding; above it, the set would compete with the model for memory.
IN_MEMORY_LIMIT_BYTES = 2**30
# Batches each DataLoader worker prepares ahead of the training step.
PREFETCH_FACTOR = 2


class TrainingImages:
    """uint8 batches of chosen images, at one square size.

    Parameters
    ----------
    source : ImageSource or None
        The validated images; None when ``images`` holds them all.
    image_size : int
        Side of the square batches.
    images : Tensor or None
        The decoded images ``(n, 3, image_size, image_size)`` (in memory), or None to decode
        every batch from ``source`` (streaming).
    num_workers : int
        DataLoader worker processes that decode while streaming; 0 decodes in this process.
    pin_memory : bool
        Page-locked batches for fast, asynchronous copies to a GPU (streaming only).
    kept : sequence of int or None
        Which images of the caller's input these are, when some were left out because they
        could not be decoded (`training_images` with ``skipped``); None when all are kept.
    """

    def __init__(
        self,
        source: ImageSource | None,
        image_size: int,
        images: torch.Tensor | None,
        num_workers: int = 0,
        pin_memory: bool = False,
        kept: Sequence[int] | None = None,
    ) -> None:
        self.source = source
        self.kept = kept
        self.image_size = image_size
        self.images = images
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self._sampler = _BatchList()
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        return len(self.images) if self.source is None else len(self.source)

    @property
    def streamed(self) -> bool:
        """True when batches are decoded from the source as they are needed."""
        return self.images is None

    def to(self, device: torch.device) -> TrainingImages:
        """Keep in-memory images on ``device`` (a GPU) when they fit easily; returns self."""
        if self.images is not None and device.type == "cuda" and self.images.numel() < 2**31:
            self.images = self.images.to(device)
        return self

    def batches(self, indices: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """uint8 batches of the images ``indices[0]``, ``indices[1]``, … in that order."""
        if self.images is not None:
            for index in indices:
                yield self.images[on_device(index, self.images.device)]
            return
        self._sampler.batches = [index.tolist() for index in indices]
        if self._loader is None:
            # One loader for the whole run: its workers persist across epochs, and the batch
            # list it reads (in this process) is replaced before every epoch.
            workers = self.num_workers > 0
            self._loader = DataLoader(
                ResizedImages(self.source, self.image_size),
                batch_sampler=self._sampler,
                collate_fn=batch_as_is,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                prefetch_factor=PREFETCH_FACTOR if workers else None,
                persistent_workers=workers,
                # Its own generator: workers' seeds would otherwise come from torch's global one.
                generator=torch.Generator().manual_seed(0),
            )
        yield from self._loader

    def fingerprint(self) -> str:
        """A digest that changes whenever a decoded training image can change.

        Built from `sparsam.data.cache.image_keys` (array bytes; a file's path, size and
        modification time) and the image size, so it costs one ``stat`` per file and is the
        same for the in-memory and the streamed form.
        """
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{self.image_size}\0{len(self)}\0".encode())
        if self.source is None:
            digest.update(self.images.cpu().reshape(-1).contiguous().numpy().data)
            return digest.hexdigest()
        for key in image_keys(self.source):
            digest.update(key.encode())
        return digest.hexdigest()

    def close(self) -> None:
        """Stop the streaming workers, if any."""
        self._loader = None


class _BatchList:
    """A batch sampler whose batches are replaced before each epoch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def decoded_bytes(n_images: int, image_size: int) -> int:
    """Bytes of ``n_images`` decoded uint8 RGB images of side ``image_size``."""
    return n_images * 3 * image_size * image_size


def in_memory_images(
    source: ImageSource | Any,
    image_size: int,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: Callable[[int], Any] | None = None,
) -> TrainingImages:
    """Decode every image once into one uint8 tensor and serve batches from it.

    ``progress`` is called with the number of images of every decoded batch.
    """
    source = as_image_source(source)
    images = load_images(source, image_size, batch_size, num_workers, progress=progress)
    return TrainingImages(source, image_size, images)


def streamed_images(
    source: ImageSource | Any, image_size: int, num_workers: int = 0, pin_memory: bool = False
) -> TrainingImages:
    """Decode and resize the images of every batch as it is needed, in DataLoader workers."""
    return TrainingImages(as_image_source(source), image_size, None, num_workers, pin_memory)


def training_images(
    source: ImageSource | Any,
    image_size: int,
    in_memory: bool | str = "auto",
    batch_size: int = 256,
    num_workers: int = 0,
    pin_memory: bool = False,
    progress: Callable[[int], Any] | None = None,
    skipped: list[SkippedImage] | None = None,
) -> TrainingImages:
    """The training images in memory or streamed, as ``in_memory`` asks.

    Parameters
    ----------
    source : ImageSource or any input accepted by `as_image_source`
        The images.
    image_size : int
        Side of the square training images.
    in_memory : bool or "auto", default="auto"
        True decodes all images once; False streams them from their source every epoch;
        "auto" decodes them once when they take at most `IN_MEMORY_LIMIT_BYTES` (1 GiB)
        decoded, and streams them otherwise.
    batch_size : int, default=256
        Images per decoding batch of the in-memory form.
    num_workers : int, default=0
        DataLoader worker processes that decode.
    pin_memory : bool, default=False
        Page-locked streamed batches (for a GPU).
    progress : callable, optional
        Called with the number of images of every batch decoded into memory (for a progress
        bar); never called when streaming.
    skipped : list or None, default=None
        None raises on an image that cannot be decoded, naming it (``on_error="raise"``). A
        list leaves such images out (``on_error="skip"``): each is recorded in it as a
        `sparsam.data.skipping.SkippedImage`, and the result holds the others, in order,
        with ``kept`` their indices. The bad images are known before training starts, so
        every epoch, and a run resumed from a checkpoint, trains on the same images: in
        memory they are found by the one decoding pass; streamed, by a pass that decodes
        every file once before the first epoch (in ``num_workers`` processes, without
        keeping the pixels), which a streamed run with ``skipped=None`` does not make.

    Returns
    -------
    TrainingImages

    Raises
    ------
    ValueError
        If ``skipped`` is a list and no image can be decoded.
    """
    source = as_image_source(source)
    if in_memory == "auto":
        in_memory = decoded_bytes(len(source), image_size) <= IN_MEMORY_LIMIT_BYTES
    found: list[SkippedImage] | None = None if skipped is None else []
    if in_memory:
        images = load_images(
            source, image_size, batch_size, num_workers, progress=progress, skipped=found
        )
    else:
        images = None
        if found is not None and source.reads_files:
            _find_undecodable(source, batch_size, num_workers, found)
    if found:
        skipped.extend(found)
        return _without(source, image_size, images, found, num_workers, pin_memory)
    if images is not None:
        return TrainingImages(source, image_size, images)
    return streamed_images(source, image_size, num_workers, pin_memory)


def _find_undecodable(
    source: ImageSource, batch_size: int, num_workers: int, skipped: list[SkippedImage]
) -> None:
    """Decode every image once, keeping no pixels, and record those that fail in ``skipped``."""
    # 1x1: the resize that follows decoding costs next to nothing, and so does each batch's
    # trip from a worker.
    for _ in iter_batches(source, 1, batch_size, num_workers, skipped=skipped):
        pass


def _without(
    source: ImageSource,
    image_size: int,
    images: torch.Tensor | None,
    skipped: list[SkippedImage],
    num_workers: int,
    pin_memory: bool,
) -> TrainingImages:
    """The training images of ``source`` but the ``skipped`` ones."""
    bad = {image.index for image in skipped}
    kept = [index for index in range(len(source)) if index not in bad]
    if not kept:
        first = skipped[0]
        raise ValueError(
            f"None of the {len(source)} images could be decoded (on_error='skip'), e.g. "
            f"X[{first.index}] ({first.path!r}) {first.reason}; expected readable images."
        )
    subset = subset_source(source, kept)
    if images is None:
        return TrainingImages(subset, image_size, None, num_workers, pin_memory, kept=kept)
    return TrainingImages(subset, image_size, images[kept], kept=kept)
