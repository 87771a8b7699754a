"""Semi-supervised pipelines: DINO learns from every image, the classifier from labeled ones."""

from typing import ClassVar

import numpy as np
import pytest
from sklearn.base import is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import make_pipeline
from sklearn.semi_supervised import SelfTrainingClassifier
from sklearn.svm import SVC

from sparsam import DinoFeaturizer
from sparsam.model_selection import LabeledOnly


class SpyFeaturizer(DinoFeaturizer):
    """A DinoFeaturizer that records how many images each ``fit`` received."""

    fit_sizes: ClassVar[list[int]] = []

    def fit(self, X, y=None):
        SpyFeaturizer.fit_sizes.append(len(X))
        return super().fit(X, y)


@pytest.fixture
def half_unlabeled(tiny_labels):
    labels = tiny_labels.copy()
    labels[::2] = -1
    return labels


def test_dino_trains_on_all_images_and_the_classifier_on_labeled_ones(
    tiny_params, tiny_images, half_unlabeled
):
    SpyFeaturizer.fit_sizes = []
    pipeline = make_pipeline(SpyFeaturizer(**tiny_params), LabeledOnly(SVC()))
    pipeline.fit(tiny_images, half_unlabeled)
    n_labeled = int(np.sum(half_unlabeled != -1))
    assert SpyFeaturizer.fit_sizes == [len(tiny_images)]
    assert pipeline[-1].estimator_.shape_fit_[0] == n_labeled
    assert pipeline[-1].n_labeled_ == n_labeled
    assert set(pipeline.predict(tiny_images)) <= {0, 1}
    assert -1 not in pipeline.classes_


def test_self_training_pipeline_fits_and_predicts_end_to_end(
    tiny_params, tiny_images, half_unlabeled
):
    pipeline = make_pipeline(
        DinoFeaturizer(**tiny_params),
        # SVC(probability=True) is deprecated since scikit-learn 1.9; this is its replacement
        SelfTrainingClassifier(CalibratedClassifierCV(SVC(), ensemble=False, cv=3), max_iter=2),
    )
    pipeline.fit(tiny_images, half_unlabeled)
    assert pipeline.predict_proba(tiny_images).shape == (len(tiny_images), 2)
    assert set(pipeline.predict(tiny_images)) <= {0, 1}


def test_labeled_only_fits_on_samples_whose_label_is_not_minus_one():
    X = np.arange(12, dtype=float).reshape(6, 2)
    y = np.array([0, -1, 1, -1, 0, 1])
    model = LabeledOnly(SVC()).fit(X, y)
    assert model.estimator_.shape_fit_[0] == 4
    assert model.classes_.tolist() == [0, 1]


def test_labeled_only_raises_without_a_labeled_sample():
    with pytest.raises(ValueError, match="all 3 labels are -1"):
        LabeledOnly(SVC()).fit(np.zeros((3, 2)), [-1, -1, -1])


def test_labeled_only_exposes_only_the_methods_of_its_estimator():
    X = np.random.default_rng(0).normal(size=(10, 2))
    y = np.array([0, 1] * 5)
    model = LabeledOnly(SVC()).fit(X, y)
    assert model.decision_function(X).shape == (10,)
    assert not hasattr(model, "predict_proba")
    assert hasattr(LabeledOnly(CalibratedClassifierCV(SVC())), "predict_proba")


def test_labeled_only_score_ignores_unlabeled_samples():
    X = np.array([[0.0], [0.1], [5.0], [5.1], [2.5]])
    y = np.array([0, 0, 1, 1, -1])
    model = LabeledOnly(SVC()).fit(X, y)
    assert model.score(X, y) == 1.0


def test_labeled_only_is_a_classifier_when_its_estimator_is():
    assert is_classifier(LabeledOnly(SVC()))
