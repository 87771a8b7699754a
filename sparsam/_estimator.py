"""What sparsam's estimators share: devices, backbones, decoding, batched inference, logging.

`DinoFeaturizer` and `SupervisedClassifier` read their parameters the same way (a timm name or
saved weights, a device, a precision, workers, verbosity); these functions give both one answer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from tqdm.auto import tqdm

from .backbones import create_backbone, load_backbone
from .data import ImageSource, iter_batches
from .data.training import TrainingImages, training_images
from .training.precision import resolve_precision

__all__ = [
    "SHARED_PARAMETER_CONSTRAINTS",
    "batched_outputs",
    "build_backbone",
    "check_patch_multiples",
    "decode_training_images",
    "printed_log_lines",
    "resolve_device",
    "validate_backbone_kwargs",
]

# Parameters both estimators take, with the same meaning (scikit-learn's declarative checks).
SHARED_PARAMETER_CONSTRAINTS: dict[str, list[Any]] = {
    "backbone": [str],
    "backbone_kwargs": [dict, None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "image_size": [Interval(Integral, 1, None, closed="left"), None],
    "horizontal_flip": [Interval(Real, 0, 1, closed="both")],
    "vertical_flip": [Interval(Real, 0, 1, closed="both")],
    "rotation": [Interval(Real, 0, 180, closed="both")],
    "perspective": [Interval(Real, 0, 1, closed="both")],
    "color_jitter": [tuple, list],
    "grayscale": [Interval(Real, 0, 1, closed="both")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "min_lr": [Interval(Real, 0, None, closed="left")],
    "warmup_epochs": [Interval(Integral, 0, None, closed="left")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "drop_path_rate": [Interval(Real, 0, 1, closed="left")],
    "device": [str, torch.device],
    "precision": [StrOptions({"auto", "fp32", "bf16"})],
    "compile": ["boolean", StrOptions({"auto"})],
    "num_workers": [Interval(Integral, 0, None, closed="left")],
    "in_memory": ["boolean", StrOptions({"auto"})],
    "checkpoint_dir": [str, os.PathLike, None],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}

# The logger of the training loops: one line per epoch, resumption and collapse warnings.
_logger = logging.getLogger("sparsam")


class _ProgressBarHandler(logging.Handler):
    """Prints log records to stderr through tqdm, so that they do not break a running bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def printed_log_lines(verbose: int) -> Iterator[None]:
    """With ``verbose >= 2``, print the INFO records of the sparsam logger while inside."""
    if verbose < 2:
        yield
        return
    handler = _ProgressBarHandler(logging.INFO)
    previous_level = _logger.level
    _logger.addHandler(handler)
    if _logger.getEffectiveLevel() > logging.INFO:
        _logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        _logger.removeHandler(handler)
        _logger.setLevel(previous_level)


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device of a ``device`` parameter; refuses one this machine lacks."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device={device!r} is not a device torch knows; expected 'auto', 'cpu', "
            "'cuda' or 'cuda:N'."
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif resolved.type != "cpu":
        available = getattr(torch, resolved.type, None)
        if available is None or not available.is_available():
            raise ValueError(
                f"device={device!r}: {resolved.type} is not available here; expected "
                "'auto', 'cpu', 'cuda' or 'cuda:N'."
            )
    return resolved


def validate_backbone_kwargs(backbone_kwargs: dict[str, Any] | None) -> None:
    """Refuse an ``embed_dim`` that the attention heads cannot share, before timm asserts."""
    kwargs = backbone_kwargs or {}
    embed_dim, num_heads = kwargs.get("embed_dim"), kwargs.get("num_heads")
    if (
        isinstance(embed_dim, int)
        and isinstance(num_heads, int)
        and (num_heads < 1 or embed_dim % num_heads)
    ):
        raise ValueError(
            f"backbone_kwargs: embed_dim={embed_dim} must be a multiple of "
            f"num_heads={num_heads} (each attention head gets embed_dim / num_heads)."
        )


def build_backbone(
    backbone: str,
    backbone_kwargs: dict[str, Any] | None,
    pretrained: Any,
    image_size: int | None,
    drop_path_rate: float,
) -> torch.nn.Module:
    """The starting backbone: timm's (random or ImageNet) or saved weights (safetensors)."""
    if pretrained is None or pretrained == "imagenet":
        try:
            return create_backbone(
                backbone,
                image_size=image_size,
                pretrained=pretrained,
                backbone_kwargs=backbone_kwargs,
                drop_path_rate=drop_path_rate,
            )
        except AssertionError as error:
            # timm checks shapes with assert (e.g. "dim should be divisible by num_heads").
            raise ValueError(
                f"timm cannot build backbone={backbone!r} at image_size="
                f"{image_size} with backbone_kwargs={backbone_kwargs!r}: {error}"
            ) from error
    return load_backbone(pretrained, image_size=image_size, drop_path_rate=drop_path_rate)


def check_patch_multiples(
    backbone: torch.nn.Module, sizes: dict[str, int], image_size_given: bool
) -> None:
    """Refuse image or crop sizes (name to pixels) that the backbone's patches cannot tile."""
    patch = getattr(getattr(backbone, "patch_embed", None), "patch_size", None)
    patch = patch[-1] if isinstance(patch, (tuple, list)) else patch
    if not isinstance(patch, int) or patch <= 1:
        return
    for name, size in sizes.items():
        if size % patch:
            origin = (
                " (the backbone's configured input size)"
                if name == "image_size" and not image_size_given
                else ""
            )
            raise ValueError(
                f"{name}={size}{origin} is not a multiple of the backbone's patch size "
                f"{patch}; use e.g. {max(patch, size // patch * patch)}."
            )


def decode_training_images(
    source: ImageSource,
    image_size: int,
    in_memory: bool | str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    verbose: int,
) -> TrainingImages:
    """The training images, decoded once under a progress bar, or streamed."""
    # Decoding thousands of files into memory takes minutes before the first epoch; the bar
    # appears with the first decoded batch, so a streamed set shows none.
    bars: list[tqdm] = []

    def progress(n_images: int) -> None:
        if not bars:
            bars.append(tqdm(total=len(source), desc="decoding", unit="image", disable=not verbose))
        bars[0].update(n_images)

    try:
        return training_images(
            source,
            image_size,
            in_memory,
            batch_size,
            num_workers,
            pin_memory=device.type == "cuda",
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()


def batched_outputs(
    model: torch.nn.Module,
    source: ImageSource,
    data_config: dict[str, Any],
    width: int,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    precision: str,
    verbose: int,
    description: str,
) -> np.ndarray:
    """``model``'s float32 outputs ``(n, width)`` for every image, resized and normalised.

    On a GPU the host never waits for the batch it has just queued: batch ``i + 1`` is
    decoded, copied (from page-locked memory) and queued while the GPU runs batch ``i``,
    whose outputs are copied back asynchronously and read only then. The normalised images
    go into one float buffer reused by every batch.
    """
    model = model.to(device)
    autocast_dtype = resolve_precision(precision, device)
    batches = iter_batches(
        source,
        data_config["image_size"],
        batch_size,
        num_workers,
        pin_memory=device.type == "cuda",
    )
    normalized = _NormalizationBuffer(data_config["mean"], data_config["std"], device)
    # Filled batch by batch: a list of batches and a concatenation would hold it twice.
    outputs = np.empty((len(source), width), dtype=np.float32)
    pending: _PendingRows | None = None
    start = 0
    with (
        torch.inference_mode(),
        torch.autocast(
            device.type,
            dtype=autocast_dtype or torch.float32,
            enabled=autocast_dtype is not None,
        ),
    ):
        for batch in tqdm(
            batches,
            total=math.ceil(len(source) / batch_size),
            desc=description,
            unit="batch",
            disable=not verbose,
        ):
            result = model(normalized(batch.to(device, non_blocking=True))).float()
            if pending is not None:
                pending.write_to(outputs)
            pending = _PendingRows(start, result)
            start += len(batch)
        if pending is not None:
            pending.write_to(outputs)
    return outputs


class _NormalizationBuffer:
    """``normalize`` into one reused float buffer (bit for bit the same values)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32, device=device)[:, None, None]
        self.buffer: torch.Tensor | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.buffer is None or self.buffer.shape[1:] != images.shape[1:]:
            self.buffer = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        # A smaller last batch uses the front of the buffer.
        buffer = self.buffer[: len(images)]
        buffer.copy_(images)
        return buffer.div_(255).sub_(self.mean).div_(self.std)


class _PendingRows:
    """A batch's outputs on their way to the host; read once the copy has finished."""

    def __init__(self, start: int, result: torch.Tensor) -> None:
        self.start = start
        self.event = None
        if result.device.type == "cuda":
            # Into page-locked memory, queued behind the batch's kernels.
            result = result.to("cpu", non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        self.result = result

    def write_to(self, outputs: np.ndarray) -> None:
        if self.event is not None:
            self.event.synchronize()
        outputs[self.start : self.start + len(self.result)] = self.result.numpy()
