"""Training curves in files: ``history.csv`` and TensorBoard event files, one row per epoch.

The training loops keep their per-epoch rows in ``trainer.history`` (the estimators'
``history_``). `write_history_csv` writes them as a CSV table, whole, through a temporary file
renamed onto the old one, so that a reader (or a crash) never sees half a file and a resumed
run, whose history comes back from its checkpoint, lists every epoch once. The loop writes
``history.csv`` beside its checkpoints; `CSVLogger` and `TensorBoardLogger` are callbacks that
write anywhere else (``sparsam pretrain`` writes ``--out/history.csv`` and, with
``--tensorboard``, event files).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from .._files import atomic_write
from .callbacks import Callback
from .distributed import is_main_process

__all__ = [
    "HISTORY_FILE",
    "CSVLogger",
    "TensorBoardLogger",
    "check_history_file",
    "write_history_csv",
]

#: The name of the history table the loops write beside their checkpoints.
HISTORY_FILE = "history.csv"
# The first column of every history table sparsam writes: how a file is recognised as ours.
_FIRST_COLUMN = "epoch"


def write_history_csv(path: str | os.PathLike, history: dict[str, list[float]]) -> None:
    """Write ``history`` (name to per-epoch values) to ``path`` as a CSV table, atomically.

    One row per epoch: ``epoch`` (counted from 1, as in the log lines) then the history's
    names in their order. A value an epoch lacks is left empty.

    Parameters
    ----------
    path : path-like
        The CSV file; its directory must exist. Replaced whole.
    history : dict of str to list of float
        ``trainer.history`` or a fitted estimator's ``history_``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "history.csv"
    >>> write_history_csv(path, {"loss": [2.5, 2.0], "lr": [0.1, 0.05]})
    >>> print(path.read_text().strip())
    epoch,loss,lr
    1,2.5,0.1
    2,2.0,0.05
    """
    names = list(history)
    epochs = max((len(values) for values in history.values()), default=0)
    with atomic_write(path, "w") as file:
        writer = csv.writer(file)
        writer.writerow([_FIRST_COLUMN, *names])
        for epoch in range(epochs):
            values = [history[name][epoch] if epoch < len(history[name]) else "" for name in names]
            writer.writerow([epoch + 1, *values])


def check_history_file(path: str | os.PathLike, what: str) -> Path:
    """Refuse a ``path`` that holds a file sparsam did not write; ``path`` as a `Path`.

    A history table sparsam wrote starts with the column ``epoch`` and may be replaced (a
    resumed run continues it); any other file there is someone else's and is never
    overwritten. ``what`` names the option or parameter that chose the place, for the error.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what}: {path} is a directory; expected a CSV file (or none yet).")
    if path.exists():
        try:
            with open(path, encoding="utf-8", newline="") as file:
                header = next(csv.reader(file), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []
        if header[:1] != [_FIRST_COLUMN]:
            raise ValueError(
                f"{what}: {path} exists and is not a history table sparsam wrote (its first "
                f"column is not {_FIRST_COLUMN!r}); move it away or choose another directory."
            )
    return path


class CSVLogger(Callback):
    """Write the training history to a CSV file after every epoch (`write_history_csv`).

    The whole file is rewritten from ``trainer.history`` each time, so a run resumed from a
    checkpoint lists every epoch once. Only the main process of a process group writes.

    Parameters
    ----------
    path : path-like
        The CSV file; its directory is created at the first write. A file there that sparsam
        did not write is refused here.

    Examples
    --------
    >>> from sparsam import DinoFeaturizer
    >>> featurizer = DinoFeaturizer(callbacks=[CSVLogger("run/history.csv")])  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_history_file(path, "CSVLogger")

    def on_epoch_end(self, trainer: Any, epoch: int, row: dict[str, float]) -> None:
        if is_main_process():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_history_csv(self.path, trainer.history)


class TensorBoardLogger(Callback):
    """Write every epoch's history row as TensorBoard scalars (``tensorboard --logdir``).

    One scalar per name of the row (``loss``, ``teacher_entropy``, ``rankme``, ``lr`` …) at
    the step ``epoch + 1``; the file is flushed after every epoch and closed when training
    ends. Only the main process of a process group writes. Needs the ``tensorboard`` package
    (``pip install "sparsam[tensorboard]"``).

    Parameters
    ----------
    log_dir : path-like
        The directory of the event files (created if missing); point ``tensorboard --logdir``
        at it or at its parent.

    Raises
    ------
    ImportError
        When ``tensorboard`` is not installed.

    Examples
    --------
    >>> from sparsam import DinoFeaturizer
    >>> featurizer = DinoFeaturizer(callbacks=[TensorBoardLogger("runs/dino")])  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ImportError(
                "TensorBoard logging needs the tensorboard package, which is not installed: "
                "pip install 'sparsam[tensorboard]' (or pip install tensorboard)."
            ) from None
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def on_epoch_end(self, trainer: Any, epoch: int, row: dict[str, float]) -> None:
        if not is_main_process():
            return
        if self._writer is None:
            # Imported here: torch.utils.tensorboard imports tensorboard, an optional package.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=os.fspath(self.log_dir))
        for name, value in row.items():
            self._writer.add_scalar(name, value, epoch + 1)
        self._writer.flush()

    def on_train_end(self, trainer: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the event file; the next epoch logged opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __getstate__(self) -> dict[str, Any]:
        # An open writer (a file and a thread) cannot be pickled or deep-copied, and
        # sklearn's clone deep-copies the estimators' callbacks.
        return {**self.__dict__, "_writer": None}
