"""DINO (Caron et al. 2021) in pure torch: head, loss, trainer.

Nothing here imports scikit-learn; ``sparsam.DinoFeaturizer`` is the sklearn face. The
augmentation and the schedules live in the training core both loops share
(`sparsam.training.augment`, `sparsam.training.optimization`) and are re-exported here.
"""

from ..evaluation.quality import rankme
from ..training.augment import MultiCropAugmentation
from ..training.optimization import cosine_schedule, warmup_then_constant
from .head import DinoHead, MultiCropModel
from .loss import DinoLoss
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
