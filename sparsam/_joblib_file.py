"""Reading a fitted estimator back from a joblib file, with errors that name the file.

``joblib.load`` fails in the unpickler's terms: a text file is a ``KeyError`` or "memo value
not found", a file from a newer sparsam names a module or class this version lacks. The
command line's ``--featurizer`` and ``--backbone FILE`` read through `load_fitted` instead,
which says what the file is and what was expected. Like every joblib file, the file is a
pickle: load only files you trust.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import joblib

from .version import __version__

__all__ = ["load_fitted"]

# Files of a saved backbone (timm's Hub format), which users pass where a featurizer belongs.
_BACKBONE_FILES = {"config.json", "model.safetensors", "README.md"}


def load_fitted(path: str | os.PathLike[str], expected: type, fitted_attribute: str) -> Any:
    """The fitted ``expected`` estimator that ``joblib.dump`` wrote to ``path``.

    Parameters
    ----------
    path : str or path-like
        The file, e.g. the ``featurizer.joblib`` of ``sparsam pretrain``.
    expected : type
        The estimator class the file must hold (an instance of a subclass passes).
    fitted_attribute : str
        An attribute that only a fitted estimator has, e.g. ``"backbone_"``.

    Returns
    -------
    estimator : expected

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is a directory or a file of a saved backbone, is not a joblib file, was
        written by a sparsam with classes this one lacks, holds another object, or holds an
        estimator that was never fitted; the message names the file and what was expected.
    """
    path = Path(path).expanduser()
    wanted = f"expected a fitted {expected.__name__} saved with joblib.dump"
    if path.is_dir():
        raise ValueError(f"{path} is a directory; {wanted} (a file).")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {wanted}.")
    if path.name in _BACKBONE_FILES:
        raise ValueError(
            f"{path} is a file of a saved backbone, not a fitted {expected.__name__}; pass its "
            f"directory, {path.parent}, where a backbone is expected (sparsam embed --backbone, "
            "sparsam evaluate --pretrained)."
        )
    try:
        estimator = joblib.load(path)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{path} cannot be loaded: {_missing_name(error)}.") from None
    except Exception as error:  # a file that is no pickle can fail the unpickler in any way
        raise ValueError(
            f"{path} is not a file written by joblib.dump, or it is truncated "
            f"({type(error).__name__}); {wanted}."
        ) from None
    if not isinstance(estimator, expected):
        raise ValueError(f"{path} holds a {type(estimator).__name__}; {wanted}.")
    if not hasattr(estimator, fitted_attribute):
        raise ValueError(
            f"{path} holds a {expected.__name__} that was never fitted; call fit before "
            "joblib.dump."
        )
    return estimator


def _missing_name(error: ImportError | AttributeError) -> str:
    """What the file names that this Python lacks, and the likely reason."""
    name = error.name if isinstance(error, ImportError) else None
    # The unpicklers' AttributeErrors: "Can't get attribute 'Name' on <module 'package.module'"
    # (C) and "module 'package.module' has no attribute 'Name'" (Python, joblib's).
    text = str(error)
    found = re.search(r"attribute '([\w.]+)' on <module '([\w.]+)'", text)
    if found:
        name = f"{found.group(2)}.{found.group(1)}"
    found = re.search(r"module '([\w.]+)' has no attribute '([\w.]+)'", text)
    if found:
        name = f"{found.group(1)}.{found.group(2)}"
    if name is None:
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        return f"{type(error).__name__}: {first_line}"
    if name.split(".")[0] == "sparsam":
        return (
            f"it names {name}, which sparsam {__version__} does not have, so another version of "
            "sparsam wrote it; install that version, or fit and save it again with this one"
        )
    return f"it needs {name}, which this Python cannot import; install the package it is from"
