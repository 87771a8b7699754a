"""End-to-end fine-tuning of a backbone with a linear head: the paper's supervised baseline."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checkpoints import (
    checkpoint_name,
    interruptible,
    list_checkpoints,
    newest_readable_checkpoint,
    refuse_another_run,
    seed_global_generators,
)
from .._files import atomic_write, check_writable_directory
from ..data.cache import weights_digest
from ..data.training import TrainingImages
from ..dino.augment import MultiCropAugmentation, normalize
from ..dino.distributed import is_main_process
from ..dino.schedules import cosine_schedule
from ..dino.trainer import CUDA_CHECK_EVERY, weight_decay_groups
from ..training.compilation import RegionalCompilation, compiled_regions, forward_restorer
from ..training.statistics import StepStatistics
from ..training.transfer import on_device

__all__ = ["ClassifierModel", "FineTuneConfig", "FineTuneTrainer", "balanced_accuracy"]

logger = logging.getLogger("sparsam")

CHECKPOINT_PREFIX = "supervised"
_CHECKPOINT_KEYS = (
    "epoch",
    "model",
    "optimizer",
    "generator",
    "torch_rng",
    "cuda_rng",
    "config",
    "history",
    "best",
)


@dataclass(frozen=True)
class FineTuneConfig:
    """Optimisation settings of one fine-tuning run.

    ``lr`` is the AdamW learning rate after ``warmup_epochs`` of linear warm-up; a cosine
    schedule takes it to ``min_lr`` at the last of ``epochs``. ``patience`` is the number of
    epochs without a better validation score after which training stops (None: never).
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    patience: int | None = 10


class ClassifierModel(nn.Module):
    """A backbone's CLS embedding followed by one linear layer: ``(b, 3, H, W) -> (b, classes)``."""

    def __init__(self, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, n_classes)
        # A zero head starts every class at equal odds and sends no random gradient into the
        # pretrained backbone in the first steps (as BiT's fine-tuning does).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean recall over the classes present in ``labels`` (scikit-learn's definition)."""
    predicted = logits.argmax(dim=1)
    recalls = [(predicted[labels == label] == label).float().mean() for label in labels.unique()]
    return float(torch.stack(recalls).mean())


class FineTuneTrainer:
    """Supervised end-to-end training of ``backbone`` and a new linear head.

    Class-weighted cross-entropy, AdamW with weight decay on weight matrices only, a cosine
    learning-rate schedule with linear warm-up, and the augmentation of DINO's global crops
    (one crop per image and step, no multi-crop). After every epoch the model is scored on
    the validation images (eval mode): the best epoch by balanced accuracy, ties broken by
    the lower class-weighted loss, is kept, training stops after ``config.patience`` epochs
    without a better one, and the best epoch's weights are restored at the end.

    Parameters
    ----------
    backbone : nn.Module
        Maps images (b, 3, H, W) to CLS embeddings (b, d); trained in train mode whatever
        mode it arrives in.
    n_classes : int
        Outputs of the head.
    augmentation : MultiCropAugmentation
        With ``global_crops=1`` and ``local_crops=0``; its first crop is the training view.
    config : FineTuneConfig
    device : torch.device
    autocast_dtype : torch.dtype or None
        bf16 autocast when given, fp32 otherwise.
    checkpoint_dir : path-like or None
        When given, ``supervised_checkpoint_<step>.pt`` is written there after every epoch
        (atomically, the newest ``checkpoint_keep`` kept), and ``fit`` resumes from the
        newest one written by the same run (same seed, images, labels, split, starting
        weights and settings). Ctrl-C during ``fit`` finishes the epoch, writes a checkpoint
        and raises KeyboardInterrupt saying how to resume.
    checkpoint_keep : int, default=3
    compile : bool, default=False
        Compile the backbone's repeated blocks and the head with ``torch.compile`` during
        ``fit``; if compiling fails, training continues uncompiled with a
        `CompileFallbackWarning` (`sparsam.training.compilation`).
    check_every : int or None, default=None
        Steps between the host's reads of the loss (finiteness); None reads every step on
        the CPU and every `sparsam.dino.trainer.CUDA_CHECK_EVERY` steps on a GPU.

    Attributes
    ----------
    model : ClassifierModel
        Backbone and head; after ``fit`` the best epoch's weights.
    history : dict of list
        Per epoch ``loss`` (class-weighted, on the augmented training crops), ``lr``,
        ``seconds`` and, with validation images, ``validation_loss`` and
        ``validation_balanced_accuracy``.
    best_epoch : int
        0-based epoch whose weights ``model`` holds after ``fit`` (the last one without
        validation images).
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int,
        augmentation: MultiCropAugmentation,
        config: FineTuneConfig,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_keep: int = 3,
        compile: bool = False,
        check_every: int | None = None,
    ) -> None:
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be None or >= 1, got {check_every!r}.")
        if augmentation.global_crops != 1 or augmentation.local_crops != 0:
            raise ValueError(
                "Fine-tuning trains on one crop per image: expected an augmentation with "
                f"global_crops=1 and local_crops=0, got {augmentation.global_crops} and "
                f"{augmentation.local_crops}."
            )
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
        self.model = ClassifierModel(backbone, n_classes).to(device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(
            weight_decay_groups(self.model), fused=device.type == "cuda"
        )
        self._compilation = RegionalCompilation([], enabled=False)
        self._statistics = StepStatistics(device)
        self._step = 0
        self._may_compile = False
        self.history: dict[str, list[float]] = {}
        self.best_epoch = -1
        self._best: dict = {}
        self._initial_weights = weights_digest(self.model, {})

    def fit(
        self,
        images: TrainingImages | torch.Tensor,
        labels: torch.Tensor,
        train_indices: torch.Tensor,
        validation_indices: torch.Tensor | None,
        class_weights: torch.Tensor,
        generator: torch.Generator,
        progress: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, list[float]]:
        """Train on ``images[train_indices]``; score ``images[validation_indices]`` per epoch.

        ``images`` are the uint8 labeled images (n, 3, H, W) or a `TrainingImages` that
        decodes them, ``labels`` their class indices (n,), ``class_weights`` one weight per
        class. ``generator`` draws the batch order and the augmentations and seeds torch's
        global CPU and CUDA generators (drop-path) for the fit; the caller's states are
        restored afterwards, and the same seed on the CPU gives the same weights bit for
        bit, a resumed run included. ``progress`` is called after every epoch with its index
        and history row. Returns the history.
        """
        if isinstance(images, torch.Tensor):
            images = TrainingImages(None, images.shape[-1], images)
        labels = labels.to(self.device)
        class_weights = class_weights.to(self.device, torch.float32)
        config = self.config
        n_train = len(train_indices)
        batch_size = min(config.batch_size, n_train)
        steps_per_epoch = math.ceil(n_train / batch_size)
        total_steps = config.epochs * steps_per_epoch
        lr = cosine_schedule(
            config.lr, config.min_lr, total_steps, config.warmup_epochs * steps_per_epoch
        )
        settings = (
            self._settings(images, labels, train_indices, validation_indices, generator)
            if self.checkpoint_dir is not None
            else {}
        )
        images.to(self.device)
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        compiled = [*compiled_regions(self.model.backbone), self.model.head]
        with (
            torch.random.fork_rng(devices=cuda_devices),
            interruptible(
                "Interrupted: fine-tuning stops after this epoch and saves a checkpoint "
                "(press Ctrl-C again to stop at once, without one)."
            ) as interrupted,
            RegionalCompilation(compiled, self.compile) as compilation,
        ):
            self._compilation = compilation
            seed = int(torch.randint(2**62, (1,), generator=generator))
            seed_global_generators(seed, self.device)
            start, epochs_without_improvement = self._resume(generator, settings)
            self._step = start * steps_per_epoch
            try:
                for epoch in range(start, config.epochs):
                    if (
                        validation_indices is not None
                        and config.patience is not None
                        and epochs_without_improvement >= config.patience
                    ):
                        break
                    started = time.perf_counter()
                    order = train_indices[torch.randperm(n_train, generator=generator)]
                    row = self._train_epoch(
                        images,
                        labels,
                        order.split(batch_size),
                        class_weights,
                        generator,
                        lr[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch],
                    )
                    if validation_indices is not None:
                        row.update(
                            self._validate(images, labels, validation_indices, class_weights)
                        )
                    row["seconds"] = time.perf_counter() - started
                    for name, value in row.items():
                        self.history.setdefault(name, []).append(value)
                    epochs_without_improvement = self._keep_if_best(epoch, row)
                    if is_main_process():
                        logger.info(
                            "Fine-tuning epoch %d/%d: loss %.4f%s",
                            epoch + 1,
                            config.epochs,
                            row["loss"],
                            ""
                            if validation_indices is None
                            else f", validation balanced accuracy "
                            f"{row['validation_balanced_accuracy']:.3f}",
                        )
                    path = self._save_checkpoint(epoch + 1, generator, settings, steps_per_epoch)
                    if progress is not None:
                        progress(epoch, row)
                    if interrupted() and epoch + 1 < config.epochs:
                        self._stop_interrupted(epoch + 1, path)
            finally:
                self._compilation = RegionalCompilation([], enabled=False)
                images.close()
        if self._best:
            self.model.load_state_dict(self._best["state"])
        self.best_epoch = self._best.get("epoch", len(self.history.get("loss", [])) - 1)
        self.model.eval()
        return self.history

    def _train_epoch(
        self,
        images: TrainingImages,
        labels: torch.Tensor,
        batches: tuple[torch.Tensor, ...],
        class_weights: torch.Tensor,
        generator: torch.Generator,
        lr: np.ndarray,
    ) -> dict[str, float]:
        """One pass over the batches of image indices; the epoch's mean loss and last lr."""
        self._statistics = StepStatistics(self.device)
        # The first step compiles (and may be repeated uncompiled if compiling fails).
        self._may_compile = self._compilation.active
        for indices, batch, step_lr in zip(batches, images.batches(list(batches)), lr, strict=True):
            loss = self.train_step(
                batch.to(self.device, non_blocking=True),
                labels[on_device(indices, self.device)],
                class_weights,
                generator,
                float(step_lr),
            )
            self._statistics.add({"loss": loss * len(indices)})
            self._may_compile = False
            self._step += 1
        self._raise_if_non_finite()
        total_loss = self._statistics.totals()["loss"]
        return {"loss": total_loss / sum(len(indices) for indices in batches), "lr": float(lr[-1])}

    def train_step(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_weights: torch.Tensor,
        generator: torch.Generator,
        lr: float,
    ) -> torch.Tensor:
        """One step on a uint8 batch; returns its class-weighted loss, a 0-d tensor."""
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = lr
            group["weight_decay"] = self.config.weight_decay if i == 0 else 0.0
        (crops,) = self.augmentation(images, generator)
        restore = forward_restorer([self.model], self.device) if self._may_compile else None
        loss = self._compilation.run(
            lambda: self._forward_backward(crops, labels, class_weights), restore
        )
        self.optimizer.step()
        return loss

    def _forward_backward(
        self, crops: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor
    ) -> torch.Tensor:
        with self._autocast():
            logits = self.model(crops)
        loss = F.cross_entropy(logits.float(), labels, weight=class_weights)
        self._statistics.check(self._step, loss)
        if (self._step + 1) % self.check_every == 0:
            self._raise_if_non_finite()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach()

    def _raise_if_non_finite(self) -> None:
        bad = self._statistics.first_non_finite()
        if bad is None:
            return
        step, value = bad
        stopped = self._statistics.how_stopped(step, self._step, self.check_every)
        raise FloatingPointError(
            f"Fine-tuning loss is {value} at step {step + 1}: {stopped}. Lower lr or use "
            "precision='fp32'."
        )

    @torch.no_grad()
    def _validate(
        self,
        images: TrainingImages,
        labels: torch.Tensor,
        indices: torch.Tensor,
        class_weights: torch.Tensor,
    ) -> dict[str, float]:
        """Class-weighted loss and balanced accuracy on the validation images, in eval mode."""
        self.model.eval()
        try:
            chunks = list(indices.split(self.config.batch_size))
            with self._autocast(), self._compilation.eager():
                logits = torch.cat(
                    [
                        self.model(
                            normalize(
                                batch.to(self.device), self.augmentation.mean, self.augmentation.std
                            )
                        ).float()
                        for batch in images.batches(chunks)
                    ]
                )
        finally:
            self.model.train()
        truth = labels[indices.to(self.device)]
        return {
            "validation_loss": F.cross_entropy(logits, truth, weight=class_weights).item(),
            "validation_balanced_accuracy": balanced_accuracy(logits, truth),
        }

    def _keep_if_best(self, epoch: int, row: dict[str, float]) -> int:
        """Remember the weights of a better epoch; epochs since the best one."""
        if "validation_balanced_accuracy" not in row:
            return 0
        score = (row["validation_balanced_accuracy"], -row["validation_loss"])
        if not self._best or score > tuple(self._best["score"]):
            self._best = {
                "score": list(score),
                "epoch": epoch,
                "state": {
                    name: value.detach().to("cpu", copy=True)
                    for name, value in self.model.state_dict().items()
                },
            }
        return epoch - self._best["epoch"]

    def _stop_interrupted(self, epochs_done: int, path: Path | None) -> None:
        where = f"after epoch {epochs_done}/{self.config.epochs}"
        if path is None:
            message = (
                f"Fine-tuning interrupted {where}; nothing was saved (checkpoint_dir is None). "
                "Pass checkpoint_dir to be able to resume an interrupted run."
            )
        else:
            message = (
                f"Fine-tuning interrupted {where}; saved {path}. To resume, call fit again "
                "with the same parameters, images, labels and checkpoint_dir="
                f"{os.fspath(self.checkpoint_dir)!r}."
            )
        logger.warning(message)
        raise KeyboardInterrupt(message)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _settings(
        self,
        images: TrainingImages,
        labels: torch.Tensor,
        train_indices: torch.Tensor,
        validation_indices: torch.Tensor | None,
        generator: torch.Generator,
    ) -> dict:
        """What identifies a run: a checkpoint is resumed only when all of it agrees."""
        augmentation = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self.augmentation).items()
        }
        split = [
            train_indices.tolist(),
            [] if validation_indices is None else validation_indices.tolist(),
        ]
        return {
            **asdict(self.config),
            "augmentation": augmentation,
            "precision": str(self.autocast_dtype or torch.float32),
            "drop_path": [
                float(module.drop_prob)
                for module in self.model.modules()
                if isinstance(getattr(module, "drop_prob", None), float)
            ],
            "seed": generator.initial_seed(),
            "images": images.fingerprint(),
            "labels": _digest(labels.tolist(), split),
            "initial_weights": self._initial_weights,
        }

    def _save_checkpoint(
        self, epochs_done: int, generator: torch.Generator, settings: dict, steps_per_epoch: int
    ) -> Path | None:
        if self.checkpoint_dir is None or not is_main_process():
            return None
        state = {
            "epoch": epochs_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (
                torch.cuda.get_rng_state(self.device)
                if self.device.type == "cuda"
                else torch.empty(0, dtype=torch.uint8)
            ),
            "config": settings,
            "history": self.history,
            "best": self._best,
        }
        path = self.checkpoint_dir / checkpoint_name(
            epochs_done * steps_per_epoch, CHECKPOINT_PREFIX
        )
        with atomic_write(path) as file:
            torch.save(state, file)
        for old in list_checkpoints(self.checkpoint_dir, CHECKPOINT_PREFIX)[self.checkpoint_keep :]:
            old.unlink(missing_ok=True)
        return path

    def _resume(self, generator: torch.Generator, settings: dict) -> tuple[int, int]:
        """Load the newest readable checkpoint of this run; (next epoch, epochs since best)."""
        if self.checkpoint_dir is None:
            return 0, 0
        path, state = newest_readable_checkpoint(
            self.checkpoint_dir, self.device, _CHECKPOINT_KEYS, CHECKPOINT_PREFIX
        )
        if path is None:
            return 0, 0
        refuse_another_run(path, state["config"], settings)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ValueError(
                f"Checkpoint {path} holds a different model ({error}); use another "
                "checkpoint_dir or delete the file."
            ) from error
        self.optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and len(state["cuda_rng"]):
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.history = {name: list(values) for name, values in state["history"].items()}
        self._best = state["best"]
        if self._best:
            self._best["state"] = {
                name: value.to("cpu") for name, value in self._best["state"].items()
            }
        epoch = int(state["epoch"])
        logger.info("Resuming fine-tuning from %s (epoch %d)", path, epoch + 1)
        since_best = epoch - 1 - self._best["epoch"] if self._best else 0
        return epoch, since_best


def _digest(*values: object) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()
