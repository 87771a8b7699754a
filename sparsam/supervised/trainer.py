"""End-to-end fine-tuning of a backbone with a linear head: the paper's supervised baseline."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._progress import TrainingProgress
from ..data.cache import weights_digest
from ..data.training import TrainingImages
from ..training.augment import MultiCropAugmentation
from ..training.callbacks import Callback
from ..training.checkpoints import digest, settings_of
from ..training.compilation import compiled_regions, forward_restorer
from ..training.distributed import is_main_process
from ..training.loop import Run, TrainingLoop
from ..training.optimization import adamw, cosine_schedule, set_step_values
from ..training.transfer import on_device

__all__ = ["ClassifierModel", "FineTuneConfig", "FineTuneTrainer", "balanced_accuracy"]

logger = logging.getLogger("sparsam")

CHECKPOINT_PREFIX = "supervised"


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


class FineTuneTrainer(TrainingLoop):
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
        the CPU and every `sparsam.training.loop.CUDA_CHECK_EVERY` steps on a GPU.
    callbacks : sequence of Callback, default=()
        Called at the start and the end of every epoch (`sparsam.training.callbacks`); not
        part of the run identity.

    Attributes
    ----------
    model : ClassifierModel
        Backbone and head; after ``fit`` the best epoch's weights.
    backbone : nn.Module
        ``model.backbone``.
    history : dict of list
        Per epoch ``loss`` (class-weighted, on the augmented training crops), ``lr``,
        ``seconds`` and, with validation images, ``validation_loss`` and
        ``validation_balanced_accuracy``.
    best_epoch : int
        0-based epoch whose weights ``model`` holds after ``fit`` (the last one without
        validation images).
    """

    name = "Fine-tuning"
    checkpoint_prefix = CHECKPOINT_PREFIX
    checkpoint_keys = (
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
    interrupt_announcement = (
        "Interrupted: fine-tuning stops after this epoch and saves a checkpoint "
        "(press Ctrl-C again to stop at once, without one)."
    )
    resume_inputs = "images, labels"

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
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if augmentation.global_crops != 1 or augmentation.local_crops != 0:
            raise ValueError(
                "Fine-tuning trains on one crop per image: expected an augmentation with "
                f"global_crops=1 and local_crops=0, got {augmentation.global_crops} and "
                f"{augmentation.local_crops}."
            )
        super().__init__(
            augmentation,
            config,
            device,
            autocast_dtype,
            checkpoint_dir,
            checkpoint_keep,
            compile,
            check_every,
            callbacks,
        )
        self.model = ClassifierModel(backbone, n_classes).to(self.device)
        self.model.train()
        self.optimizer = adamw(self.model, self.device)
        self.best_epoch = -1
        self._epochs_without_improvement = 0
        self._initial_weights = weights_digest(self.model, {})

    @property
    def backbone(self) -> nn.Module:
        """The fine-tuned backbone (``model.backbone``)."""
        return self.model.backbone

    def fit(
        self,
        images: TrainingImages | torch.Tensor,
        labels: torch.Tensor,
        train_indices: torch.Tensor,
        validation_indices: torch.Tensor | None,
        class_weights: torch.Tensor,
        generator: torch.Generator,
        progress: TrainingProgress | None = None,
    ) -> dict[str, list[float]]:
        """Train on ``images[train_indices]``; score ``images[validation_indices]`` per epoch.

        ``images`` are the uint8 labeled images (n, 3, H, W) or a `TrainingImages` that
        decodes them, ``labels`` their class indices (n,), ``class_weights`` one weight per
        class. ``generator`` draws the batch order and the augmentations and seeds torch's
        global CPU and CUDA generators (drop-path) for the fit; the caller's states are
        restored afterwards, and the same seed on the CPU gives the same weights bit for
        bit, a resumed run included. ``progress`` (`sparsam._progress.TrainingProgress`)
        hears of every step and epoch. Returns the history.
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
        run = _FineTuneRun(
            images,
            generator,
            steps_per_epoch,
            settings,
            labels,
            train_indices,
            validation_indices,
            class_weights,
            batch_size,
            lr,
        )
        self._train(run, progress)
        if self._best:
            self.model.load_state_dict(self._best["state"])
        self.best_epoch = self._best.get("epoch", len(self.history.get("loss", [])) - 1)
        self.model.eval()
        return self.history

    def _start(self, run: _FineTuneRun) -> int:
        start = self._resume(run.generator, run.settings)
        self._step = start * run.steps_per_epoch
        return start

    def _stops_early(self, run: _FineTuneRun) -> bool:
        """Whether ``config.patience`` epochs brought no better validation score."""
        config = self.config
        epochs_without_improvement = self._epochs_without_improvement
        return (
            run.validation_indices is not None
            and config.patience is not None
            and epochs_without_improvement >= config.patience
        )

    def _run_epoch(
        self, run: _FineTuneRun, epoch: int, interrupted: Callable[[], bool]
    ) -> dict[str, float]:
        """One epoch of steps, then validation; the epoch's history row."""
        started = time.perf_counter()
        spe = run.steps_per_epoch
        order = run.train_indices[torch.randperm(len(run.train_indices), generator=run.generator)]
        row = self._train_epoch(
            run, order.split(run.batch_size), run.lr[epoch * spe : (epoch + 1) * spe]
        )
        if run.validation_indices is not None:
            row.update(
                self._validate(run.images, run.labels, run.validation_indices, run.class_weights)
            )
        row["seconds"] = time.perf_counter() - started
        self._epochs_without_improvement = self._keep_if_best(epoch, row)
        return row

    def _epoch_summary(self, epoch: int, row: dict[str, float]) -> tuple:
        validation = (
            ""
            if "validation_balanced_accuracy" not in row
            else f", validation balanced accuracy {row['validation_balanced_accuracy']:.3f}"
        )
        return (
            "Fine-tuning epoch %d/%d: loss %.4f%s",
            epoch + 1,
            self.config.epochs,
            row["loss"],
            validation,
        )

    def _save_after_epoch(self, run: _FineTuneRun, epochs_done: int) -> Path | None:
        return self._save_checkpoint(epochs_done, run.generator, run.settings, run.steps_per_epoch)

    def _interruption_point(self, run: _FineTuneRun, epochs_done: int) -> str:
        return f"after epoch {epochs_done}/{self.config.epochs}"

    def _train_epoch(
        self, run: _FineTuneRun, batches: tuple[torch.Tensor, ...], lr: np.ndarray
    ) -> dict[str, float]:
        """One pass over the batches of image indices; the epoch's mean loss and last lr."""
        self._begin_epoch()
        for indices, batch, step_lr in zip(
            batches, run.images.batches(list(batches)), lr, strict=True
        ):
            loss = self.train_step(
                batch.to(self.device, non_blocking=True),
                run.labels[on_device(indices, self.device)],
                run.class_weights,
                run.generator,
                float(step_lr),
            )
            self._statistics.add({"loss": loss * len(indices)})
            self._may_compile = False
            self._step += 1
            self._step_done()
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
        set_step_values(self.optimizer, lr, self.config.weight_decay)
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
        self._check_loss(loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach()

    def _non_finite_message(self, step: int, value: float, stopped: str) -> str:
        return (
            f"Fine-tuning loss is {value} at step {step + 1}: {stopped}. Lower lr or use "
            "precision='fp32'."
        )

    def _trained_model(self) -> nn.Module:
        return self.model

    def _compiled_modules(self) -> list[nn.Module]:
        """What ``compile`` compiles: the backbone's blocks and the head."""
        return [*compiled_regions(self.model.backbone), self.model.head]

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
            logits = self._infer(self.model, images.batches(chunks))
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

    def _settings(
        self,
        images: TrainingImages,
        labels: torch.Tensor,
        train_indices: torch.Tensor,
        validation_indices: torch.Tensor | None,
        generator: torch.Generator,
    ) -> dict:
        """What identifies a run: a checkpoint is resumed only when all of it agrees."""
        split = [
            train_indices.tolist(),
            [] if validation_indices is None else validation_indices.tolist(),
        ]
        return {
            **asdict(self.config),
            "augmentation": settings_of(self.augmentation),
            **self._identity(images, generator),
            "labels": digest(labels.tolist(), split),
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
        return self._write_checkpoint(state, epochs_done * steps_per_epoch)

    def _resume(self, generator: torch.Generator, settings: dict) -> int:
        """Load the newest readable checkpoint of this run; the epoch training continues at."""
        self._epochs_without_improvement = 0
        path, state = self._newest_checkpoint()
        if path is None:
            return 0
        cuda_rng = state["cuda_rng"] if len(state["cuda_rng"]) else None
        self._restore(
            path, state, settings, {"model": self.model}, generator, (state["torch_rng"], cuda_rng)
        )
        self._best = state["best"]
        if self._best:
            self._best["state"] = {
                name: value.to("cpu") for name, value in self._best["state"].items()
            }
        epoch = int(state["epoch"])
        logger.info("Resuming fine-tuning from %s (epoch %d)", path, epoch + 1)
        if self._best:
            self._epochs_without_improvement = epoch - 1 - self._best["epoch"]
        return epoch


@dataclass
class _FineTuneRun(Run):
    """A fine-tuning run's labels, split, class weights, batch size and learning rates."""

    labels: torch.Tensor
    train_indices: torch.Tensor
    validation_indices: torch.Tensor | None
    class_weights: torch.Tensor
    batch_size: int
    lr: np.ndarray
