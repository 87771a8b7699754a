"""Per-epoch hooks into the DINO and fine-tuning loops, for watching training without patching it.

A `Callback` subclass overrides the hooks it needs; ``DinoFeaturizer(callbacks=[...])`` and
``SupervisedClassifier(callbacks=[...])`` hand the list to their training loop, which calls
every callback in order on every rank (guard with ``sparsam.training.distributed.is_main_process``
to act on one). The loop passes itself: ``trainer.backbone`` is the backbone ``fit`` would keep
if training stopped now (DINO's teacher, the fine-tuned network), ``trainer.history`` the rows
of the epochs finished, ``trainer.device`` where it trains.

A hook must not change the training itself unless that is its purpose (a benchmark replaying an
old behaviour): a callback that runs the backbone should run a copy, or leave the modules in
the train/eval modes it found them in. The time a hook takes counts into the training time.

`sparsam.training.logs` holds two ready-made callbacks: ``CSVLogger`` (the history as a CSV
table) and ``TensorBoardLogger`` (TensorBoard scalars).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Callback"]


class Callback:
    """Base class of the training loops' per-epoch hooks; every hook does nothing by default.

    Examples
    --------
    >>> class Losses(Callback):
    ...     def __init__(self):
    ...         self.losses = []
    ...
    ...     def on_epoch_end(self, trainer, epoch, row):
    ...         self.losses.append(row["loss"])
    >>> losses = Losses()
    >>> losses.on_epoch_end(None, 0, {"loss": 2.5})
    >>> losses.losses
    [2.5]
    """

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Called before the first step of epoch ``epoch`` (0-based), resumed epochs included.

        Parameters
        ----------
        trainer : DinoTrainer or FineTuneTrainer
            The loop that is training.
        epoch : int
            The epoch about to run, counted from 0.
        """

    def on_epoch_end(self, trainer: Any, epoch: int, row: dict[str, float]) -> None:
        """Called once epoch ``epoch`` (0-based) has finished and its checkpoint is written.

        Parameters
        ----------
        trainer : DinoTrainer or FineTuneTrainer
            The loop that is training.
        epoch : int
            The epoch that finished, counted from 0.
        row : dict of str to float
            That epoch's entry of the history (``trainer.history[-1]``).
        """

    def on_train_end(self, trainer: Any) -> None:
        """Called once when ``fit``'s training ends: finished, stopped early, interrupted or failed.

        The place to close what the other hooks opened (files, writers).

        Parameters
        ----------
        trainer : DinoTrainer or FineTuneTrainer
            The loop that trained.
        """
