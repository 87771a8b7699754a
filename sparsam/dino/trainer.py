"""The DINO training loop: student and teacher, multi-crop, EMA, schedules, checkpoints."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import pickle
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .._files import atomic_write, check_writable_directory
from ..data.cache import weights_digest
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
    ``lr * batch_size / 256`` (Goyal et al. 2017, as in DINO). ``clip_grad_mode``
    ``"per_parameter"`` clips each parameter's gradient norm to ``clip_grad`` as DINO's
    ``utils.clip_gradients`` does; ``"global"`` clips the norm of all gradients together
    (``torch.nn.utils.clip_grad_norm_``). ``koleo_weight`` multiplies the sum of the KoLeo
    terms of the global crops, as in DINOv2.
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
    clip_grad_mode: str = "per_parameter"
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
    exponential moving average of the student's parameters and never receives a gradient.
    As in DINO's ``main_dino.py``, the teacher runs without stochastic depth or dropout, and
    its BatchNorm layers (XCiT has them; ViT does not) normalise with the statistics of the
    teacher's own batch and update their running statistics from it, so that the features
    of the fitted teacher (eval mode) use statistics of the training images. The student is
    trained in train mode whatever mode its backbone arrived in (``load_backbone`` returns
    models in eval mode).

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
        file renamed into place), and training resumes from it when it exists and was written
        by the same run: same seed, same images, same starting weights and the same settings.
        The directory must be writable; this is checked here, before any training.

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
        if config.clip_grad_mode not in ("per_parameter", "global"):
            raise ValueError(
                "clip_grad_mode must be 'per_parameter' or 'global', "
                f"got {config.clip_grad_mode!r}."
            )
        self.config = config
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.augmentation = augmentation
        self.loss = loss.to(device)
        self.checkpoint_dir = (
            check_writable_directory(checkpoint_dir, "checkpoint_dir")
            if checkpoint_dir is not None
            else None
        )
        self.student = MultiCropModel(backbone, head).to(device)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self._set_training_modes()
        self.optimizer = torch.optim.AdamW(_parameter_groups(self.student))
        self.history: dict[str, list[float]] = {}
        self._initial_weights = weights_digest(self.student, {})

    def fit(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        progress: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, list[float]]:
        """Train on uint8 images (n, 3, H, W); returns the history.

        ``generator`` draws every random choice (batch order and augmentations) and seeds
        torch's global CPU and CUDA generators, from which timm's drop-path draws, for the
        duration of the fit; the caller's global generator states are restored afterwards.
        The same seed on the CPU thus gives the same weights bit for bit, with or without
        drop-path, and a run resumed from a checkpoint equals an uninterrupted one.
        ``progress`` is called after every epoch with the epoch index and that epoch's
        history row.
        """
        config = self.config
        n_images = images.shape[0]
        batch_size = min(config.batch_size, n_images)
        if config.koleo_weight > 0 and batch_size < 2:
            raise ValueError(
                f"The KoLeo term needs at least 2 images per batch, got {n_images} image(s) "
                f"and batch_size={config.batch_size}: with one image its value is constant and "
                "its gradient zero. Pass more images or set koleo_weight=0."
            )
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
        # Hashing the images costs a pass over them; only a checkpoint needs the identity.
        settings = self._settings(images, generator) if self.checkpoint_dir is not None else {}
        # Decoded images stay uint8; on a GPU they move there once when they fit easily.
        if self.device.type == "cuda" and images.numel() < 2**31:
            images = images.to(self.device)
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            self._seed_global_generators(int(torch.randint(2**62, (1,), generator=generator)))
            start_epoch = self._resume(generator, settings)
            self._set_training_modes()
            for epoch in range(start_epoch, config.epochs):
                started = time.perf_counter()
                totals: dict[str, float] = {}
                order = torch.randperm(n_images, generator=generator)
                for batch in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + batch
                    values = {name: float(schedule[step]) for name, schedule in schedules.items()}
                    index = order[batch * batch_size : (batch + 1) * batch_size]
                    batch_images = images[index.to(images.device)].to(
                        self.device, non_blocking=True
                    )
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
                self._save_checkpoint(epoch, generator, settings)
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
            # DINOv2 sums the KoLeo terms of the global crops (never across two crops of one
            # image, whose embeddings should agree).
            global_embeddings = student_embeddings[: len(images) * n_global].chunk(n_global)
            koleo = torch.stack([koleo_loss(view) for view in global_embeddings]).sum()
            stats["koleo"] = koleo.detach()
            loss = loss + self.config.koleo_weight * koleo
        if not math.isfinite(loss.item()):
            raise FloatingPointError(
                f"DINO loss is {loss.item()} at epoch {epoch}; lower lr or use precision='fp32'."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad:
            self._clip_gradients(self.config.clip_grad)
        if epoch < self.config.freeze_last_layer_epochs:
            # DINO keeps the prototypes fixed at first: training them from the start is unstable.
            for parameter in self.student.head.last_layer.parameters():
                parameter.grad = None
        self.optimizer.step()
        self._update_teacher(values["teacher_momentum"])
        return {"loss": dino_loss.item(), **{name: value.item() for name, value in stats.items()}}

    def _seed_global_generators(self, seed: int) -> None:
        # Only the generators fit forks: the CPU's and the training device's.
        torch.random.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(seed)

    def _set_training_modes(self) -> None:
        self.student.train()
        # DINO's teacher: no drop-path (eval mode), BatchNorm on the batch's statistics.
        self.teacher.eval()
        for module in self.teacher.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()

    def _clip_gradients(self, max_norm: float) -> None:
        if self.config.clip_grad_mode == "global":
            nn.utils.clip_grad_norm_(self.student.parameters(), max_norm)
            return
        gradients = [p.grad for p in self.student.parameters() if p.grad is not None]
        if not gradients:
            return
        # DINO's utils.clip_gradients: every parameter's gradient norm at most max_norm.
        norms = torch.stack(torch._foreach_norm(gradients))
        scales = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(gradients, list(scales.unbind()))

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

    def _settings(self, images: torch.Tensor, generator: torch.Generator) -> dict:
        """What identifies a run: a checkpoint is resumed only when all of it agrees."""
        augmentation = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self.augmentation).items()
        }
        stochastic_depth = [
            float(module.drop_prob)
            for module in self.student.modules()
            if isinstance(getattr(module, "drop_prob", None), float)
        ]
        return {
            **asdict(self.config),
            "augmentation": augmentation,
            "loss": {
                "out_dim": self.loss.out_dim,
                "student_temperature": self.loss.student_temperature,
                "center_momentum": self.loss.center_momentum,
            },
            "precision": str(self.autocast_dtype or torch.float32),
            "drop_path": stochastic_depth,
            "seed": generator.initial_seed(),
            "images": _images_fingerprint(images),
            "initial_weights": self._initial_weights,
        }

    def _save_checkpoint(self, epoch: int, generator: torch.Generator, settings: dict) -> None:
        if self.checkpoint_dir is None:
            return
        state = {
            "epoch": epoch,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "center": self.loss.center,
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": settings,
            "history": self.history,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.checkpoint_dir / CHECKPOINT_NAME) as file:
            torch.save(state, file)

    def _resume(self, generator: torch.Generator, settings: dict) -> int:
        if self.checkpoint_dir is None:
            return 0
        path = self.checkpoint_dir / CHECKPOINT_NAME
        if not path.exists():
            return 0
        state = _read_checkpoint(path, self.device)
        differences = _differences(state["config"], settings)
        if differences:
            raise ValueError(
                f"Checkpoint {path} belongs to another run ({'; '.join(differences)}), and "
                "resuming it would return a model trained on something else. Use another "
                "checkpoint_dir, or delete the file to start afresh."
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
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.history = {name: list(values) for name, values in state["history"].items()}
        logger.info("Resuming DINO from %s after epoch %d", path, state["epoch"] + 1)
        return int(state["epoch"]) + 1


_CHECKPOINT_KEYS = (
    "epoch",
    "student",
    "teacher",
    "optimizer",
    "center",
    "generator",
    "torch_rng",
    "config",
    "history",
)


def _read_checkpoint(path: Path, device: torch.device) -> dict:
    """Load a checkpoint, or explain in the user's terms why it cannot be resumed."""
    advice = "delete it to start afresh, or pass another checkpoint_dir"
    if path.stat().st_size == 0:
        raise ValueError(f"Checkpoint {path} is empty (an interrupted copy?); {advice}.")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        # torch's own message suggests weights_only=False, which would run arbitrary code.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "weights_only" in reason or "Weights only load failed" in reason:
            reason = "it holds objects other than tensors and plain values"
        raise ValueError(
            f"Checkpoint {path} cannot be read: it is corrupt, truncated or not a sparsam "
            f"checkpoint ({reason}); {advice}."
        ) from None
    missing = [key for key in _CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(
            f"Checkpoint {path} lacks {', '.join(missing)}: it was written by an older sparsam "
            f"or another program; {advice}."
        )
    return state


def _differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two run identities, one entry per setting."""
    described = {
        "images": "other images",
        "initial_weights": "other starting weights (backbone, pretrained or seed)",
        "seed": "another random_state",
    }
    differences = []
    for name in sorted(saved.keys() | current.keys()):
        before, now = saved.get(name), current.get(name)
        if before == now:
            continue
        if name in described:
            differences.append(f"{name}: {described[name]}")
        else:
            differences.append(f"{name}: {before!r} in the checkpoint, {now!r} now")
    return differences


def _images_fingerprint(images: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().data)
    return digest.hexdigest()


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
