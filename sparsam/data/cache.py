"""An on-disk store of embeddings, one file per image, keyed by weights and image identity.

A few-shot curve or a grid search transforms the same images many times with the same frozen
backbone. `image_keys` names each image by what it holds (array and PIL bytes) or, for files,
by where it is and when it last changed, without decoding it; `weights_digest` names the
fitted weights; `EmbeddingStore` keeps one ``.npy`` file per image under
``<location>/sparsam-embeddings/<namespace>/``, so that each image is embedded once across
splits, repeats, parameter settings and processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import torch
from PIL import Image

from sparsam._files import atomic_write, check_writable_directory
from sparsam.data.inputs import ImageSource, as_image_source

__all__ = [
    "CACHE_DIRECTORY",
    "EmbeddingStore",
    "cache_location",
    "cache_namespace",
    "image_keys",
    "subset_source",
    "weights_digest",
]

CACHE_DIRECTORY = "sparsam-embeddings"
# Part of every namespace: bump it when the decoding or the file format changes, so that old
# entries are no longer read. 2: uint16 images are scaled by their own bit depth. 3: images
# are resized on uint8 pixels (`sparsam.data.inputs.resize_images`), within one grey level of 2.
# 4: DICOM files go through their VOI LUT (window), photos are turned by their EXIF orientation
# (`sparsam.data.files`); a file's key says nothing of its contents, so every entry goes.
_FORMAT_VERSION = "4"


def cache_location(memory: Any) -> Path | None:
    """The directory that ``memory`` names, or None when embeddings are not cached.

    Called at the start of ``fit`` and ``transform``, so that a cache that cannot be written
    fails before hours of training or embedding rather than at the first store.

    Parameters
    ----------
    memory : None, str, os.PathLike or joblib.Memory
        None or a ``joblib.Memory`` whose ``location`` is None turn caching off; otherwise
        the directory below which the store lives, created here if needed.

    Returns
    -------
    Path or None

    Raises
    ------
    ValueError
        If ``memory`` is of another type, an empty string, names an existing file, holds a
        file named ``sparsam-embeddings`` where the store's directory belongs, or names a
        directory that cannot be created or written to; the message names ``memory`` and the
        path.
    """
    if memory is None:
        return None
    if isinstance(memory, joblib.Memory):
        location = memory.location
        if location is None:
            return None
    elif isinstance(memory, str | os.PathLike):
        location = memory
    else:
        raise ValueError(
            f"memory must be None, a directory path (str or os.PathLike) or a joblib.Memory; "
            f"got {type(memory).__name__} {memory!r}"
        )
    if os.fspath(location) == "":
        raise ValueError("memory is an empty string; expected a directory path or None")
    path = Path(location).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"memory={os.fspath(location)!r} is a file; expected a directory")
    store = path / CACHE_DIRECTORY
    if store.exists() and not store.is_dir():
        raise ValueError(_blocked_message(store, store))
    return check_writable_directory(path, "memory")


def weights_digest(module: torch.nn.Module, data_config: Mapping[str, Any]) -> str:
    """SHA-256 of a module's architecture, state dict and the input normalisation.

    Parameters
    ----------
    module : torch.nn.Module
        The backbone; every tensor of its state dict is hashed by name, dtype, shape and
        bytes, in name order, together with its class, ``repr`` and, when present, the
        ``sparsam_architecture`` and ``sparsam_model_args`` that rebuild it (``repr`` does
        not show settings such as the number of attention heads).
    data_config : mapping
        ``mean``, ``std``, ``image_size`` and ``interpolation`` applied before the backbone.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    hasher = hashlib.sha256()
    description = {
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "architecture": getattr(module, "sparsam_architecture", None),
        "model_args": getattr(module, "sparsam_model_args", None),
        "repr": repr(module),
        "data_config": dict(data_config),
    }
    hasher.update(json.dumps(description, sort_keys=True, default=repr).encode())
    for name, tensor in sorted(module.state_dict().items()):
        hasher.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        # A byte view hashes any dtype, bfloat16 included, which has no numpy equivalent.
        hasher.update(flat.view(torch.uint8).numpy())
    return hasher.hexdigest()


def cache_namespace(
    weights: str,
    device_type: str,
    autocast_dtype: torch.dtype | None,
    readout: str = "cls/1",
) -> str:
    """Digest of everything besides the image that decides an embedding's exact value.

    Parameters
    ----------
    weights : str
        `weights_digest` of the backbone and its input normalisation.
    device_type : str
        ``"cpu"``, ``"cuda"``, …: kernels differ in their last bits between devices.
    autocast_dtype : torch.dtype or None
        The autocast precision of the forward pass; None for fp32.
    readout : str, default="cls/1"
        Which tokens of which blocks (``"<pooling>/<n_last_blocks>"``, see
        `sparsam.readout.ReadOut`).

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    text = f"{_FORMAT_VERSION}\0{weights}\0{device_type}\0{autocast_dtype}\0{readout}"
    return hashlib.sha256(text.encode()).hexdigest()


def image_keys(X: Any) -> list[str]:
    """One key per image that changes whenever the decoded image can change.

    Nothing is decoded: arrays are keyed by dtype, shape and bytes; PIL images by mode, size,
    palette and bytes; files by resolved path, size, inode and modification
    time in nanoseconds, read with one ``stat`` call. A file rewritten in place with the same
    size within the file system's timestamp resolution keeps its key.

    Parameters
    ----------
    X : ImageSource or any input accepted by `as_image_source`
        The images; validated by `as_image_source`.

    Returns
    -------
    list of str
        ``len(X)`` keys of 64 hexadecimal digits, equal for equal images.
    """
    images = as_image_source(X).items
    if isinstance(images, np.ndarray):
        return [_array_key(image) for image in images]
    return [_item_key(item) for item in images]


def subset_source(source: ImageSource, indices: Sequence[int]) -> ImageSource:
    """The images ``indices`` of ``source``, decoded exactly as ``source`` decodes them.

    Parameters
    ----------
    source : ImageSource
        A validated source.
    indices : sequence of int
        Positions to keep, in the order wanted.

    Returns
    -------
    ImageSource
        Every image is decoded on its own, so the subset decodes each as ``source`` does.
    """
    images = source.items
    if isinstance(images, np.ndarray):
        subset: np.ndarray | list[Any] = images[np.asarray(indices, dtype=np.intp)]
    else:
        subset = [images[index] for index in indices]
    return ImageSource(subset)


class EmbeddingStore:
    """Embeddings on disk, one ``.npy`` file per image key below one namespace.

    Parameters
    ----------
    location : path-like
        The cache directory; entries go to
        ``location/sparsam-embeddings/<namespace[:16]>/<key[:2]>/<key>.npy``.
    namespace : str
        `cache_namespace` of the weights and numerics that produced the embeddings.
    """

    def __init__(self, location: str | os.PathLike, namespace: str) -> None:
        self.directory = Path(location) / CACHE_DIRECTORY / namespace[:16]

    def path(self, key: str) -> Path:
        """File that holds the embedding of image ``key``."""
        return self.directory / key[:2] / f"{key}.npy"

    def load(self, key: str, width: int) -> np.ndarray | None:
        """The stored float32 embedding of ``key``, or None if absent, unreadable or not
        ``(width,)``; an unreadable entry is then recomputed and replaced."""
        try:
            embedding = np.load(self.path(key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if embedding.shape != (width,) or embedding.dtype != np.float32:
            return None
        return embedding

    def save(self, key: str, embedding: np.ndarray) -> None:
        """Write ``embedding`` for ``key`` atomically.

        The bytes go to a temporary file in the same directory that is then renamed over the
        entry, so that concurrent processes and interrupted runs never leave a partial file
        under the entry's name. A file where one of the entry's directories belongs is a
        ValueError that names it.
        """
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            files = [parent for parent in reversed(path.parents) if parent.is_file()]
            blocking = files[0] if files else path.parent
            raise ValueError(_blocked_message(blocking, path.parent)) from None
        with atomic_write(path) as file:
            np.save(file, np.asarray(embedding, dtype=np.float32), allow_pickle=False)


def _blocked_message(blocking: Path, directory: Path) -> str:
    needed = "" if blocking == directory else f", which needs the directory {directory}"
    return (
        f"memory: {blocking} is a file where the embedding cache keeps a directory{needed}; "
        "move or delete that file, or pass another memory= directory."
    )


def _array_key(array: np.ndarray) -> str:
    hasher = hashlib.sha256(f"array\0{array.dtype.str}\0{array.shape}\0".encode())
    hasher.update(np.ascontiguousarray(array))
    return hasher.hexdigest()


def _item_key(item: Any) -> str:
    if isinstance(item, np.ndarray):
        return _array_key(item)
    if isinstance(item, Image.Image):
        return _pil_key(item)
    return _file_key(item)


def _pil_key(image: Image.Image) -> str:
    hasher = hashlib.sha256(f"pil\0{image.mode}\0{image.size}\0".encode())
    if image.palette is not None:
        # Palette images store indices; the colours, and which index is transparent, live
        # in the palette and in info.
        palette = (image.palette.mode, image.getpalette(None), image.info.get("transparency"))
        hasher.update(repr(palette).encode())
    hasher.update(image.tobytes())
    return hasher.hexdigest()


def _file_key(path: str | os.PathLike) -> str:
    resolved = Path(path).resolve()
    status = resolved.stat()
    text = f"file\0{resolved}\0{status.st_size}\0{status.st_ino}\0{status.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()
