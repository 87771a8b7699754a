"""The paper's three downstream classifiers on frozen features (`paper_classifiers`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
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


class _MostProbableClass(ClassifierMixin, BaseEstimator):
    """``estimator`` whose ``predict`` is the class of highest ``predict_proba``.

    The paper's prediction rule (argmax of Platt-scaled SVC probabilities), and what makes a
    written table of probabilities agree with the predictions row by row: an ``SVC`` with
    ``probability=True`` otherwise predicts by its decision function, which can disagree.
    """

    def __init__(self, estimator: BaseEstimator) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any) -> _MostProbableClass:
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.estimator_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class _PlattScaledSVC(_MostProbableClass):
    """``svc`` with class probabilities by Platt scaling of cross-validated decision values.

    What ``SVC(probability=True)`` did inside libsvm (deprecated in scikit-learn 1.9), by
    scikit-learn's replacement, ``CalibratedClassifierCV(svc, ensemble=False)``, with at
    most 5 stratified folds and fewer when the smallest class has fewer labels.
    """

    def __init__(self, svc: SVC) -> None:
        self.svc = svc

    def fit(self, X: Any, y: Any) -> _PlattScaledSVC:
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < 2:
            raise ValueError(
                f"Class {classes[int(counts.argmin())]!r} has 1 label: the SVM's probabilities "
                "are fitted on held-out labels and need at least 2 labeled images per class; "
                "label another image of it, or use the logistic regression or kNN."
            )
        folds = StratifiedKFold(
            n_splits=int(min(5, counts.min())), shuffle=True, random_state=self.svc.random_state
        )
        self.estimator_ = CalibratedClassifierCV(
            clone(self.svc), method="sigmoid", cv=folds, ensemble=False
        ).fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = self.estimator_.n_features_in_
        return self


def paper_classifiers(
    random_state: int | None = None, probability: bool = False
) -> dict[str, Pipeline]:
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
    probability : bool, default=False
        Give every classifier a ``predict_proba`` and predict its most probable class, as
        the paper did: the SVC's probabilities come from Platt scaling of its decision values
        on up to 5 stratified cross-validation folds (the paper's ``probability=True``, in
        scikit-learn's ``CalibratedClassifierCV(ensemble=False)``; it needs 2 labels per
        class, and its probabilities are rough with very few), and each pipeline's last step
        predicts the argmax of the probabilities, so ``predict`` always agrees with
        ``predict_proba``.

    Returns
    -------
    dict of str to Pipeline
        Fresh, unfitted pipelines keyed ``"svm"``, ``"logistic_regression"``, ``"knn"``.
    """

    def head(classifier: BaseEstimator) -> Pipeline:
        if probability:
            classifier = _MostProbableClass(classifier)
        return make_pipeline(PowerTransformer(), PCA(random_state=random_state), classifier)

    svc = SVC(kernel="rbf", C=1.0, class_weight="balanced", random_state=random_state)
    return {
        "svm": head(_PlattScaledSVC(svc) if probability else svc),
        "logistic_regression": head(
            LogisticRegression(
                C=2.5, class_weight="balanced", max_iter=10_000, random_state=random_state
            )
        ),
        "knn": head(_AdaptiveKNeighborsClassifier(weights="distance")),
    }
