"""DINO (Caron et al. 2021) in pure torch: augmentation, head, loss, schedules, trainer.

Nothing here imports scikit-learn; ``sparsam.DinoFeaturizer`` is the sklearn face.
"""

from ..evaluation.quality import rankme
from .augment import MultiCropAugmentation
from .head import DinoHead, MultiCropModel
from .loss import DinoLoss
from .schedules import cosine_schedule, warmup_then_constant
from .trainer import CollapseWarning, DinoTrainer, TrainingConfig

__all__ = [
    "CollapseWarning",
    "DinoHead",
    "DinoLoss",
    "DinoTrainer",
    "MultiCropAugmentation",
    "MultiCropModel",
    "TrainingConfig",
    "cosine_schedule",
    "rankme",
    "warmup_then_constant",
]
