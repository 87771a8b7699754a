"""scikit-learn's estimator contracts on images, where its own checks feed tabular data.

``test_sklearn_conventions.py`` shows that the checks which fit on 2-D arrays fail with
sparsam's refusal of them; here the same contracts hold on image arrays: ``fit`` changes no
parameter and no public attribute, ``transform`` and ``predict`` change nothing, rows do not
depend on their order or on the other rows of the batch, and every accepted dtype of one image
gives the same features. The two real departures have their own tests: integer arrays other
than uint8 and uint16 are refused (their range is ambiguous), and with the KoLeo term on (the
default) a fit needs at least 2 images.
"""

import copy

import numpy as np
import pytest
from conftest import DEEP_VIT_PARAMS
from sklearn.base import clone

from sparsam import DinoFeaturizer, SupervisedClassifier

CLASSIFIER_PARAMS = {
    "backbone": DEEP_VIT_PARAMS["backbone"],
    "backbone_kwargs": DEEP_VIT_PARAMS["backbone_kwargs"],
    "image_size": 16,
    "epochs": 1,
    "batch_size": 8,
    "drop_path_rate": 0.2,
    "random_state": 0,
    "verbose": 0,
}


def public_state(estimator) -> dict:
    """Public attributes that are not fitted ones (no trailing underscore): the parameters."""
    return {
        name: copy.deepcopy(value)
        for name, value in vars(estimator).items()
        if not name.startswith("_") and not name.endswith("_")
    }


@pytest.fixture(scope="module")
def estimators(tiny_images, tiny_labels):
    """A fitted featurizer (3 blocks, drop-path) and classifier, and their parameters before fit."""
    featurizer = DinoFeaturizer(**copy.deepcopy(DEEP_VIT_PARAMS))
    classifier = SupervisedClassifier(**copy.deepcopy(CLASSIFIER_PARAMS))
    before = {"featurizer": public_state(featurizer), "classifier": public_state(classifier)}
    featurizer.fit(tiny_images)
    classifier.fit(tiny_images, tiny_labels)
    return {"featurizer": featurizer, "classifier": classifier, "before": before}


def outputs(estimator, images):
    if isinstance(estimator, DinoFeaturizer):
        return estimator.transform(images)
    return estimator.decision_function(images)


@pytest.mark.parametrize("name", ["featurizer", "classifier"])
def test_fit_changes_no_parameter_and_no_public_attribute(estimators, name):
    estimator = estimators[name]
    after = public_state(estimator)
    before = estimators["before"][name]
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert repr(after[key]) == repr(value), key
    assert clone(estimator).get_params() == estimator.get_params()


@pytest.mark.parametrize("name", ["featurizer", "classifier"])
def test_transform_and_predict_change_nothing_in_the_estimator(estimators, name, tiny_images):
    estimator = estimators[name]
    state = dict(vars(estimator))
    outputs(estimator, tiny_images)
    if name == "classifier":
        estimator.predict(tiny_images)
        estimator.predict_proba(tiny_images)
    assert vars(estimator).keys() == state.keys()
    assert all(vars(estimator)[key] is value for key, value in state.items())


@pytest.mark.parametrize("name", ["featurizer", "classifier"])
def test_rows_follow_the_order_of_the_images(estimators, name, tiny_images):
    estimator = estimators[name]
    order = np.random.default_rng(0).permutation(len(tiny_images))
    np.testing.assert_allclose(
        outputs(estimator, tiny_images[order]),
        outputs(estimator, tiny_images)[order],
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("name", ["featurizer", "classifier"])
def test_a_row_does_not_depend_on_the_other_images_of_the_batch(estimators, name, tiny_images):
    estimator = estimators[name]
    whole = outputs(estimator, tiny_images)
    in_parts = np.concatenate([outputs(estimator, part) for part in np.array_split(tiny_images, 7)])
    np.testing.assert_allclose(in_parts, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        outputs(estimator, tiny_images[3:4]), whole[3:4], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(np.float32) / 255,
        lambda x: x.astype(np.float64) / 255,
        lambda x: x.astype(np.uint16) * 257,
        lambda x: np.repeat(x[..., None], 3, axis=-1),
    ],
    ids=["float32", "float64", "uint16", "rgb"],
)
def test_every_accepted_dtype_gives_the_features_of_the_uint8_image(
    estimators, tiny_images, convert
):
    featurizer = estimators["featurizer"]
    np.testing.assert_array_equal(
        featurizer.transform(convert(tiny_images)), featurizer.transform(tiny_images)
    )


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8])
@pytest.mark.parametrize("method", ["fit", "transform"])
def test_integer_images_other_than_uint8_and_uint16_are_refused_naming_the_dtype(
    estimators, tiny_images, dtype, method
):
    # A departure from scikit-learn, which accepts any numeric dtype: an int64 array may hold
    # 0-255, 0-65535 or 12-bit values, and guessing would scale the images wrongly.
    images = tiny_images.astype(dtype)
    featurizer = estimators["featurizer"]
    call = featurizer.transform if method == "transform" else clone(featurizer).fit
    with pytest.raises(TypeError, match=rf"X has dtype {np.dtype(dtype).name}; expected uint8"):
        call(images)


def test_one_image_fit_is_refused_with_koleo_and_works_without(tiny_images):
    # A departure from scikit-learn's one-sample fit: the KoLeo term (on by default) needs a
    # nearest neighbour in the batch.
    params = {**DEEP_VIT_PARAMS, "epochs": 1}
    with pytest.raises(ValueError, match=r"KoLeo term needs at least 2 images per batch, got 1"):
        DinoFeaturizer(**params).fit(tiny_images[:1])
    featurizer = DinoFeaturizer(**params, koleo_weight=0.0).fit(tiny_images[:1])
    assert featurizer.transform(tiny_images[:1]).shape == (1, featurizer.n_features_out_)
