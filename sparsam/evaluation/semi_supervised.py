"""Semi-supervised labels: fit a classifier on the labeled samples only (`LabeledOnly`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import _safe_indexing, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples, check_is_fitted, column_or_1d

from .splits import labeled_mask

__all__ = ["LabeledOnly"]


def _estimator_has(attribute: str) -> Callable[[Any], bool]:
    def check(self: LabeledOnly) -> bool:
        if hasattr(self, "estimator_"):
            return hasattr(self.estimator_, attribute)
        return hasattr(self.estimator, attribute)

    return check


class LabeledOnly(MetaEstimatorMixin, BaseEstimator):
    """Fit a supervised estimator on the labeled samples only (``y != -1``).

    Lets a pipeline fit its unsupervised steps on every sample and its classifier on the
    labeled ones: in ``make_pipeline(DinoFeaturizer(), LabeledOnly(SVC()))`` DINO trains on
    all images, labeled or not, and the SVC only on those whose label is not -1.

    Parameters
    ----------
    estimator : estimator
        Cloned and fitted on the labeled samples.

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone.
    classes_ : ndarray
        Classes of ``estimator_`` (never -1).
    n_labeled_ : int
        Number of labeled samples ``estimator_`` was fitted on.
    """

    def __init__(self, estimator: BaseEstimator) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any, **fit_params: Any) -> LabeledOnly:
        """Fit a clone of ``estimator`` on the samples whose label is not -1."""
        y = column_or_1d(np.asarray(y))
        if _num_samples(X) != len(y):
            raise ValueError(
                f"X and y have different lengths: X has {_num_samples(X)} samples, "
                f"y has {len(y)}; expected the same number."
            )
        labeled = np.flatnonzero(labeled_mask(y))
        if len(labeled) == 0:
            raise ValueError(
                f"LabeledOnly got no labeled sample: all {len(y)} labels are -1; expected at "
                "least one label other than -1."
            )
        self.estimator_ = clone(self.estimator).fit(
            _safe_indexing(X, labeled), y[labeled], **fit_params
        )
        self.n_labeled_ = len(labeled)
        return self

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator_.classes_

    @available_if(_estimator_has("predict"))
    def predict(self, X: Any) -> np.ndarray:
        """Predictions of ``estimator_``."""
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of ``estimator_``."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """Decision function of ``estimator_``."""
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("score"))
    def score(self, X: Any, y: Any) -> float:
        """Score of ``estimator_`` on the labeled samples of ``X, y``."""
        check_is_fitted(self)
        y = column_or_1d(np.asarray(y))
        labeled = np.flatnonzero(labeled_mask(y))
        return self.estimator_.score(_safe_indexing(X, labeled), y[labeled])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.input_tags = inner.input_tags
        return tags
