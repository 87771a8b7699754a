"""Reading a ``.pt`` file with ``torch.load(weights_only=True)``, with errors in the user's terms.

torch's own messages are written for its developers: a text file ends in a ``KeyError`` from
its unpickler, and random bytes or a pickled class end in advice to retry with
``weights_only=False``, which would let the file run arbitrary code. `load_weights_only` says
instead what the file is (empty, not written by ``torch.save``, truncated, holding objects that
are not tensors) and never repeats that advice.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnreadableTorchFileError", "load_weights_only"]

# torch.save writes a zip archive (since torch 1.6) or, in the legacy format, a pickle whose
# first byte is the PROTO opcode.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


class UnreadableTorchFileError(ValueError):
    """A file that ``torch.load(weights_only=True)`` cannot read.

    Attributes
    ----------
    path : Path
        The file.
    reason : str
        What is wrong with it, in one clause without torch's own text (e.g. "it is not a file
        written by torch.save (neither a zip archive nor a pickle)").
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} cannot be read with torch.load(weights_only=True): {reason}.")
        self.path = path
        self.reason = reason


def load_weights_only(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure to parse it names the file.

    Parameters
    ----------
    path : str or path-like
        The file.
    map_location : str, torch.device or None, default="cpu"
        Where the tensors go, as for ``torch.load``.

    Returns
    -------
    object
        What the file holds: tensors in plain containers (dict, list, tuple) and plain values.

    Raises
    ------
    UnreadableTorchFileError
        A ValueError, when the file is empty, was not written by ``torch.save``, is truncated
        or damaged, or holds objects other than tensors and plain values.
    OSError
        When the file cannot be opened (absent, a directory, no permission).
    """
    path = Path(path)
    with path.open("rb") as file:
        head = file.read(len(_ZIP_MAGIC))
    if not head:
        raise UnreadableTorchFileError(path, "it is empty (an interrupted copy?)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as error:  # a broken or hostile file can fail in any way
        raise UnreadableTorchFileError(path, _reason(head, error)) from None


def _reason(head: bytes, error: Exception) -> str:
    text = str(error)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"it holds a pickled {refused.group(1)}, and sparsam reads only tensors and plain "
            "values from .pt files because unpickling other objects can run arbitrary code"
        )
    if head.startswith(_ZIP_MAGIC):
        return "it is a truncated or damaged torch.save archive"
    if head.startswith(_PICKLE_PROTO) and isinstance(error, RuntimeError | EOFError):
        return "it is a truncated or damaged torch.save file"
    return "it is not a file written by torch.save (neither a zip archive nor a pickle)"
