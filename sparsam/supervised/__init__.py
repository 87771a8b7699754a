"""Supervised fine-tuning in pure torch: the paper's baseline against DINO features.

Nothing here imports scikit-learn; ``sparsam.SupervisedClassifier`` is the sklearn face.
"""

from .trainer import ClassifierModel, FineTuneConfig, FineTuneTrainer, balanced_accuracy

__all__ = ["ClassifierModel", "FineTuneConfig", "FineTuneTrainer", "balanced_accuracy"]
