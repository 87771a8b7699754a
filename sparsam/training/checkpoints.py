"""What sparsam's training loops share: checkpoint files, run identities and Ctrl-C.

`sparsam.dino.trainer.DinoTrainer` and `sparsam.supervised.trainer.FineTuneTrainer` write
checkpoints named ``<prefix>_checkpoint_<global step, 9 digits>.pt`` (names sort by age, and only
files named so are ever resumed from or pruned), read them back with ``weights_only=True``,
resume only a checkpoint whose recorded run identity equals the current one, and turn Ctrl-C
into "stop at the next safe point and save".
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .._files import atomic_write
from .._torch_file import UnreadableTorchFileError, load_weights_only

__all__ = [
    "CheckpointWarning",
    "checkpoint_name",
    "describe_differences",
    "digest",
    "interruptible",
    "list_checkpoints",
    "newest_readable_checkpoint",
    "read_checkpoint",
    "refuse_another_run",
    "seed_global_generators",
    "settings_of",
    "stochastic_depth_rates",
    "write_checkpoint",
]

logger = logging.getLogger("sparsam")


class CheckpointWarning(UserWarning):
    """The newest checkpoint could not be read, and an older one was resumed instead."""


def checkpoint_name(step: int, prefix: str = "dino") -> str:
    """File name of the checkpoint written after ``step`` global steps."""
    return f"{prefix}_checkpoint_{step:09d}.pt"


def list_checkpoints(directory: str | os.PathLike, prefix: str = "dino") -> list[Path]:
    """sparsam's checkpoint files in ``directory``, newest first; [] when there are none.

    Parameters
    ----------
    directory : path-like
        A ``checkpoint_dir``; need not exist.
    prefix : str, default="dino"
        Which training loop's files: ``"dino"`` (`DinoFeaturizer`) or ``"supervised"``
        (`SupervisedClassifier`).

    Returns
    -------
    list of Path
        Files named ``<prefix>_checkpoint_<step>.pt``, by decreasing step.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(prefix)}_checkpoint_(\d{{9}})\.pt")
    found = []
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def write_checkpoint(state: dict, directory: Path, step: int, prefix: str, keep: int) -> Path:
    """Save ``state`` as the checkpoint after ``step`` global steps; keep the newest ``keep``.

    The file is written atomically (a temporary file renamed into place), so that a run killed
    while saving leaves the previous checkpoints intact. Returns its path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(step, prefix)
    with atomic_write(path) as file:
        torch.save(state, file)
    for old in list_checkpoints(directory, prefix)[keep:]:
        old.unlink(missing_ok=True)
    return path


def newest_readable_checkpoint(
    directory: Path, device: torch.device, keys: Sequence[str], prefix: str = "dino"
) -> tuple[Path | None, dict | None]:
    """The newest checkpoint that reads; an unreadable newer one is skipped with a warning."""
    candidates = list_checkpoints(directory, prefix)
    for index, path in enumerate(candidates):
        try:
            return path, read_checkpoint(path, device, keys)
        except ValueError as error:
            if index + 1 == len(candidates):
                raise
            warnings.warn(
                f"{error} Resuming from the previous checkpoint, {candidates[index + 1]}.",
                CheckpointWarning,
                stacklevel=4,
            )
    return None, None


def read_checkpoint(path: Path, device: torch.device, keys: Sequence[str]) -> dict:
    """Load a checkpoint, or explain in the user's terms why it cannot be resumed."""
    advice = "delete it to start afresh, or pass another checkpoint_dir"
    if path.stat().st_size == 0:
        raise ValueError(f"Checkpoint {path} is empty (an interrupted copy?); {advice}.")
    try:
        state = load_weights_only(path, map_location=device)
    except (UnreadableTorchFileError, OSError) as error:
        reason = error.reason if isinstance(error, UnreadableTorchFileError) else error.strerror
        raise ValueError(
            f"Checkpoint {path} cannot be read ({reason}): it is damaged or not a sparsam "
            f"checkpoint; {advice}."
        ) from None
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(
            f"Checkpoint {path} lacks {', '.join(missing)}: it was written by an older sparsam "
            f"or another program; {advice}."
        )
    return state


def describe_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two run identities, one entry per setting."""
    described = {
        "images": "other images",
        "labels": "other labels",
        "initial_weights": "other starting weights (backbone, pretrained or seed)",
        "seed": "another random_state",
        "world_size": "another number of processes",
    }
    differences = []
    for name in sorted(saved.keys() | current.keys()):
        before, now = saved.get(name), current.get(name)
        if before == now:
            continue
        if isinstance(before, dict) and isinstance(now, dict):
            differences.extend(describe_differences(before, now, f"{prefix}{name}."))
        elif name in described and not prefix:
            differences.append(f"{name}: {described[name]}")
        else:
            differences.append(f"{prefix}{name}: {before!r} in the checkpoint, {now!r} now")
    return differences


def settings_of(settings: object) -> dict:
    """A settings dataclass as a run identity records it: its fields, tuples as lists."""
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in dataclasses.asdict(settings).items()
    }


def stochastic_depth_rates(model: nn.Module) -> list[float]:
    """The drop-path rate of every module of ``model`` that has one, in module order."""
    return [
        float(module.drop_prob)
        for module in model.modules()
        if isinstance(getattr(module, "drop_prob", None), float)
    ]


def digest(*values: object) -> str:
    """SHA-256 of plain values (lists, numbers, strings) as JSON: a short run-identity entry."""
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


def refuse_another_run(path: Path, saved: dict, current: dict) -> None:
    """Raise when the run identity saved in checkpoint ``path`` differs from the current one."""
    differences = describe_differences(saved, current)
    if differences:
        raise ValueError(
            f"Checkpoint {path} belongs to another run ({'; '.join(differences)}), and "
            "resuming it would return a model trained on something else. Use another "
            "checkpoint_dir, or delete the file to start afresh."
        )


def seed_global_generators(seed: int, device: torch.device) -> None:
    """Seed torch's global CPU generator and ``device``'s, from which timm's drop-path draws.

    Only the generators a training loop forks with ``torch.random.fork_rng``: the CPU's and
    the training device's.
    """
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@contextlib.contextmanager
def interruptible(announcement: str, enabled: bool = True) -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C into a request the loop polls: the model is never left half-updated.

    The first Ctrl-C logs ``announcement`` and sets the request; a second one raises
    KeyboardInterrupt at once. Outside the main thread, or with ``enabled=False`` (a process
    group, whose ranks must stop together), Ctrl-C keeps its usual meaning.
    """
    requested = [False]
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def request_stop(signum: int, frame: object) -> None:
        if requested[0]:
            raise KeyboardInterrupt
        requested[0] = True
        logger.warning(announcement)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield lambda: requested[0]
    finally:
        signal.signal(signal.SIGINT, previous)
