"""Images left out because they cannot be decoded (``on_error="skip"``): never silently.

Each one becomes a `SkippedImage` (its index, its path, what is wrong); the estimators count
them in a `SkippedImagesWarning`, which carries the list, keep them after ``fit`` in
``skipped_files_``, and the command line writes them to a CSV report with
`write_skipped_report`.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sparsam._files import atomic_write
from sparsam.data.files import ImageDecodeError

__all__ = [
    "ON_ERROR_OPTIONS",
    "SKIPPABLE_ERRORS",
    "SkippedImage",
    "SkippedImagesWarning",
    "merge_skipped",
    "skipped_image",
    "warn_skipped",
    "write_skipped_report",
]

# The values of the estimators' on_error parameter and of the commands' --on-error.
ON_ERROR_OPTIONS = ("raise", "skip")
# What a file that cannot be decoded raises: an ImageDecodeError (a ValueError), or a
# FileNotFoundError for a file deleted after the images were listed. A missing optional
# package (ImportError for pydicom) or MemoryError are never skipped: no image would decode.
SKIPPABLE_ERRORS = (ValueError, FileNotFoundError)
# How many skipped files a warning names before "and N more".
_NAMED_IN_WARNING = 3


class SkippedImage(NamedTuple):
    """One image left out: its position in the input, its file (None for arrays and PIL
    images) and what was wrong with it."""

    index: int
    path: str | None
    reason: str


class SkippedImagesWarning(UserWarning):
    """Some images could not be decoded and were left out (``on_error="skip"``).

    ``warning.skipped`` is the list of `SkippedImage`.
    """

    def __init__(self, message: str, skipped: Sequence[SkippedImage]) -> None:
        super().__init__(message)
        self.skipped = list(skipped)


def skipped_image(item: Any, index: int, error: BaseException) -> SkippedImage:
    """The record of image ``index`` (the input ``item``) whose decoding raised ``error``."""
    path = os.fspath(item) if isinstance(item, str | os.PathLike) else None
    if isinstance(error, ImageDecodeError):
        reason = error.problem
    elif isinstance(error, FileNotFoundError):
        reason = "no longer exists (it was there when the images were listed)"
    else:
        reason = str(error)
    return SkippedImage(index, path, reason)


def merge_skipped(*lists: Iterable[SkippedImage]) -> list[SkippedImage]:
    """The skipped images of several passes over the same input, once each, by index."""
    merged = {}
    for skipped in lists:
        for image in skipped:
            merged.setdefault(image.index, image)
    return [merged[index] for index in sorted(merged)]


def warn_skipped(skipped: Sequence[SkippedImage], n_images: int, what: str) -> None:
    """Issue a `SkippedImagesWarning` counting and naming the images ``what`` left out."""
    if not skipped:
        return
    named = "; ".join(
        f"X[{image.index}]" + (f" ({image.path!r})" if image.path else "") + f" {image.reason}"
        for image in skipped[:_NAMED_IN_WARNING]
    )
    more = len(skipped) - _NAMED_IN_WARNING
    message = (
        f"{what} skipped {len(skipped)} of {n_images} images that could not be decoded "
        f"(on_error='skip'): {named}" + (f"; and {more} more" if more > 0 else "")
    )
    warnings.warn(SkippedImagesWarning(message, skipped), stacklevel=3)


def write_skipped_report(path: str | os.PathLike, skipped: Sequence[SkippedImage]) -> Path:
    """Write the skipped images as CSV (``index,path,reason``, one row each), atomically."""
    path = Path(path)
    with atomic_write(path, "w") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(SkippedImage._fields)
        for image in skipped:
            writer.writerow([image.index, image.path or "", image.reason])
    return path
