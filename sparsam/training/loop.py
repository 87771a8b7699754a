"""The training loop DINO and fine-tuning share: device, epochs, checkpoints, Ctrl-C, NaN checks.

`TrainingLoop` owns what does not depend on the method: the training device, the run's random
generators (forked, seeded from the caller's generator, restored afterwards), Ctrl-C turned into
"finish the step, save, stop", the epochs with their save → progress → callbacks → interrupt
sequence, checkpoints written and resumed (with ``history.csv`` beside them), the progress after
every step, an estimate of a CPU run's length, the finiteness of the loss and inference in
chunks.
`sparsam.dino.trainer.DinoTrainer` and `sparsam.supervised.trainer.FineTuneTrainer` supply the
step, what happens around an epoch's steps, and what their checkpoints hold besides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._files import check_writable_directory
from .._progress import TrainingProgress
from ..data.training import TrainingImages
from .augment import MultiCropAugmentation, normalize
from .callbacks import Callback
from .checkpoints import (
    interruptible,
    newest_readable_checkpoint,
    read_checkpoint,
    refuse_another_run,
    seed_global_generators,
    stochastic_depth_rates,
    write_checkpoint,
)
from .compilation import RegionalCompilation
from .distributed import broadcast_object, is_distributed, is_main_process, rank
from .logs import HISTORY_FILE, check_history_file, write_history_csv
from .precision import autocast
from .statistics import StepStatistics

__all__ = [
    "CUDA_CHECK_EVERY",
    "LONG_CPU_RUN_SECONDS",
    "TIMED_STEPS",
    "Run",
    "TrainingLoop",
]

logger = logging.getLogger("sparsam")

# Steps between host reads of the loss on a GPU (finiteness): each read waits for the GPU.
CUDA_CHECK_EVERY = 32
# Steps timed after the first (which compiles, allocates and fills caches) before the length
# of a CPU run is estimated and logged.
TIMED_STEPS = 2
# A CPU run estimated to take longer than this gets a warning that names a faster way.
LONG_CPU_RUN_SECONDS = 3600.0


@dataclass
class Run:
    """What one call of ``fit`` trains on: images, random generator, steps, run identity."""

    images: TrainingImages
    generator: torch.Generator
    steps_per_epoch: int
    settings: dict


class TrainingLoop:
    """Base of sparsam's training loops: everything but the method's own step and state.

    A subclass sets the class attributes below, builds its models and ``self.optimizer``, and
    implements `_compiled_modules`, `_start`, `_run_epoch`, `_save_after_epoch`,
    `_interruption_point`, `_epoch_summary` and `_non_finite_message`; its ``fit`` builds a
    `Run` and calls `_train`.

    Parameters
    ----------
    augmentation : MultiCropAugmentation
        The crops training sees; its ``mean`` and ``std`` normalise images for inference.
    config : dataclass
        The method's optimisation settings; ``config.epochs`` is the number of epochs.
    device : torch.device
        Where training runs; a CUDA device without an index is pinned to the current one.
    autocast_dtype : torch.dtype or None
        bf16 autocast when given, fp32 otherwise.
    checkpoint_dir : path-like or None
        Where checkpoints are written and resumed from, with ``history.csv`` (the history
        after every epoch, `sparsam.training.logs.write_history_csv`); checked to be writable
        here, and a ``history.csv`` sparsam did not write is refused.
    checkpoint_keep : int
        How many of the newest checkpoints to keep.
    compile : bool
        Compile `_compiled_modules` with ``torch.compile`` during ``fit``.
    check_every : int or None
        Steps between the host's reads of the loss; None reads every step on the CPU and every
        `CUDA_CHECK_EVERY` steps on a GPU, where every read makes the CPU wait for the GPU.
    callbacks : sequence of Callback
        Called at every epoch's start and end (`sparsam.training.callbacks`).
    """

    #: Who trains, in messages ("DINO training interrupted ...").
    name = "Training"
    #: Checkpoint files are named ``<checkpoint_prefix>_checkpoint_<step>.pt``.
    checkpoint_prefix = "training"
    #: What a readable checkpoint of this loop must hold.
    checkpoint_keys: tuple[str, ...] = ()
    #: Logged at the first Ctrl-C.
    interrupt_announcement = "Interrupted: training stops at the next safe point and saves."
    #: What ``fit`` must be given again to resume, in the interruption message.
    resume_inputs = "images"
    #: Appended to the interruption message (the command line's way to resume).
    resume_hint = ""
    #: True when the ranks of a process group train one model on their shares of every batch.
    shards_across_processes = False
    #: Appended to the warning that a CPU run will take long: what would be faster.
    long_cpu_run_hint = "Train on a GPU, or choose a smaller backbone or image_size."

    def __init__(
        self,
        augmentation: MultiCropAugmentation,
        config: object,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        checkpoint_dir: str | os.PathLike | None,
        checkpoint_keep: int,
        compile: bool,
        check_every: int | None,
        callbacks: Sequence[Callback],
    ) -> None:
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be None or >= 1, got {check_every!r}.")
        if checkpoint_keep < 1:
            raise ValueError(f"checkpoint_keep must be >= 1, got {checkpoint_keep!r}.")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.config = config
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.augmentation = augmentation
        self.checkpoint_keep = checkpoint_keep
        self.compile = compile
        self.check_every = check_every or (1 if device.type == "cpu" else CUDA_CHECK_EVERY)
        self.checkpoint_dir = (
            check_writable_directory(checkpoint_dir, "checkpoint_dir")
            if checkpoint_dir is not None
            else None
        )
        if self.checkpoint_dir is not None:
            check_history_file(self.checkpoint_dir / HISTORY_FILE, "checkpoint_dir")
        self.callbacks = list(callbacks)
        self.history: dict[str, list[float]] = {}
        self._best: dict = {}
        self._step = 0
        self._may_compile = False
        self._compilation = RegionalCompilation([], enabled=False)
        self._statistics = StepStatistics(device)
        self._progress: TrainingProgress | None = None
        self._clock: _StepClock | None = None

    @property
    def backbone(self) -> nn.Module:
        """The backbone ``fit`` would keep if training stopped now."""
        raise NotImplementedError

    def _train(self, run: Run, progress: TrainingProgress | None) -> None:
        """Seed the run's generators, resume, and train every epoch left: the frame of ``fit``.

        ``progress`` (`sparsam._progress.TrainingProgress`) hears of every step and epoch.
        The generators are torch's global CPU generator and the device's, from which timm's
        drop-path draws: forked for the fit (the caller's states come back afterwards) and
        seeded from ``run.generator``, so that the same seed gives the same weights.
        """
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        # The ranks of a process group must stop together, so Ctrl-C keeps its meaning there.
        one_group = self.shards_across_processes and is_distributed()
        with (
            torch.random.fork_rng(devices=cuda_devices),
            interruptible(self.interrupt_announcement, enabled=not one_group) as interrupted,
            RegionalCompilation(self._compiled_modules(), self.compile) as compilation,
        ):
            self._compilation = compilation
            seed = int(torch.randint(2**62, (1,), generator=run.generator))
            # Each rank its own drop-path masks.
            seed_global_generators(seed + (rank() if one_group else 0), self.device)
            first_epoch = self._start(run)
            # After _start, self._step counts the steps a resumed run has done.
            total_steps = self.config.epochs * run.steps_per_epoch
            if self.device.type == "cpu" and is_main_process():
                self._clock = _StepClock(total_steps - self._step)
            self._progress = progress
            if progress is not None:
                progress.start(self._step, total_steps)
            try:
                self._train_epochs(run, first_epoch, interrupted)
            finally:
                self._compilation = RegionalCompilation([], enabled=False)
                self._progress = self._clock = None
                self._finish()
                run.images.close()
                for callback in self.callbacks:
                    callback.on_train_end(self)

    def _train_epochs(
        self,
        run: Run,
        first_epoch: int,
        interrupted: Callable[[], bool],
    ) -> None:
        """Train from ``first_epoch`` to the last epoch, recording and saving after each."""
        epochs = self.config.epochs
        for epoch in range(first_epoch, epochs):
            if self._stops_early(run):
                break
            for callback in self.callbacks:
                callback.on_epoch_start(self, epoch)
            row = self._run_epoch(run, epoch, interrupted)
            for name, value in row.items():
                self.history.setdefault(name, []).append(value)
            if is_main_process():
                logger.info(*self._epoch_summary(epoch, row))
            path = self._save_after_epoch(run, epoch + 1)
            if self.checkpoint_dir is not None and is_main_process():
                write_history_csv(self.checkpoint_dir / HISTORY_FILE, self.history)
            if self._progress is not None:
                self._progress.epoch_end(epoch, row)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, row)
            if interrupted() and epoch + 1 < epochs:
                self._stop_interrupted(self._interruption_point(run, epoch + 1), path)

    def _begin_epoch(self, totals: dict[str, float] | None = None) -> None:
        """Fresh sums of the step statistics (or a resumed epoch's), compiling allowed."""
        self._statistics = StepStatistics(self.device, totals)
        # The first step compiles (and may be repeated uncompiled if compiling fails).
        self._may_compile = self._compilation.active

    def _step_done(self) -> None:
        """After every optimiser step: tell the progress; on the CPU, estimate the run once.

        Nothing here reads a device value, so a GPU's queue of steps is never drained.
        """
        if self._progress is not None:
            self._progress.step()
        if self._clock is not None:
            seconds = self._clock.step()
            if seconds is not None:
                self._log_estimate(seconds, self._clock.steps)
                self._clock = None

    def _log_estimate(self, seconds: float, steps: int) -> None:
        """Log how long the run's ``steps`` steps left will take; warn when that is long."""
        message = (
            f"{self.name} on the CPU: about {_duration(seconds)} for the {steps} steps left "
            f"({seconds / steps:.2g} s per step, timed over {TIMED_STEPS} steps)"
        )
        if seconds > LONG_CPU_RUN_SECONDS:
            logger.warning("%s. %s", message, self.long_cpu_run_hint)
        else:
            logger.info(message)

    def _check_loss(self, loss: torch.Tensor) -> None:
        """Record this step's loss; every ``check_every`` steps, stop if one was not finite."""
        self._statistics.check(self._step, loss)
        if (self._step + 1) % self.check_every == 0:
            self._raise_if_non_finite()

    def _raise_if_non_finite(self) -> None:
        """Stop training if a loss since the epoch's start was not finite (one host read)."""
        bad = self._statistics.first_non_finite()
        if bad is None:
            return
        step, value = bad
        stopped = self._statistics.how_stopped(step, self._step, self.check_every)
        raise FloatingPointError(self._non_finite_message(step, value, stopped))

    def _stop_interrupted(self, where: str, path: Path | None) -> None:
        """Raise KeyboardInterrupt saying where training stopped and how to resume it."""
        if path is None:
            message = (
                f"{self.name} interrupted {where}; nothing was saved (checkpoint_dir is None). "
                "Pass checkpoint_dir to be able to resume an interrupted run."
            )
        else:
            message = (
                f"{self.name} interrupted {where}; saved {path}. To resume, call fit again "
                f"with the same parameters, {self.resume_inputs} and checkpoint_dir="
                f"{os.fspath(self.checkpoint_dir)!r}{self.resume_hint}."
            )
        logger.warning(message)
        raise KeyboardInterrupt(message)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.autocast_dtype)

    def _infer(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
        """``model``'s float outputs on uint8 batches, normalised as for training, uncompiled.

        Uncompiled: compiling once more for inference would cost more than the few batches it
        would speed up. The caller sets the modes and the gradient mode.
        """
        mean, std = self.augmentation.mean, self.augmentation.std
        with self._autocast(), self._compilation.eager():
            return torch.cat(
                [model(normalize(batch.to(self.device), mean, std)).float() for batch in batches]
            )

    def _identity(self, images: TrainingImages, generator: torch.Generator) -> dict:
        """The run identity's entries every loop has besides its settings: precision to images."""
        return {
            "precision": str(self.autocast_dtype or torch.float32),
            "drop_path": stochastic_depth_rates(self._trained_model()),
            "seed": generator.initial_seed(),
            "images": images.fingerprint(),
        }

    def _write_checkpoint(self, state: dict, step: int) -> Path:
        """Save ``state`` as the checkpoint after global step ``step``; prune old ones."""
        return write_checkpoint(
            state, self.checkpoint_dir, step, self.checkpoint_prefix, self.checkpoint_keep
        )

    def _newest_checkpoint(self) -> tuple[Path | None, dict | None]:
        """The newest readable checkpoint and its contents; (None, None) when there is none.

        Rank 0 chooses; the other ranks of a process group read the file it chose (a shared
        file system).
        """
        if self.checkpoint_dir is None:
            return None, None
        path, state = None, None
        if is_main_process():
            path, state = newest_readable_checkpoint(
                self.checkpoint_dir, self.device, self.checkpoint_keys, self.checkpoint_prefix
            )
        path = broadcast_object(None if path is None else os.fspath(path))
        if path is None:
            return None, None
        path = Path(path)
        if state is None:
            state = read_checkpoint(path, self.device, self.checkpoint_keys)
        return path, state

    def _restore(
        self,
        path: Path,
        state: dict,
        run_settings: dict,
        models: dict[str, nn.Module],
        generator: torch.Generator,
        rng_states: tuple[torch.Tensor, torch.Tensor | None],
        what_differs: str = "",
    ) -> None:
        """Load what every checkpoint holds: models, optimizer, generators and history.

        ``models`` maps checkpoint keys to the modules they are loaded into; ``rng_states`` is
        this process's CPU and CUDA generator states (None: no CUDA state).
        """
        refuse_another_run(path, state["config"], run_settings)
        try:
            for key, model in models.items():
                model.load_state_dict(state[key])
        except RuntimeError as error:
            raise ValueError(
                f"Checkpoint {path} holds a different model ({what_differs}{error}); use "
                "another checkpoint_dir or delete the file."
            ) from error
        self.optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        torch_rng, cuda_rng = rng_states
        torch.set_rng_state(torch_rng.cpu())
        if self.device.type == "cuda" and cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng.cpu(), self.device)
        self.history = {name: list(values) for name, values in state["history"].items()}

    # --- what a training loop supplies -----------------------------------------------------

    def _trained_model(self) -> nn.Module:
        """The module whose parameters the optimizer trains (for its drop-path rates)."""
        raise NotImplementedError

    def _compiled_modules(self) -> list[nn.Module]:
        """What ``compile`` compiles."""
        raise NotImplementedError

    def _start(self, run: Run) -> int:
        """Prepare the first epoch (resume included) once the generators are seeded."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Undo what `_start` set up for training only; runs even when training fails."""

    def _stops_early(self, run: Run) -> bool:
        """Whether training ends before the next epoch (early stopping)."""
        return False

    def _run_epoch(self, run: Run, epoch: int, interrupted: Callable[[], bool]) -> dict:
        """Train epoch ``epoch`` (or what is left of it); its history row."""
        raise NotImplementedError

    def _save_after_epoch(self, run: Run, epochs_done: int) -> Path | None:
        """Write the checkpoint of the state after ``epochs_done`` epochs; its path."""
        raise NotImplementedError

    def _interruption_point(self, run: Run, epochs_done: int) -> str:
        """Where an interruption after ``epochs_done`` epochs stopped, in words."""
        raise NotImplementedError

    def _epoch_summary(self, epoch: int, row: dict[str, float]) -> tuple:
        """The log line of a finished epoch: a format string and its arguments."""
        raise NotImplementedError

    def _non_finite_message(self, step: int, value: float, stopped: str) -> str:
        """The error message of a non-finite loss at global step ``step``."""
        raise NotImplementedError


class _StepClock:
    """Times `TIMED_STEPS` steps after the first and extrapolates to the run's steps left."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self._counted = 0
        self._started = 0.0

    def step(self) -> float | None:
        """Count a step; the seconds of ``steps`` once `TIMED_STEPS` are timed, else None."""
        self._counted += 1
        now = time.perf_counter()
        if self._counted == 1:
            self._started = now
        elif self._counted == 1 + TIMED_STEPS:
            return (now - self._started) / TIMED_STEPS * self.steps
        return None


def _duration(seconds: float) -> str:
    """``seconds`` in the unit a person would say: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} hours"
