"""The DINO training loop: student and teacher, multi-crop, EMA, schedules, checkpoints."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .augment import MultiCropAugmentation
from .head import DinoHead, MultiCropModel
from .loss import DinoLoss, koleo_loss
from .schedules import cosine_schedule, warmup_then_constant

__all__ = ["CollapseWarning", "DinoTrainer", "TrainingConfig", "resolve_precision"]

logger = logging.getLogger("sparsam")

CHECKPOINT_NAME = "dino_checkpoint.pt"


class CollapseWarning(UserWarning):
    """DINO training ended with outputs that look collapsed (see ``DinoTrainer.fit``)."""


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings of one DINO run; defaults are DINO's ViT-S/16 values.

    ``lr`` is the base learning rate for a batch of 256; the rate used is
    ``lr * batch_size / 256`` (Goyal et al. 2017, as in DINO).
    """

    epochs: int = 100
    batch_size: int = 64
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    teacher_momentum: float = 0.996
    teacher_temperature: float = 0.04
    warmup_teacher_temperature: float = 0.04
    warmup_teacher_temperature_epochs: int = 0
    clip_grad: float | None = 3.0
    freeze_last_layer_epochs: int = 1
    koleo_weight: float = 0.0
    head_warmup_epochs: int = 0


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means full fp32.

    ``"auto"`` picks bf16 on CUDA devices that support it and fp32 on the CPU: on a 2-core
    CPU with AMX and AVX512-BF16, bf16 autocast made a ViT forward+backward 1.5x (ViT-S/16,
    224 px) to 2.4x (4 blocks, 96 wide, 16 px) slower than fp32, although a bare bf16 matrix
    product ran 4.7x faster: the casts autocast adds cost more than the matrix units save at
    these sizes (``benchmarks/RESULTS.md``). ``"bf16"`` forces autocast anywhere.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class DinoTrainer:
    """Self-distillation without labels (Caron et al. 2021) for one backbone.

    The student sees every crop, the teacher only the global crops; the teacher is an
    exponential moving average of the student and never receives a gradient.

    Parameters
    ----------
    backbone : nn.Module
        Maps images (b, 3, H, W) to CLS embeddings (b, d) for every crop size used. It
        becomes the student; the teacher starts as a copy of it.
    head : DinoHead
        The student's projection head; the teacher's is a copy.
    augmentation : MultiCropAugmentation
        Produces the global and local crops from a uint8 batch.
    loss : DinoLoss
        The DINO loss with its centre.
    config : TrainingConfig
        Optimisation settings.
    device : torch.device
        Where training runs.
    autocast_dtype : torch.dtype or None
        bf16 autocast when given, fp32 otherwise.
    checkpoint_dir : path-like or None
        When given, a checkpoint is written there after every epoch (atomically: a temporary
        file renamed into place), and training resumes from it when it exists.

    Attributes
    ----------
    student, teacher : MultiCropModel
        Backbone + head of each side; ``teacher.backbone`` is what the features come from.
    history : dict of list
        Per-epoch ``loss``, ``teacher_entropy``, ``teacher_mean_entropy``, ``kl``, ``lr``,
        ``weight_decay``, ``teacher_momentum``, ``teacher_temperature``, ``seconds``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: DinoHead,
        augmentation: MultiCropAugmentation,
        loss: DinoLoss,
        config: TrainingConfig,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.augmentation = augmentation
        self.loss = loss.to(device)
        self.student = MultiCropModel(backbone, head).to(device)
        self.teacher = copy.deepcopy(self.student).eval()
        self.teacher.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(_parameter_groups(self.student))
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.history: dict[str, list[float]] = {}

    def fit(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        progress: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, list[float]]:
        """Train on uint8 images (n, 3, H, W); returns the history.

        ``generator`` draws every random choice (batch order and augmentations), so the
        same seed on the CPU gives the same weights bit for bit. ``progress`` is called
        after every epoch with the epoch index and that epoch's history row.
        """
        config = self.config
        n_images = images.shape[0]
        batch_size = min(config.batch_size, n_images)
        # The last incomplete batch is dropped, as in DINO.
        steps_per_epoch = n_images // batch_size
        total_steps = config.epochs * steps_per_epoch
        scaled_lr = config.lr * batch_size / 256
        schedules = {
            "lr": cosine_schedule(
                scaled_lr, config.min_lr, total_steps, config.warmup_epochs * steps_per_epoch
            ),
            "weight_decay": cosine_schedule(
                config.weight_decay, config.weight_decay_end, total_steps
            ),
            "teacher_momentum": cosine_schedule(config.teacher_momentum, 1.0, total_steps),
            "teacher_temperature": warmup_then_constant(
                config.warmup_teacher_temperature,
                config.teacher_temperature,
                total_steps,
                config.warmup_teacher_temperature_epochs * steps_per_epoch,
            ),
        }
        # Decoded images stay uint8; on a GPU they move there once when they fit easily.
        if self.device.type == "cuda" and images.numel() < 2**31:
            images = images.to(self.device)
        start_epoch = self._resume(generator)
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            totals: dict[str, float] = {}
            order = torch.randperm(n_images, generator=generator)
            for batch in range(steps_per_epoch):
                step = epoch * steps_per_epoch + batch
                values = {name: float(schedule[step]) for name, schedule in schedules.items()}
                index = order[batch * batch_size : (batch + 1) * batch_size]
                batch_images = images[index.to(images.device)].to(self.device, non_blocking=True)
                stats = self.train_step(batch_images, generator, epoch, values)
                for name, value in stats.items():
                    totals[name] = totals.get(name, 0.0) + value
            row = {name: total / steps_per_epoch for name, total in totals.items()}
            row.update(values)
            row["seconds"] = time.perf_counter() - started
            for name, value in row.items():
                self.history.setdefault(name, []).append(value)
            logger.info(
                "DINO epoch %d/%d: loss %.4f, teacher entropy %.3f (max %.3f), KL %.4f",
                epoch + 1,
                config.epochs,
                row["loss"],
                row["teacher_entropy"],
                self.loss.max_entropy,
                row["kl"],
            )
            self._save_checkpoint(epoch, generator)
            if progress is not None:
                progress(epoch, row)
        self._warn_if_collapsed()
        return self.history

    def train_step(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        epoch: int,
        values: dict[str, float],
    ) -> dict[str, float]:
        """One DINO step on a uint8 batch; ``values`` holds this step's schedule values."""
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = values["lr"]
            group["weight_decay"] = values["weight_decay"] if i == 0 else 0.0
        # A fresh head at full learning rate damages pretrained features (a common complaint
        # in DINO's issue tracker): the backbone stays frozen while the new head warms up.
        self.student.backbone.requires_grad_(epoch >= self.config.head_warmup_epochs)
        crops = self.augmentation(images, generator)
        n_global = self.augmentation.global_crops
        with self._autocast():
            with torch.no_grad():
                _, teacher_output = self.teacher(crops[:n_global])
            student_embeddings, student_output = self.student(crops)
        dino_loss, stats = self.loss(
            student_output, teacher_output, values["teacher_temperature"], len(crops)
        )
        loss = dino_loss
        if self.config.koleo_weight > 0:
            global_embeddings = student_embeddings[: len(images) * n_global].chunk(n_global)
            koleo = torch.stack([koleo_loss(view) for view in global_embeddings]).mean()
            stats["koleo"] = koleo.detach()
            loss = loss + self.config.koleo_weight * koleo
        if not math.isfinite(loss.item()):
            raise FloatingPointError(
                f"DINO loss is {loss.item()} at epoch {epoch}; lower lr or use precision='fp32'."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad:
            nn.utils.clip_grad_norm_(self.student.parameters(), self.config.clip_grad)
        if epoch < self.config.freeze_last_layer_epochs:
            # DINO keeps the prototypes fixed at first: training them from the start is unstable.
            for parameter in self.student.head.last_layer.parameters():
                parameter.grad = None
        self.optimizer.step()
        self._update_teacher(values["teacher_momentum"])
        return {"loss": dino_loss.item(), **{name: value.item() for name, value in stats.items()}}

    @torch.no_grad()
    def _update_teacher(self, momentum: float) -> None:
        teacher = list(self.teacher.parameters())
        student = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1 - momentum)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _warn_if_collapsed(self) -> None:
        if not self.history:
            return
        entropy = self.history["teacher_entropy"][-1]
        mean_entropy = self.history["teacher_mean_entropy"][-1]
        if entropy > 0.95 * self.loss.max_entropy:
            warnings.warn(
                f"DINO looks collapsed to uniform outputs: teacher entropy {entropy:.3f} is "
                f"close to ln(out_dim) = {self.loss.max_entropy:.3f}. Try koleo_weight > 0, a "
                "lower teacher_temperature or a smaller out_dim, and judge the features by "
                "few-shot accuracy rather than by the loss.",
                CollapseWarning,
                stacklevel=3,
            )
        elif mean_entropy < 1.0:
            warnings.warn(
                f"DINO looks collapsed to one prototype: the batch-averaged teacher "
                f"distribution has entropy {mean_entropy:.3f} nats (every image gets the same "
                "output). Try a lower lr, a higher teacher_temperature, a lower center_momentum "
                "(a faster centre) or koleo_weight > 0.",
                CollapseWarning,
                stacklevel=3,
            )

    def _checkpoint_state(self, epoch: int, generator: torch.Generator) -> dict:
        return {
            "epoch": epoch,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "center": self.loss.center,
            "generator": generator.get_state(),
            "config": self._settings(),
            "history": self.history,
        }

    def _settings(self) -> dict:
        """What a checkpoint must agree on to be resumed: optimisation and augmentation."""
        augmentation = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self.augmentation).items()
        }
        return {**asdict(self.config), "augmentation": augmentation}

    def _save_checkpoint(self, epoch: int, generator: torch.Generator) -> None:
        if self.checkpoint_dir is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        target = self.checkpoint_dir / CHECKPOINT_NAME
        descriptor, temporary = tempfile.mkstemp(dir=self.checkpoint_dir, suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as file:
                torch.save(self._checkpoint_state(epoch, generator), file)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _resume(self, generator: torch.Generator) -> int:
        if self.checkpoint_dir is None:
            return 0
        path = self.checkpoint_dir / CHECKPOINT_NAME
        if not path.exists():
            return 0
        state = torch.load(path, map_location=self.device, weights_only=True)
        settings = self._settings()
        if state["config"] != settings:
            differing = sorted(
                name
                for name in settings.keys() | state["config"].keys()
                if settings.get(name) != state["config"].get(name)
            )
            raise ValueError(
                f"Checkpoint {path} was written with different training settings "
                f"({', '.join(differing)}); use another checkpoint_dir or delete the file."
            )
        try:
            self.student.load_state_dict(state["student"])
            self.teacher.load_state_dict(state["teacher"])
        except RuntimeError as error:
            raise ValueError(
                f"Checkpoint {path} holds a different model (backbone or head settings differ: "
                f"{error}); use another checkpoint_dir or delete the file."
            ) from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.center.copy_(state["center"])
        generator.set_state(state["generator"].cpu())
        self.history = {name: list(values) for name, values in state["history"].items()}
        logger.info("Resuming DINO from %s after epoch %d", path, state["epoch"] + 1)
        return int(state["epoch"]) + 1


def _parameter_groups(model: nn.Module) -> list[dict]:
    """Weight decay on weight matrices only: not on biases and normalisation (as in DINO)."""
    regularized, not_regularized = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.endswith(".bias") or parameter.ndim == 1:
            not_regularized.append(parameter)
        else:
            regularized.append(parameter)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]
