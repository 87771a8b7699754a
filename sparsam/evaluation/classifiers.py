"""The paper's three downstream classifiers on frozen features (`paper_classifiers`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import PowerTransformer
from sklearn.svm import SVC
from sklearn.utils.validation import _num_samples

__all__ = ["paper_classifiers"]


class _AdaptiveKNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """k-nearest neighbours whose k never exceeds the number of training samples.

    ``n_neighbors=None`` follows the paper's code: ``5 × n_classes`` neighbours (its
    ``KNeighborsClassifier(n_neighbors=8)`` is overridden to that in ``fit_classifier``).
    """

    def __init__(self, n_neighbors: int | None = None, weights: str = "distance") -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X: Any, y: Any) -> _AdaptiveKNeighborsClassifier:
        n_classes = len(np.unique(y))
        wanted = 5 * n_classes if self.n_neighbors is None else self.n_neighbors
        self.n_neighbors_ = int(min(wanted, _num_samples(X)))
        self.estimator_ = KNeighborsClassifier(n_neighbors=self.n_neighbors_, weights=self.weights)
        self.estimator_.fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.estimator_.predict_proba(X)


def paper_classifiers(random_state: int | None = None) -> dict[str, Pipeline]:
    """The paper's three downstream classifiers on frozen features, ready to fit.

    As in the original code (``reproducability/reproduce_results.py`` of
    IPMI-ICNS-UKE/sparsam), every classifier sits behind ``PowerTransformer() -> PCA()``; a
    ``PCA`` without ``n_components`` keeps ``min(n_samples, n_features)`` components, so it
    fits even on one sample per class.

    - ``"svm"``: ``SVC(kernel="rbf", C=1, class_weight="balanced")``. The paper's SVC also set
      ``probability=True`` to take the argmax of Platt-scaled probabilities; this preset
      predicts with the decision function, which needs no internal cross-validation and
      works with a single sample per class.
    - ``"logistic_regression"``: ``LogisticRegression(C=2.5, class_weight="balanced",
      max_iter=10000)``.
    - ``"knn"``: distance-weighted k-nearest neighbours with ``k = 5 × n_classes`` as in the
      paper's code, capped at the number of training samples.

    Parameters
    ----------
    random_state : int or None, default=None
        Passed to the estimators that draw random numbers (PCA's solver, the SVC).

    Returns
    -------
    dict of str to Pipeline
        Fresh, unfitted pipelines keyed ``"svm"``, ``"logistic_regression"``, ``"knn"``.
    """

    def head(classifier: BaseEstimator) -> Pipeline:
        return make_pipeline(PowerTransformer(), PCA(random_state=random_state), classifier)

    return {
        "svm": head(SVC(kernel="rbf", C=1.0, class_weight="balanced", random_state=random_state)),
        "logistic_regression": head(
            LogisticRegression(
                C=2.5, class_weight="balanced", max_iter=10_000, random_state=random_state
            )
        ),
        "knn": head(_AdaptiveKNeighborsClassifier(weights="distance")),
    }
