"""sparsam: DINO self-supervised features for sparsely annotated medical images.

Packages the method of Nielsen et al., "Self-Supervision for Medical Image Classification"
(Bioengineering 2023) as scikit-learn estimators.
"""

from . import datasets
from .backbones import load_backbone, push_backbone, save_backbone
from .classifier import SupervisedClassifier
from .featurizer import DinoFeaturizer
from .labeling import select_images_to_label, select_to_label
from .model_selection import FewShotSplit, few_shot_curve
from .version import __version__

__all__ = [
    "DinoFeaturizer",
    "FewShotSplit",
    "SupervisedClassifier",
    "__version__",
    "datasets",
    "few_shot_curve",
    "load_backbone",
    "push_backbone",
    "save_backbone",
    "select_images_to_label",
    "select_to_label",
]
