"""A fitted featurizer in parallel searches: worker processes embed exactly as this one does.

``GridSearchCV(n_jobs=2)`` pickles the pipeline, frozen featurizer included, to joblib's loky
worker processes; their scores must equal those of ``n_jobs=1`` bit for bit, so that a search
on one core, on several, or on a cluster (docs/grid_search_on_a_cluster.md) picks the same
setting.
"""

import copy
import warnings

import joblib
import numpy as np
import pytest
from conftest import TINY_PARAMS
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from sparsam import DinoFeaturizer, FewShotSplit
from sparsam.data.cache import CACHE_DIRECTORY
from sparsam.dino import CollapseWarning

# Depth 2, so that the student's second block runs drop-path during the fit.
BACKBONE_KWARGS = {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}


@pytest.fixture(scope="module")
def fitted(tiny_images):
    params = {**copy.deepcopy(TINY_PARAMS), "backbone_kwargs": BACKBONE_KWARGS}
    with warnings.catch_warnings():
        # One epoch is too short to escape a CollapseWarning; the weights are what matter.
        warnings.simplefilter("ignore", CollapseWarning)
        return DinoFeaturizer(**params).fit(tiny_images)


def summed_decision_function(estimator, X, y):
    """A score that moves with the last bit of any embedding, which accuracy rarely does."""
    return float(np.sum(estimator.decision_function(X), dtype=np.float64))


def grid_search(featurizer, n_jobs):
    return GridSearchCV(
        make_pipeline(FrozenEstimator(featurizer), SVC()),
        param_grid={"svc__C": [0.1, 1.0]},
        scoring={"accuracy": "accuracy", "decision": summed_decision_function},
        refit="accuracy",
        cv=FewShotSplit(n_per_class=5, n_repeats=2, random_state=0),
        n_jobs=n_jobs,
    )


def scores(search):
    """Every test score of every split and setting, and their means."""
    results = search.cv_results_
    names = sorted(
        name for name in results if name.startswith(("split", "mean_test")) and "test" in name
    )
    return {name: results[name] for name in names}


def assert_same_scores(search, reference):
    actual, expected = scores(search), scores(reference)
    assert actual.keys() == expected.keys()
    for name, values in expected.items():
        np.testing.assert_array_equal(actual[name], values, err_msg=name)


def test_grid_search_in_two_processes_scores_as_in_one(fitted, tiny_images, tiny_labels):
    one = grid_search(fitted, n_jobs=1).fit(tiny_images, tiny_labels)
    two = grid_search(fitted, n_jobs=2).fit(tiny_images, tiny_labels)

    assert_same_scores(two, one)
    assert two.best_params_ == one.best_params_


def test_grid_search_workers_embed_each_image_once_into_a_shared_cache(
    fitted, tiny_images, tiny_labels, tmp_path
):
    cached = copy.deepcopy(fitted).set_params(memory=tmp_path)

    uncached = grid_search(fitted, n_jobs=1).fit(tiny_images, tiny_labels)
    search = grid_search(cached, n_jobs=2).fit(tiny_images, tiny_labels)

    entries = list((tmp_path / CACHE_DIRECTORY).rglob("*.npy"))
    assert len(entries) == len(tiny_images)
    assert_same_scores(search, uncached)


def test_fitted_featurizer_round_trips_through_joblib_dump(fitted, tiny_images, tmp_path):
    joblib.dump(fitted, tmp_path / "featurizer.joblib")
    loaded = joblib.load(tmp_path / "featurizer.joblib")

    assert loaded.weights_digest_ == fitted.weights_digest_
    np.testing.assert_array_equal(loaded.transform(tiny_images), fitted.transform(tiny_images))


def test_fitted_featurizer_transforms_in_loky_workers_as_here(fitted, tiny_images):
    halves = (tiny_images[:20], tiny_images[20:])

    in_workers = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(fitted.transform)(half) for half in halves
    )

    for embeddings, half in zip(in_workers, halves, strict=True):
        np.testing.assert_array_equal(embeddings, fitted.transform(half))
