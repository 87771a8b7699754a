"""Few-shot evaluation of frozen features.

`FewShotSplit` and `few_shot_curve` implement the paper's protocol (exactly ``N``
labels per class, repeated draws, balanced accuracy); `budget_curve` scores what a user can
do before labeling: ``B`` images in total, chosen from the features alone;
`paper_classifiers` gives its three downstream classifiers; `LabeledOnly` lets a pipeline
train its featurizer on every image and its classifier on the labeled ones. `rankme` judges
embeddings without labels (their effective rank; Garrido et al. 2023).

The public import path of `sparsam.evaluation`, where the code lives (one module per job).
"""

from __future__ import annotations

from .evaluation import classifiers as _classifiers
from .evaluation.budget import BudgetCurveResult, budget_curve
from .evaluation.classifiers import paper_classifiers
from .evaluation.curve import FewShotCurveResult, few_shot_curve
from .evaluation.protocol import few_shot_scores, format_few_shot_table
from .evaluation.quality import rankme
from .evaluation.semi_supervised import LabeledOnly
from .evaluation.splits import FewShotSplit, check_class_labels, labeled_mask

__all__ = [
    "BudgetCurveResult",
    "FewShotCurveResult",
    "FewShotSplit",
    "LabeledOnly",
    "budget_curve",
    "check_class_labels",
    "few_shot_curve",
    "few_shot_scores",
    "format_few_shot_table",
    "labeled_mask",
    "paper_classifiers",
    "rankme",
]

# Pickles of a fitted paper_classifiers()["knn"] written before the evaluation package existed
# look its class up here.
_AdaptiveKNeighborsClassifier = _classifiers._AdaptiveKNeighborsClassifier
