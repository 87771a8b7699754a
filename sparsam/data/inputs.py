"""Turn any user input for an image transformer into uint8 image tensors.

`as_image_source` checks the container eagerly and cheaply, and returns an `ImageSource` that
decodes one image at a time as a uint8 ``(3, H, W)`` tensor at its native size.
`iter_batches` and `load_images` resize the images to a square and batch them, decoding in
`torch.utils.data.DataLoader` workers so that files are read batch by batch.
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset

from sparsam.data.files import check_float_range, pil_to_array, read_image_file
from sparsam.data.skipping import SKIPPABLE_ERRORS, SkippedImage, skipped_image

__all__ = [
    "ImageSource",
    "ResizedImages",
    "as_image_source",
    "batch_as_is",
    "iter_batches",
    "load_images",
    "resize_images",
]

_UINT16_BIT_DEPTHS = (8, 10, 12, 14, 16)
_ACCEPTED_DTYPES = "uint8, uint16, float16, float32 or float64"
# Bounds the temporary memory of the vectorised float checks on large stacked arrays.
_CHECK_CHUNK_BYTES = 2**26


class ImageSource:
    """Random access to a validated collection of images as uint8 ``(3, H, W)`` tensors.

    Create it with `as_image_source`, which validates the input; images are decoded only when
    indexed, so file paths are read lazily.

    Parameters
    ----------
    images : numpy.ndarray or list
        Either a stacked array ``(n, H, W)`` or ``(n, H, W, C)``, or a list whose items are
        numpy arrays, PIL images or file paths.

    Examples
    --------
    >>> import numpy as np
    >>> source = as_image_source(np.zeros((2, 4, 5), dtype=np.uint8))
    >>> len(source), tuple(source[0].shape)
    (2, (3, 4, 5))
    """

    def __init__(self, images: np.ndarray | list[Any]) -> None:
        self._images = images

    def __len__(self) -> int:
        return len(self._images)

    @property
    def items(self) -> np.ndarray | tuple[Any, ...]:
        """The images as given, not decoded: a read-only view of the stacked array, or a tuple
        of the arrays, PIL images and paths of the list.

        Each image is decoded on its own, so ``ImageSource(source.items[i:j])`` decodes its
        images exactly as ``source`` does.
        """
        if isinstance(self._images, np.ndarray):
            view = self._images.view()
            view.flags.writeable = False
            return view
        return tuple(self._images)

    def __getitem__(self, index: int) -> torch.Tensor:
        """Decode image `index` as a contiguous uint8 tensor ``(3, H, W)`` at its native size."""
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(
                f"ImageSource indices must be integers; got {type(index).__name__}"
            ) from None
        n_images = len(self)
        if not -n_images <= index < n_images:
            raise IndexError(f"image index {index} is out of range for {n_images} images")
        index %= n_images
        return _decode(self._images[index], index).contiguous()

    @property
    def reads_files(self) -> bool:
        """True when some images are file paths, decoded only when indexed."""
        if isinstance(self._images, np.ndarray):
            return False
        return any(isinstance(item, str | os.PathLike) for item in self._images)

    def batch(self, indices: list[int]) -> torch.Tensor | list[torch.Tensor]:
        """Decode the images ``indices``: the ``(3, H, W)`` tensors of ``source[i]``.

        A stacked array gives one ``(b, 3, H, W)`` tensor decoded in one vectorised pass (a
        channels-last view of the array's copy; uint16 images one by one, each by its own bit
        depth), a list gives a list of ``(3, H, W)`` channels-last views of each image's
        decoded ``(H, W, 3)`` pixels, which `resize_images` stacks without a transposing
        copy per image. Either way ``batch(indices)[j]`` equals ``source[indices[j]]``.
        """
        if isinstance(self._images, np.ndarray):
            return _stacked_batch(self._images, indices)
        return [_decode(self._images[index], index) for index in indices]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_images={len(self)})"


def as_image_source(X: Any) -> ImageSource:
    """Validate an image collection and wrap it for lazy decoding to uint8 tensors.

    Only cheap checks run here: array shapes, dtypes and value ranges, item types, and that
    every file path exists. Files are opened only when the returned source is indexed.

    Parameters
    ----------
    X : numpy.ndarray, torch.Tensor, pandas.Series, pandas.DataFrame, list, tuple or ImageSource
        One of

        - a numpy array ``(n, H, W)`` (grayscale) or ``(n, H, W, C)`` with C in 1, 3, 4;
        - a torch tensor, converted with ``.numpy()`` (after ``.cpu()``; bfloat16 through
          float32) and then read as a numpy array, except that a 4-D tensor with 1 or 3
          entries in its second axis is read channels first, ``(n, C, H, W)``, torch's own
          layout (``torchvision``'s ``ToTensor`` and ``read_image``). Channels-first is
          accepted for tensors only: numpy images are channels last by convention (PIL,
          scikit-image, matplotlib), and a numpy ``(n, 3, H, W)`` array raises with a hint;
        - a pandas Series, or a DataFrame with one column, of any of the items a list may
          hold (below), e.g. the image-path column that a ``ColumnTransformer`` selects
          (``"path"`` gives a Series, ``["path"]`` a one-column DataFrame). Items are taken
          by position: ``X[i]`` in an error message is the i-th row, whatever the index;
        - a list or tuple of numpy arrays ``(H, W)`` or ``(H, W, C)`` of possibly different
          sizes, of PIL images (any mode), or of file paths (``str`` or ``os.PathLike``);
          items of different kinds may be mixed;
        - a 1-D numpy array of file paths (dtype ``object`` or ``str``).

        Array dtypes may be uint8, uint16 or float (float16, float32, float64) with values
        in [0, 1], which are mapped to uint8 by ``round(x * 255)``. uint16 data is scaled per
        image by ``round(x * 255 / (2**b - 1))`` with ``b`` the smallest bit depth among 8,
        10, 12, 14 and 16 whose maximum holds the image's largest pixel value, so 12-bit
        microscopy with a maximum of 4095 maps to the full uint8 range. The rule is the same
        for the images of a stacked array, uint16 arrays in a list, uint16 PIL images (modes
        ``"I;16"``, ``"I"``) and 16-bit PNG or TIFF files, and an image's pixels never depend
        on the other images passed with it (a few-shot split, a cache hit or the batch it
        falls in cannot change its embedding). Two images of one sensor can therefore be
        scaled differently (a dark 12-bit image whose maximum is below 256 is read as 8-bit);
        to keep their relative brightness, pass float arrays divided by the sensor's maximum,
        e.g. ``x / 4095``. Float PIL images (mode ``"F"``) follow the float rule.

        Files may be PNG, JPEG, TIFF or BMP (read with PIL), or DICOM (suffix ``.dcm`` or
        ``.dicom``, or the ``DICM`` marker at byte 128), read with pydicom when installed.
        Images with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 million by
        default; PIL's guard against decompression bombs) are refused; raise that limit, or
        set it to None, to read larger files.
        DICOM data gets its RescaleSlope and RescaleIntercept applied; data deeper than
        8 bits is then min-max scaled to uint8 per image, and MONOCHROME1 is inverted.

        Grayscale images are repeated to 3 channels and alpha channels are dropped.

    Returns
    -------
    ImageSource
        ``len(source)`` images; ``source[i]`` is a contiguous uint8 tensor ``(3, H, W)``.

    Raises
    ------
    ValueError
        If `X` is empty, if an image has the wrong number of dimensions or channels, zero
        height or width, or float pixels that are not finite or outside [0, 1].
    TypeError
        If `X`, an item of it or an array dtype is not one of the accepted kinds.
    FileNotFoundError
        If a file path does not point to an existing file.

    Notes
    -----
    Files are only opened when an image is indexed: a file that cannot be decoded, or is
    larger than ``PIL.Image.MAX_IMAGE_PIXELS``, raises a ValueError naming its index and path
    then.

    Examples
    --------
    >>> import numpy as np
    >>> source = as_image_source(np.full((1, 2, 2), 4095, dtype=np.uint16))
    >>> int(source[0].max())
    255
    """
    if isinstance(X, ImageSource):
        return X
    X = _from_pandas(X)
    if isinstance(X, torch.Tensor):
        return _stacked_array_source(_tensor_to_array(X))
    if isinstance(X, str | bytes | os.PathLike):
        raise TypeError(
            f"X is a single {type(X).__name__} ({X!r}); pass a list of file paths, e.g. [path]"
        )
    if isinstance(X, Image.Image):
        raise TypeError("X is a single PIL image; pass a list of PIL images, e.g. [image]")
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS":
            if X.ndim != 1:
                raise ValueError(
                    f"X is a {X.ndim}-D array of dtype {X.dtype} with shape {X.shape}; expected "
                    "a 1-D array of file paths"
                )
            return _list_source(list(X))
        return _stacked_array_source(X)
    if isinstance(X, list | tuple):
        return _list_source(list(X))
    raise TypeError(
        f"X has type {type(X).__name__}; expected a numpy array, a torch tensor, a pandas "
        "Series or one-column DataFrame, or a list or tuple of numpy arrays, PIL images or "
        "file paths"
    )


def _from_pandas(X: Any) -> Any:
    """The items of a pandas Series or one-column DataFrame as a list; anything else as is.

    Items are taken by position, so error messages name ``X[i]`` with ``i`` the row's
    position, whatever the index labels are.
    """
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return X
    if isinstance(X, pandas.DataFrame):
        if X.shape[1] != 1:
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns {list(X.columns)}; expected one "
                "column of images or file paths (in a ColumnTransformer, select one column, "
                'e.g. ["path"])'
            )
        X = X.iloc[:, 0]
    if isinstance(X, pandas.Series):
        return X.to_list()
    return X


def _tensor_to_array(X: torch.Tensor) -> np.ndarray:
    """A numpy view of a stacked tensor, channels last.

    Torch stores images channels first: a 4-D tensor whose second axis has 1 or 3 entries
    is read as ``(n, C, H, W)``; any other tensor as a numpy array would be.
    """
    X = X.detach().cpu()
    if X.dtype == torch.bfloat16:
        # numpy has no bfloat16; float32 holds every bfloat16 value exactly.
        X = X.float()
    try:
        array = X.numpy()
    except TypeError as error:
        raise TypeError(
            f"X is a torch tensor of dtype {X.dtype}; expected {_ACCEPTED_DTYPES}"
        ) from error
    if array.ndim == 4 and array.shape[1] in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    return array


def iter_batches(
    source: ImageSource | Any,
    image_size: int,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    *,
    skipped: list[SkippedImage] | None = None,
) -> Iterator[torch.Tensor]:
    """Iterate over the images in order as uint8 batches resized to ``image_size x image_size``.

    Each image is resized with `resize_images` (antialiased bilinear on uint8, aspect ratio
    not kept); images already of that size are left unchanged. Decoding and resizing run a
    batch at a time in `torch.utils.data.DataLoader` workers, so files are read batch by
    batch.

    Parameters
    ----------
    source : ImageSource or any input accepted by `as_image_source`
        The images.
    image_size : int
        Side length of the square output images.
    batch_size : int
        Number of images per batch; the last batch may be smaller.
    num_workers : int, default=0
        Number of worker processes that decode files; 0 decodes in the calling process. Each
        worker prepares two batches ahead. Sources without file paths (arrays, PIL images)
        are always converted in the calling process: there is no decoding to spread, and
        workers would cost their start-up and the transfer of every batch.
    pin_memory : bool, default=False
        Return batches in page-locked memory, for fast asynchronous copies to a GPU.
    skipped : list or None, default=None
        None raises on the first image that cannot be decoded (``on_error="raise"``). A list
        skips such images (``on_error="skip"``): their rows of the batch are zero, and a
        `sparsam.data.skipping.SkippedImage` (index, path, reason) is appended to the list
        for each, in order, as its batch is yielded.

    Returns
    -------
    Iterator[torch.Tensor]
        uint8 batches of shape ``(b, 3, image_size, image_size)``, in the order of `source`.

    Raises
    ------
    ValueError
        If `image_size` or `batch_size` is not a positive integer, or `num_workers` is
        negative; decoding errors of single images are raised when their batch is reached
        (unless skipped).
    """
    source = as_image_source(source)
    for name, value, minimum in (
        ("image_size", image_size, 1),
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    loader = DataLoader(
        ResizedImages(source, int(image_size), skip=skipped is not None),
        batch_size=int(batch_size),
        shuffle=False,
        num_workers=int(num_workers) if source.reads_files else 0,
        collate_fn=batch_as_is,
        pin_memory=pin_memory,
        persistent_workers=False,
        # Its own generator: a DataLoader otherwise draws its workers' base seed from torch's
        # global generator, and decoding would change the caller's random numbers.
        generator=torch.Generator().manual_seed(0),
    )
    # A plain iterator rather than a generator, so that invalid arguments raise at the call.
    if skipped is None:
        return iter(loader)
    return _unpack_skipped(iter(loader), skipped)


def _unpack_skipped(
    batches: Iterator[tuple[torch.Tensor, list[SkippedImage]]], skipped: list[SkippedImage]
) -> Iterator[torch.Tensor]:
    for batch, failed in batches:
        skipped.extend(failed)
        yield batch


def load_images(
    source: ImageSource | Any,
    image_size: int,
    batch_size: int = 256,
    num_workers: int = 0,
    *,
    progress: Callable[[int], Any] | None = None,
    skipped: list[SkippedImage] | None = None,
) -> torch.Tensor:
    """Decode and resize all images into one uint8 tensor ``(n, 3, image_size, image_size)``.

    Parameters
    ----------
    source : ImageSource or any input accepted by `as_image_source`
        The images.
    image_size : int
        Side length of the square output images.
    batch_size : int, default=256
        Number of images decoded per batch.
    num_workers : int, default=0
        Number of worker processes; 0 decodes in the calling process.
    progress : callable, optional
        Called with the number of images of every batch once it is decoded, e.g. a
        ``tqdm`` bar's ``update``.
    skipped : list or None, default=None
        As in `iter_batches`: None raises on an image that cannot be decoded; a list leaves
        its row zero and records it.

    Returns
    -------
    torch.Tensor
        The same images as `iter_batches` yields, concatenated in order.
    """
    source = as_image_source(source)
    batches = iter_batches(source, image_size, batch_size, num_workers, skipped=skipped)
    # Filled in place rather than torch.cat of all batches, which would briefly hold the
    # decoded set twice.
    images = torch.empty((len(source), 3, image_size, image_size), dtype=torch.uint8)
    start = 0
    for batch in batches:
        images[start : start + len(batch)] = batch
        start += len(batch)
        if progress is not None:
            progress(len(batch))
    return images


class ResizedImages(Dataset):
    """The images of a source, resized to a square: one per item, or a batch per call.

    ``dataset[i]`` is image ``i`` as a uint8 ``(3, image_size, image_size)`` tensor;
    ``dataset.__getitems__(indices)``, which a `DataLoader` calls once per batch, decodes the
    batch together and resizes it with `resize_images` in one call per image size. Give the
    DataLoader ``collate_fn=batch_as_is``: the batch is already one tensor.

    With ``skip=True`` a batch is ``(images, skipped)``: the rows of images that could not be
    decoded are zero, and ``skipped`` holds a `sparsam.data.skipping.SkippedImage` for each.
    """

    def __init__(self, source: ImageSource, image_size: int, skip: bool = False) -> None:
        self.source = source
        self.image_size = image_size
        self.skip = skip

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        return resize_images([self.source[index]], self.image_size)[0]

    def __getitems__(
        self, indices: list[int]
    ) -> torch.Tensor | tuple[torch.Tensor, list[SkippedImage]]:
        if not self.skip:
            return resize_images(self.source.batch(indices), self.image_size)
        if not self.source.reads_files:
            # Arrays were validated up front; only files can fail to decode.
            return resize_images(self.source.batch(indices), self.image_size), []
        return self._decode_skipping(indices)

    def _decode_skipping(self, indices: list[int]) -> tuple[torch.Tensor, list[SkippedImage]]:
        """The batch with zero rows for the images that cannot be decoded, and their records."""
        decoded, rows, skipped = [], [], []
        items = self.source.items
        for row, index in enumerate(indices):
            try:
                decoded.append(self.source.batch([index])[0])
            except SKIPPABLE_ERRORS as error:
                skipped.append(skipped_image(items[index], index, error))
            else:
                rows.append(row)
        size = self.image_size
        batch = torch.zeros((len(indices), 3, size, size), dtype=torch.uint8)
        if decoded:
            batch[rows] = resize_images(decoded, size)
        return batch, skipped


def batch_as_is(batch: torch.Tensor) -> torch.Tensor:
    """The ``collate_fn`` for `ResizedImages`: its batches need no collating."""
    return batch


def resize_images(images: torch.Tensor | list[torch.Tensor], image_size: int) -> torch.Tensor:
    """Resize uint8 images to one contiguous uint8 batch ``(b, 3, image_size, image_size)``.

    Antialiased bilinear interpolation computed on uint8 pixels (torch's integer kernel,
    about 10x faster than interpolating floats and rounding back; the two differ by at most
    one grey level), one call per run of consecutive images of the same size. Images already
    at ``image_size`` are copied unchanged.

    Parameters
    ----------
    images : Tensor of shape (b, 3, H, W) or list of Tensor of shape (3, H, W)
        uint8 images in any memory layout, as `ImageSource.batch` returns them.
    image_size : int
        Side of the square output.

    Returns
    -------
    Tensor of shape (b, 3, image_size, image_size), dtype uint8

    Examples
    --------
    >>> import torch
    >>> images = [torch.full((3, 4, 6), 200, dtype=torch.uint8)]
    >>> resized = resize_images(images, 2)
    >>> tuple(resized.shape), int(resized.min()), int(resized.max())
    ((1, 3, 2, 2), 200, 200)
    """
    if isinstance(images, torch.Tensor):
        groups = [images]
    else:
        groups, start = [], 0
        for end in range(1, len(images) + 1):
            if end == len(images) or images[end].shape != images[start].shape:
                # Stacked as (b, H, W, 3): one plain copy per channels-last image.
                pixels = [image.permute(1, 2, 0) for image in images[start:end]]
                groups.append(torch.stack(pixels).permute(0, 3, 1, 2))
                start = end
    size = (image_size, image_size)
    resized = []
    for group in groups:
        if tuple(group.shape[-2:]) != size:
            # The integer kernel runs on channels-last batches (a copy only when needed).
            group = functional.interpolate(
                group.contiguous(memory_format=torch.channels_last),
                size=size,
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        resized.append(group)
    return torch.cat(resized).contiguous() if len(resized) > 1 else resized[0].contiguous()


def _stacked_array_source(X: np.ndarray) -> ImageSource:
    if X.ndim not in (3, 4):
        hint = {
            1: " A 1-D array holds no images; pass file paths as a list or a 1-D str array.",
            2: " For a single image use X[None].",
        }.get(X.ndim, "")
        raise ValueError(
            f"X has shape {X.shape}; expected an array of shape (n, H, W) or (n, H, W, C).{hint}"
        )
    if len(X) == 0:
        raise ValueError(f"X is empty (shape {X.shape}); expected at least one image")
    if X.ndim == 4 and X.shape[3] not in (1, 3, 4):
        hint = (
            " For channels-first data use X.transpose(0, 2, 3, 1)."
            if X.shape[1] in (1, 3, 4)
            else ""
        )
        raise ValueError(
            f"X has {X.shape[3]} channels (shape {X.shape}); expected 1, 3 or 4 channels in the "
            f"last axis, (n, H, W, C).{hint}"
        )
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"X has shape {X.shape}; expected images of non-zero height and width")
    if _dtype_kind(X.dtype, "X") == "float":
        _check_stacked_float_values(X)
    return ImageSource(X)


def _list_source(items: list[Any]) -> ImageSource:
    if not items:
        raise ValueError("X is empty; expected at least one image")
    for index, item in enumerate(items):
        where = f"X[{index}]"
        if isinstance(item, np.ndarray):
            _check_array_image(item, where)
        elif isinstance(item, Image.Image):
            if item.width == 0 or item.height == 0:
                raise ValueError(
                    f"{where} is a PIL image of size {item.size}; expected non-zero width and "
                    "height"
                )
        elif isinstance(item, str | os.PathLike):
            if not Path(item).is_file():
                raise FileNotFoundError(f"{where}: no file at {os.fspath(item)!r}")
        else:
            raise TypeError(
                f"{where} has type {type(item).__name__}; expected a numpy array, a PIL image or "
                "a file path (str or os.PathLike)"
            )
    return ImageSource(items)


def _dtype_kind(dtype: np.dtype, where: str) -> str:
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        return "uint8" if dtype.itemsize == 1 else "uint16"
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return "float"
    raise TypeError(f"{where} has dtype {dtype}; expected {_ACCEPTED_DTYPES}")


def _check_array_image(array: np.ndarray, where: str) -> str:
    """Validate one ``(H, W)`` or ``(H, W, C)`` array and return its dtype kind."""
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{where} has shape {array.shape}; expected an image of shape (H, W) or (H, W, C)"
        )
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"{where} has {array.shape[2]} channels (shape {array.shape}); expected 1, 3 or 4 "
            "channels in the last axis"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{where} has shape {array.shape}; expected non-zero height and width")
    kind = _dtype_kind(array.dtype, where)
    if kind == "float":
        check_float_range(float(np.min(array)), float(np.max(array)), where)
    return kind


def _check_stacked_float_values(X: np.ndarray) -> None:
    n_images = len(X)
    chunk = max(1, _CHECK_CHUNK_BYTES // max(1, X[0].nbytes))
    lows = np.empty(n_images)
    highs = np.empty(n_images)
    for start in range(0, n_images, chunk):
        block = X[start : start + chunk].reshape(min(chunk, n_images - start), -1)
        lows[start : start + chunk] = block.min(axis=1)
        highs[start : start + chunk] = block.max(axis=1)
    non_finite = ~(np.isfinite(lows) & np.isfinite(highs))
    if non_finite.any():
        index = int(np.argmax(non_finite))
        check_float_range(lows[index], highs[index], f"X[{index}]")
    out_of_range = (lows < 0) | (highs > 1)
    if out_of_range.any():
        index = int(np.argmax(out_of_range))
        check_float_range(lows[index], highs[index], f"X[{index}]")


def _uint16_bit_depth(maximum: int) -> int:
    return next(bits for bits in _UINT16_BIT_DEPTHS if maximum <= 2**bits - 1)


def _decode(item: Any, index: int) -> torch.Tensor:
    """Image ``index`` as uint8 ``(3, H, W)``: a view of its ``(H, W, 3)`` pixels."""
    if isinstance(item, np.ndarray):
        return _array_to_tensor(item)
    if isinstance(item, Image.Image):
        where = f"X[{index}]"
        try:
            item.load()
        except MemoryError:
            raise
        # PIL's decoders also fail with ValueError, struct.error, IndexError and others.
        except Exception as error:
            raise ValueError(f"{where} is a PIL image that could not be loaded: {error}") from error
        return _array_to_tensor(pil_to_array(item, where))
    return _array_to_tensor(read_image_file(item, index))


def _array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Convert a validated ``(H, W)`` or ``(H, W, C)`` array to uint8 ``(3, H, W)``, a
    channels-last view of ``(H, W, 3)`` pixels (which may be ``array`` itself).

    uint16 pixels are scaled by the bit depth of this image's own maximum (alpha excluded).
    """
    if array.ndim == 2:
        array = array[:, :, None]
    array = array[:, :, :3]
    if array.dtype.kind == "f":
        array = array.astype(np.float64 if array.itemsize == 8 else np.float32)
        array = np.rint(array * 255).astype(np.uint8)
    elif array.dtype.itemsize == 2:
        maximum = 2 ** _uint16_bit_depth(int(array.max())) - 1
        # Integer arithmetic rounds exactly; the odd divisor never leaves a tie.
        array = ((array.astype(np.uint32) * 255 + maximum // 2) // maximum).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.broadcast_to(array, (*array.shape[:2], 3))
    if not (array.flags.c_contiguous and array.flags.writeable):
        # A copy: of a grey image's repeated channel, an alpha-less view, or read-only data
        # (torch warns about read-only memory).
        array = np.array(array, order="C")
    return torch.from_numpy(array).permute(2, 0, 1)


def _stacked_batch(X: np.ndarray, indices: list[int]) -> torch.Tensor:
    """Images ``indices`` of a validated stacked array as uint8 ``(b, 3, H, W)``, vectorised.

    Pixel for pixel what `_array_to_tensor` gives for each image: the same float rounding,
    and uint16 images scaled one by one by their own bit depth.
    """
    block = X[np.asarray(indices, dtype=np.intp)]
    if block.dtype.kind == "u" and block.dtype.itemsize == 2:
        return torch.stack([_array_to_tensor(image).contiguous() for image in block])
    if block.ndim == 3:
        block = block[..., None]
    block = block[..., :3]
    if block.dtype.kind == "f":
        block = block.astype(np.float64 if block.itemsize == 8 else np.float32)
        block = np.rint(block * 255).astype(np.uint8)
    # (b, H, W, C) memory read as (b, C, H, W): a channels-last view, no copy.
    tensor = torch.from_numpy(np.ascontiguousarray(block)).permute(0, 3, 1, 2)
    return tensor.expand(-1, 3, -1, -1) if tensor.shape[1] == 1 else tensor
