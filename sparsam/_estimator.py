"""What sparsam's estimators share: their base class, devices, backbones, decoding, inference.

`DinoFeaturizer` and `SupervisedClassifier` train a timm backbone on images with the same
augmentation and optimiser parameters and read them the same way (a timm name or saved weights,
a device, a precision, workers, verbosity). `ImageEstimator` holds what both do with those
parameters (validation, seeding, devices, progress, tags, pickling); the functions below give
both, and the snapshot scorer of `sparsam.selection`, one answer.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import sys
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from tqdm.auto import tqdm

from ._progress import TrainingProgress, stderr_is_terminal
from .backbones import create_backbone, load_backbone
from .data import ImageSource, iter_batches
from .data.skipping import ON_ERROR_OPTIONS, SkippedImage
from .data.training import TrainingImages, training_images
from .training.augment import MultiCropAugmentation
from .training.precision import resolve_precision

__all__ = [
    "ImageEstimator",
    "batched_outputs",
    "build_backbone",
    "check_one_label_per_image",
    "check_patch_multiples",
    "decode_training_images",
    "draw_seed",
    "per_crop",
    "printed_log_lines",
    "resolve_device",
    "seeded_torch",
    "validate_backbone_kwargs",
]

# A probability of every crop, or one per crop: first global, second global, local crops.
PER_CROP_PROBABILITY = [Interval(Real, 0, 1, closed="both"), tuple, list]


class ImageEstimator(BaseEstimator):
    """The scaffolding of sparsam's estimators, which train a timm backbone on images.

    It declares the constraints of the parameters `DinoFeaturizer` and `SupervisedClassifier`
    share (same name, type and meaning in both) and does, for both, what ``fit`` does with
    them before and around training: validation, seeding (`draw_seed`, `seeded_torch`), the
    device, the starting backbone, the augmentation's shared part, decoding, the progress bar
    and log lines, batched inference, tags and pickling.

    A subclass stores its ``__init__`` arguments with `_store_parameters`, extends
    ``_parameter_constraints``, names its crop-scale parameters (``_crop_scale_names``) and
    the attribute that holds its fitted network (``_fitted_module``), says what the progress
    shows (`_epoch_postfix`) and assigns its fitted attributes with `_set_fitted` once
    training has succeeded.
    """

    # scikit-learn's declarative checks of the shared parameters, run by _validate_params.
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "backbone": [str],
        "backbone_kwargs": [dict, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "image_size": [Interval(Integral, 1, None, closed="left"), None],
        "horizontal_flip": [Interval(Real, 0, 1, closed="both")],
        "vertical_flip": [Interval(Real, 0, 1, closed="both")],
        "rotation": [Interval(Real, 0, 180, closed="both")],
        "perspective": [Interval(Real, 0, 1, closed="both")],
        "perspective_p": PER_CROP_PROBABILITY,
        "color_jitter": [tuple, list],
        "grayscale": [Interval(Real, 0, 1, closed="both")],
        "blur": PER_CROP_PROBABILITY,
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
        "callbacks": [list, None],
        "on_error": [StrOptions(set(ON_ERROR_OPTIONS))],
    }
    # The (low, high) area ranges of the crops, checked by _validate_tuples.
    _crop_scale_names: ClassVar[tuple[str, ...]] = ()
    # The fitted network, moved to the CPU when pickled.
    _fitted_module: ClassVar[str] = ""

    def _store_parameters(self, arguments: dict[str, Any]) -> None:
        """Store every ``__init__`` argument under its own name, and nothing else.

        scikit-learn's convention (``get_params``, ``clone``): ``__init__`` only stores its
        arguments, unchecked; ``fit`` validates them. ``arguments`` is ``locals()`` taken first
        thing in ``__init__``, so it holds exactly the signature's parameters and ``self``.
        """
        for name, value in arguments.items():
            if name != "self":
                setattr(self, name, value)

    def _check_parameters(self) -> torch.device:
        """Validate the parameters before anything is built; the device to train on."""
        self._validate_params()
        self._validate_tuples()
        device = self._resolve_device()
        validate_backbone_kwargs(self.backbone_kwargs)
        return device

    def _validate_tuples(self) -> None:
        """What the declared constraints cannot say: the lengths and ranges of tuples."""
        for name in self._crop_scale_names:
            value = getattr(self, name)
            if len(value) != 2 or not 0 < value[0] <= value[1] <= 1:
                raise ValueError(
                    f"{name} must be (low, high) with 0 < low <= high <= 1, got {value!r}."
                )
        lengths = {"color_jitter": 4, "blur": 3, "perspective_p": 3}
        # A single probability of blur or perspective was checked by its constraint.
        sequences = {
            name: getattr(self, name)
            for name in lengths
            if isinstance(getattr(self, name), (tuple, list))
        }
        for name, value in sequences.items():
            if len(value) != lengths[name] or any(not 0 <= float(v) for v in value):
                raise ValueError(
                    f"{name} must be {lengths[name]} non-negative numbers, got {value!r}."
                )
        for name in ("blur", "perspective_p"):
            if name in sequences and any(float(v) > 1 for v in sequences[name]):
                raise ValueError(f"{name} holds probabilities in [0, 1], got {sequences[name]!r}.")

    def _resolve_device(self) -> torch.device:
        return resolve_device(self.device)

    def _build_backbone(self, pretrained: Any) -> torch.nn.Module:
        """The starting backbone of ``backbone``, ``backbone_kwargs`` and ``pretrained``."""
        return build_backbone(
            self.backbone,
            self.backbone_kwargs,
            pretrained,
            self.image_size,
            self.drop_path_rate,
        )

    def _augmentation(self, data_config: dict[str, Any], **crops: Any) -> MultiCropAugmentation:
        """The augmentation of the shared parameters; ``crops`` are the subclass's crop settings.

        Global crops have the training size ``data_config["image_size"]``.
        """
        return MultiCropAugmentation(
            global_crop_size=data_config["image_size"],
            horizontal_flip=self.horizontal_flip,
            vertical_flip=self.vertical_flip,
            rotation=self.rotation,
            perspective=self.perspective,
            perspective_p=per_crop(self.perspective_p),
            color_jitter=tuple(self.color_jitter),
            grayscale_p=self.grayscale,
            blur_p=per_crop(self.blur),
            mean=data_config["mean"],
            std=data_config["std"],
            **crops,
        )

    def _decode_training_images(
        self,
        source: ImageSource,
        image_size: int,
        device: torch.device,
        skipped: list[SkippedImage] | None,
    ) -> TrainingImages:
        """The training images; with a ``skipped`` list, those that decode (``on_error``)."""
        return decode_training_images(
            source,
            image_size,
            self.in_memory,
            self.batch_size,
            self.num_workers,
            device,
            self.verbose,
            skipped,
        )

    def _skipped_list(self) -> list[SkippedImage] | None:
        """A list to record undecodable images in with ``on_error="skip"``; None to raise."""
        # getattr: estimators pickled before on_error existed raise, as they did then.
        return [] if getattr(self, "on_error", "raise") == "skip" else None

    @contextlib.contextmanager
    def _training_progress(self, description: str) -> Iterator[TrainingProgress]:
        """Inside, the training's progress and (``verbose >= 2``) log lines; yields the progress.

        The trainers report every step and epoch to it: a bar over the run's steps on a
        terminal, one line per epoch when stderr is a file or a pipe (`sparsam._progress`).
        """
        progress = TrainingProgress(description, self.epochs, self.verbose, self._epoch_postfix)
        with printed_log_lines(self.verbose):
            try:
                yield progress
            finally:
                progress.close()

    def _epoch_postfix(self, row: dict[str, float]) -> dict[str, str]:
        """What the progress shows of an epoch's ``history_`` row (after the bar, in the lines)."""
        return {"loss": f"{row['loss']:.3f}"}

    def _inference_options(self) -> dict[str, Any]:
        """The keywords of `batched_outputs` that the parameters set (transform, predict)."""
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "device": self._resolve_device(),
            "precision": self.precision,
            "verbose": self.verbose,
        }

    def _set_fitted(self, **attributes: Any) -> None:
        """Assign the fitted attributes together, once ``fit`` has succeeded.

        scikit-learn's rule: a ``fit`` that fails leaves the estimator as it was, so a failed
        refit never pairs the old network with a new ``data_config_``.
        """
        for name, value in attributes.items():
            setattr(self, name, value)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Images (n, H, W) or (n, H, W, C), never tabular rows.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    def __getstate__(self) -> dict[str, Any]:
        # On Python >= 3.11 the inherited state is self.__dict__ itself, and Module.to moves
        # in place: copy both, so that pickling leaves the fitted model where it is.
        state = dict(super().__getstate__())
        if self._fitted_module in state:
            # A model fitted on a GPU must unpickle on a machine without one.
            state[self._fitted_module] = copy.deepcopy(state[self._fitted_module]).to("cpu")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Estimators pickled before the callbacks parameter existed.
        super().__setstate__({"callbacks": None, "on_error": "raise", **state})


def draw_seed(rng: np.random.RandomState) -> int:
    """A seed for torch (or a split) drawn from an estimator's ``random_state``."""
    return int(rng.randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Inside, torch's CPU generator starts at ``seed``; outside, the caller's stream goes on."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def per_crop(probability: float | tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """A ``blur`` or ``perspective_p`` parameter as the augmentation's triple.

    A single probability applies to every crop; a triple gives the first global, the second
    (and any further) global and the local crops their own.
    """
    if isinstance(probability, (tuple, list)):
        return tuple(probability)
    return (probability,) * 3


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


def check_one_label_per_image(source: ImageSource, y: np.ndarray, expected: str) -> None:
    """Refuse labels that do not pair one to one with the images; ``expected`` says how."""
    if len(y) != len(source):
        raise ValueError(
            f"X and y have different lengths: X has {len(source)} images, y has {len(y)} "
            f"labels; expected {expected}."
        )


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
    skipped: list[SkippedImage] | None = None,
) -> TrainingImages:
    """The training images, decoded once under a progress bar, or streamed; with a
    ``skipped`` list, those that cannot be decoded are left out and recorded in it."""
    # Decoding thousands of files into memory takes minutes before the first epoch; the bar
    # appears with the first decoded batch, so a streamed set shows none.
    bars: list[tqdm] = []
    shown = bool(verbose) and stderr_is_terminal()

    def progress(n_images: int) -> None:
        if not bars:
            bars.append(tqdm(total=len(source), desc="decoding", unit="image", disable=not shown))
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
            skipped=skipped,
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
    skipped: list[SkippedImage] | None = None,
) -> np.ndarray:
    """``model``'s float32 outputs ``(n, width)`` for every image, resized and normalised.

    On a GPU the host never waits for the batch it has just queued: batch ``i + 1`` is
    decoded, copied (from page-locked memory) and queued while the GPU runs batch ``i``,
    whose outputs are copied back asynchronously and read only then. The normalised images
    go into one float buffer reused by every batch.

    With a ``skipped`` list, an image that cannot be decoded gets a row of NaN and a record
    in the list (``on_error="skip"``); None raises.
    """
    model = model.to(device)
    autocast_dtype = resolve_precision(precision, device)
    already_skipped = len(skipped) if skipped is not None else 0
    batches = iter_batches(
        source,
        data_config["image_size"],
        batch_size,
        num_workers,
        pin_memory=device.type == "cuda",
        skipped=skipped,
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
            disable=not verbose or not stderr_is_terminal(),
        ):
            result = model(normalized(batch.to(device, non_blocking=True))).float()
            if pending is not None:
                pending.write_to(outputs)
            pending = _PendingRows(start, result)
            start += len(batch)
        if pending is not None:
            pending.write_to(outputs)
    if skipped:
        outputs[[image.index for image in skipped[already_skipped:]]] = np.nan
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
