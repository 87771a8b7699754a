"""Checking an archive of image files before training: what ``sparsam check`` reports.

`screen_files` decodes every file once, in DataLoader worker processes, exactly as training
would (`sparsam.data.files.read_image_file`), and returns one `FileProblem` per file that is
unreadable, empty, tiny, too large (a decompression bomb) or a byte-for-byte duplicate of an
earlier one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sparsam.data.files import DICOM_SUFFIXES, ImageDecodeError, read_image_file

__all__ = ["PROBLEM_KINDS", "FileProblem", "screen_files"]

# What can be wrong with a file, in the order the summary counts them.
PROBLEM_KINDS = ("unreadable", "empty", "tiny", "too large", "duplicate")
# Files a worker inspects per batch: small, so the progress bar moves and one huge file does
# not hold up many others.
_FILES_PER_BATCH = 16


class FileProblem(NamedTuple):
    """One problem of one file: its index in the list, its path, the kind (one of
    `PROBLEM_KINDS`) and what exactly is wrong."""

    index: int
    path: str
    kind: str
    detail: str


class _Inspection(NamedTuple):
    """What a worker found about one file."""

    index: int
    digest: str | None
    problem: FileProblem | None


def screen_files(
    paths: Sequence[str | os.PathLike],
    *,
    min_size: int = 8,
    max_pixels: int | None = None,
    num_workers: int = 0,
    progress: Callable[[int], Any] | None = None,
) -> list[FileProblem]:
    """Decode every file once and report the problems, in the order of ``paths``.

    Parameters
    ----------
    paths : sequence of path-like
        The image files (PNG, JPEG, TIFF, BMP or DICOM).
    min_size : int, default=8
        A decoded image whose height or width is smaller is "tiny".
    max_pixels : int or None, default=None
        An image with more pixels is "too large" and is not decoded; None takes
        ``PIL.Image.MAX_IMAGE_PIXELS``, PIL's guard against decompression bombs (no limit if
        that is None too).
    num_workers : int, default=0
        DataLoader worker processes that decode; 0 decodes in this process.
    progress : callable, optional
        Called with the number of files of every inspected batch.

    Returns
    -------
    list of FileProblem
        Sorted by index; a file has at most one problem (an empty file is only "empty", an
        unreadable one only "unreadable"), except that duplicates are found among the files
        that decode: every copy after the first is a "duplicate", naming the first.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    loader = DataLoader(
        _Inspector([os.fspath(path) for path in paths], min_size, limit),
        batch_size=_FILES_PER_BATCH,
        num_workers=num_workers,
        collate_fn=_as_is,
    )
    problems: list[FileProblem] = []
    first_with: dict[str, int] = {}
    for batch in loader:
        for inspection in batch:
            if inspection.problem is not None:
                problems.append(inspection.problem)
            elif inspection.digest in first_with:
                first = first_with[inspection.digest]
                problems.append(
                    FileProblem(
                        inspection.index,
                        os.fspath(paths[inspection.index]),
                        "duplicate",
                        f"the same bytes as {os.fspath(paths[first])!r}",
                    )
                )
            else:
                first_with[inspection.digest] = inspection.index
        if progress is not None:
            progress(len(batch))
    return problems


def _as_is(batch: list[_Inspection]) -> list[_Inspection]:
    return batch


class _Inspector(Dataset):
    """Inspects the files of a batch: ``__getitems__`` gives one `_Inspection` each."""

    def __init__(self, paths: list[str], min_size: int, max_pixels: int | None) -> None:
        self.paths = paths
        self.min_size = min_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Inspection:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[_Inspection]:
        with _pixel_limit(self.max_pixels):
            return [self._inspect(index) for index in indices]

    def _inspect(self, index: int) -> _Inspection:
        path = self.paths[index]

        def problem(kind: str, detail: str) -> _Inspection:
            return _Inspection(index, None, FileProblem(index, path, kind, detail))

        try:
            data = Path(path).read_bytes()
        except OSError as error:
            return problem("unreadable", f"could not be read ({error})")
        if not data:
            return problem("empty", "has 0 bytes")
        size = _header_size(path, data)
        if size is not None and self.max_pixels is not None:
            width, height = size
            if width * height > self.max_pixels:
                return problem("too large", _too_large(width, height, self.max_pixels))
        try:
            pixels = read_image_file(path, index)
        except (ImageDecodeError, FileNotFoundError) as error:
            detail = error.problem if isinstance(error, ImageDecodeError) else str(error)
            return problem("unreadable", detail)
        height, width = pixels.shape[:2]
        if self.max_pixels is not None and width * height > self.max_pixels:
            return problem("too large", _too_large(width, height, self.max_pixels))
        if min(height, width) < self.min_size:
            return problem(
                "tiny", f"is {width}x{height} pixels, smaller than {self.min_size} on a side"
            )
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        return _Inspection(index, digest, None)


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (
        f"is {width}x{height} = {width * height} pixels, more than {max_pixels} (a "
        "decompression bomb, or an image to downscale first)"
    )


def _header_size(path: str, data: bytes) -> tuple[int, int] | None:
    """Width and height from a PIL format's header, without decoding; None for DICOM or a
    file PIL cannot identify (decoding then says what is wrong)."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES or data[128:132] == b"DICM":
        return None
    with _pixel_limit(None), contextlib.suppress(Exception):
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    return None


@contextlib.contextmanager
def _pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Inside, PIL's decompression-bomb guard is ``max_pixels`` (None: off)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous
