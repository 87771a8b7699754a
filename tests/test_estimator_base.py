"""What both estimators get from their shared base: fitted state, shared parameters, pickling.

scikit-learn's rule for fitted state: ``*_`` attributes are assigned only once ``fit`` has
succeeded (a failed refit keeps the previous model whole, never the old network with a new
``data_config_``), and ``transform`` or ``predict`` change no attribute. The parameters the two
estimators share have one name and one type: ``blur`` and ``perspective_p`` take a probability
for every crop or one per crop in both.
"""

import copy
import pickle

import numpy as np
import pytest
from conftest import DEEP_VIT_PARAMS, TINY_PARAMS

from sparsam import DinoFeaturizer, SupervisedClassifier
from sparsam.dino.trainer import DinoTrainer
from sparsam.supervised.trainer import FineTuneTrainer

CLASSIFIER_PARAMS = {
    "backbone": DEEP_VIT_PARAMS["backbone"],
    "backbone_kwargs": DEEP_VIT_PARAMS["backbone_kwargs"],
    "image_size": 16,
    "epochs": 1,
    "batch_size": 8,
    "random_state": 0,
    "verbose": 0,
}


class _TrainingFailed(Exception):
    """Raised by the patched trainers' fit, carrying the trainer that was built."""

    def __init__(self, trainer):
        super().__init__("training failed")
        self.trainer = trainer


@pytest.fixture
def failing_training(monkeypatch):
    """Make every training run fail once it starts, after the model and data were built."""

    def fail(self, *arguments, **keywords):
        raise _TrainingFailed(self)

    monkeypatch.setattr(DinoTrainer, "fit", fail)
    monkeypatch.setattr(FineTuneTrainer, "fit", fail)


def fitted_attributes(estimator) -> dict:
    return {name: value for name, value in vars(estimator).items() if name.endswith("_")}


def estimators():
    return {
        "featurizer": DinoFeaturizer(**copy.deepcopy(TINY_PARAMS)),
        "classifier": SupervisedClassifier(**copy.deepcopy(CLASSIFIER_PARAMS)),
    }


@pytest.mark.parametrize("name", ["featurizer", "classifier"])
def test_failed_refit_leaves_every_fitted_attribute_as_it_was(
    name, tiny_images, tiny_labels, monkeypatch
):
    estimator = estimators()[name].fit(tiny_images, tiny_labels)
    before = fitted_attributes(estimator)
    # Another input size: a refit that set data_config_ early would pair it with the old model.
    estimator.set_params(image_size=8, **({"local_crop_size": 4} if name == "featurizer" else {}))

    def fail(self, *arguments, **keywords):
        raise RuntimeError("loss is not finite")

    monkeypatch.setattr(DinoTrainer, "fit", fail)
    monkeypatch.setattr(FineTuneTrainer, "fit", fail)
    with pytest.raises(RuntimeError, match="not finite"):
        estimator.fit(tiny_images, tiny_labels)

    after = fitted_attributes(estimator)
    assert after.keys() == before.keys()
    assert all(after[key] is value for key, value in before.items())


@pytest.mark.parametrize("name", ["featurizer", "classifier"])
def test_failed_first_fit_sets_no_fitted_attribute(
    name, tiny_images, tiny_labels, failing_training
):
    estimator = estimators()[name]

    with pytest.raises(_TrainingFailed):
        estimator.fit(tiny_images, tiny_labels)

    assert fitted_attributes(estimator) == {}


def test_transform_with_memory_changes_no_attribute(fitted_featurizer, tiny_images, tmp_path):
    featurizer = copy.deepcopy(fitted_featurizer).set_params(memory=tmp_path)
    state = dict(vars(featurizer))

    featurizer.transform(tiny_images)
    featurizer.transform(tiny_images)

    assert vars(featurizer).keys() == state.keys()
    assert all(vars(featurizer)[key] is value for key, value in state.items())


def test_transform_of_a_featurizer_without_weights_digest_does_not_store_one(
    fitted_featurizer, tiny_images, tmp_path
):
    # Featurizers pickled before weights_digest_ existed lack it; the cache still works.
    featurizer = copy.deepcopy(fitted_featurizer).set_params(memory=tmp_path)
    expected = featurizer.transform(tiny_images)
    older = pickle.loads(pickle.dumps(featurizer))
    del older.weights_digest_
    state = dict(vars(older))

    embeddings = older.transform(tiny_images)

    np.testing.assert_array_equal(embeddings, expected)
    assert vars(older).keys() == state.keys()
    assert all(vars(older)[key] is value for key, value in state.items())


# blur and perspective_p: a probability for every crop, or one per crop, in both estimators.


def started_augmentation(estimator, images, labels=None):
    with pytest.raises(_TrainingFailed) as caught:
        estimator.fit(images, labels)
    return caught.value.trainer.augmentation


@pytest.mark.parametrize("name", ["featurizer", "classifier"])
@pytest.mark.parametrize(
    ("value", "expected"), [(0.3, (0.3, 0.3, 0.3)), ((0.3, 0.2, 0.1), (0.3, 0.2, 0.1))]
)
def test_blur_and_perspective_p_take_a_float_or_a_triple(
    name, value, expected, tiny_images, tiny_labels, failing_training
):
    estimator = estimators()[name].set_params(blur=value, perspective_p=value)

    augmentation = started_augmentation(estimator, tiny_images, tiny_labels)

    assert augmentation.blur_p == expected
    assert augmentation.perspective_p == expected


@pytest.mark.parametrize("name", ["featurizer", "classifier"])
@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("blur", 1.5),
        ("blur", (0.5, 1.5, 0.5)),
        ("blur", (0.5, 0.5)),
        ("perspective_p", -0.1),
        ("perspective_p", (0.5, 0.5, 0.5, 0.5)),
        ("perspective_p", (0.5, -0.5, 0.5)),
    ],
)
def test_impossible_blur_or_perspective_p_is_refused_naming_it(
    name, parameter, value, tiny_images, tiny_labels, failing_training
):
    estimator = estimators()[name].set_params(**{parameter: value})

    with pytest.raises(ValueError, match=parameter):
        estimator.fit(tiny_images, tiny_labels)


def test_classifier_crop_takes_the_first_entry_of_a_triple(tiny_images, tiny_labels):
    # The single training crop is a first global crop: the other entries change nothing.
    params = {**CLASSIFIER_PARAMS, "epochs": 2}
    as_float = SupervisedClassifier(**params, blur=0.5, perspective_p=0.5)
    as_triple = SupervisedClassifier(**params, blur=(0.5, 1.0, 0.0), perspective_p=(0.5, 0, 1))

    expected = as_float.fit(tiny_images, tiny_labels).decision_function(tiny_images)
    found = as_triple.fit(tiny_images, tiny_labels).decision_function(tiny_images)

    np.testing.assert_array_equal(found, expected)
