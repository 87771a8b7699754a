"""The settings of one DINO run and the per-step schedules they make."""

from __future__ import annotations

from dataclasses import dataclass

from ..training.optimization import cosine_schedule, warmup_then_constant

__all__ = ["TrainingConfig", "dino_schedules"]


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


def dino_schedules(config: TrainingConfig, global_batch: int, steps_per_epoch: int) -> dict:
    """Per-step lr, weight decay, teacher momentum and temperature of a run.

    ``lr`` is scaled to the global batch (``lr * global_batch / 256``) and warmed up over
    ``warmup_epochs``; the teacher temperature warms up over
    ``warmup_teacher_temperature_epochs``; every other schedule is a cosine over all steps.
    """
    total_steps = config.epochs * steps_per_epoch
    scaled_lr = config.lr * global_batch / 256
    return {
        "lr": cosine_schedule(
            scaled_lr, config.min_lr, total_steps, config.warmup_epochs * steps_per_epoch
        ),
        "weight_decay": cosine_schedule(config.weight_decay, config.weight_decay_end, total_steps),
        "teacher_momentum": cosine_schedule(config.teacher_momentum, 1.0, total_steps),
        "teacher_temperature": warmup_then_constant(
            config.warmup_teacher_temperature,
            config.teacher_temperature,
            total_steps,
            config.warmup_teacher_temperature_epochs * steps_per_epoch,
        ),
    }
