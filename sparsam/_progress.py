"""What training and inference show on stderr: bars on a terminal, one line per epoch elsewhere.

A progress bar redraws itself with carriage returns; written into a file (a batch system's log,
``nohup``, a pipe) every redraw becomes a line of its own. `stderr_is_terminal` tells the two
apart (a Jupyter kernel counts as a terminal: its bars are widgets). `TrainingProgress` is what
the training loops report to after every step and every epoch: one bar over all the steps of
the run on a terminal (steps per second and the time left, the epoch and the last epoch's
values after it), and otherwise one printed line per epoch with the same values.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm.auto import tqdm
from tqdm.autonotebook import tqdm as _notebook_or_plain_tqdm
from tqdm.std import tqdm as _plain_tqdm

__all__ = ["TrainingProgress", "stderr_is_terminal"]


def stderr_is_terminal() -> bool:
    """Whether progress bars on stderr are seen as bars: a terminal or a Jupyter kernel."""
    if _notebook_or_plain_tqdm is not _plain_tqdm:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class TrainingProgress:
    """The progress of one ``fit``: a bar over its steps on a terminal, else a line per epoch.

    The training loop calls `start` once it knows the run's steps (and how many a resumed
    run has done), `step` after every optimiser step and `epoch_end` after every epoch;
    `close` ends the bar. Nothing here reads a device value: a step costs a counter update.

    Parameters
    ----------
    description : str
        What trains ("DINO", "fine-tuning"), the bar's label and the lines' start.
    epochs : int
        The epochs of the run.
    verbose : int
        0 shows nothing; 1 the bar or the lines; 2 and more the bar on a terminal, and else
        no lines of its own: the training loop's log lines, printed then, are one per epoch.
    postfix : callable
        An epoch's history row to the values shown after it (name to formatted value).
    """

    def __init__(
        self,
        description: str,
        epochs: int,
        verbose: int,
        postfix: Callable[[dict[str, float]], dict[str, str]],
    ) -> None:
        self.description = description
        self.epochs = epochs
        self.postfix = postfix
        self.enabled = bool(verbose)
        self.lines = verbose == 1
        self.bar: tqdm | None = None
        self.steps_done = 0
        self.total_steps = 0
        self._started = (0.0, 0)

    def start(self, steps_done: int, total_steps: int) -> None:
        """The run has ``total_steps`` steps, of which a resumed run did ``steps_done``."""
        self.steps_done, self.total_steps = steps_done, total_steps
        self._started = (time.perf_counter(), steps_done)
        if self.enabled and stderr_is_terminal():
            self.bar = tqdm(
                total=total_steps, initial=steps_done, desc=self.description, unit="step"
            )

    def step(self) -> None:
        """One more optimiser step done."""
        self.steps_done += 1
        if self.bar is not None:
            self.bar.update(1)

    def epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        """Epoch ``epoch`` (from 0) has finished with the history row ``row``."""
        if not self.enabled:
            return
        values = {"epoch": f"{epoch + 1}/{self.epochs}", **self.postfix(row)}
        if self.bar is not None:
            self.bar.set_postfix(values)
            return
        if not self.lines:
            return
        shown = ", ".join(f"{name} {value}" for name, value in list(values.items())[1:])
        print(
            f"{self.description} epoch {values['epoch']}: {shown}; {self._pace()}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _pace(self) -> str:
        """Steps per second since the start and the time the steps left will take."""
        started, steps_at_start = self._started
        elapsed = time.perf_counter() - started
        steps = self.steps_done - steps_at_start
        if steps <= 0 or elapsed <= 0:
            return f"step {self.steps_done}/{self.total_steps}"
        rate = steps / elapsed
        left = max(self.total_steps - self.steps_done, 0) / rate
        return (
            f"step {self.steps_done}/{self.total_steps}, {rate:.3g} steps/s, "
            f"{tqdm.format_interval(elapsed)} elapsed, {tqdm.format_interval(left)} left"
        )
