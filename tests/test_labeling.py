"""sparsam.select_to_label: which images to label first, from features alone."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from sparsam import select_images_to_label, select_to_label
from sparsam.labeling import METHODS, clusters, coverage

LEARNED = ("typiclust", "probcover", "kmeans")


def separated_clusters(sizes, width=16, spread=0.3, seed=0):
    """Features of well-separated Gaussian clusters of the given sizes, and each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), width))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    features = centres[cluster] * 10 + spread * rng.normal(size=(len(cluster), width))
    return features, cluster


# Eight clusters from 400 images down to 6: random picks of 8 miss the small ones.
IMBALANCED = (400, 200, 100, 50, 25, 12, 8, 6)


@pytest.mark.parametrize("method", LEARNED)
def test_selection_covers_every_well_separated_cluster(method):
    features, cluster = separated_clusters(IMBALANCED)
    chosen = select_to_label(features, len(IMBALANCED), method=method, random_state=0)
    assert sorted(set(cluster[chosen].tolist())) == list(range(len(IMBALANCED)))


def test_random_selection_misses_small_clusters_with_a_fixed_seed():
    features, cluster = separated_clusters(IMBALANCED)
    chosen = select_to_label(features, len(IMBALANCED), method="random", random_state=0)
    assert len(set(cluster[chosen].tolist())) < len(IMBALANCED)


@pytest.mark.parametrize("method", METHODS)
def test_incremental_selection_never_repeats_an_index(method):
    features, _ = separated_clusters((60, 40, 30, 20))
    labeled = np.array([], dtype=int)
    for _ in range(4):
        chosen = select_to_label(
            features, 7, method=method, already_labeled=labeled, random_state=1
        )
        assert len(chosen) == 7
        assert len(np.unique(chosen)) == 7
        assert not np.isin(chosen, labeled).any()
        labeled = np.concatenate([labeled, chosen])


@pytest.mark.parametrize("method", LEARNED)
def test_second_round_prefers_clusters_the_first_left_unlabeled(method):
    features, cluster = separated_clusters((80, 80, 80, 80, 80, 80))
    labeled = np.array([np.flatnonzero(cluster == c)[0] for c in range(3)])
    chosen = select_to_label(features, 3, method=method, already_labeled=labeled, random_state=0)
    assert sorted(cluster[chosen].tolist()) == [3, 4, 5]


def test_already_labeled_takes_a_boolean_mask():
    features, _ = separated_clusters((30, 30))
    mask = np.zeros(len(features), dtype=bool)
    mask[:25] = True
    chosen = select_to_label(features, 5, already_labeled=mask, random_state=0)
    assert np.all(chosen >= 25)


@pytest.mark.parametrize("method", METHODS)
def test_same_random_state_gives_the_same_indices(method):
    features, _ = separated_clusters((50, 30, 20, 10), spread=3.0)
    first = select_to_label(features, 9, method=method, random_state=3)
    second = select_to_label(features, 9, method=method, random_state=3)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("method", METHODS)
def test_asking_for_every_unlabeled_image_returns_each_once(method):
    features, _ = separated_clusters((12, 9, 7))
    chosen = select_to_label(
        features, 25, method=method, already_labeled=[0, 13, 27], random_state=0
    )
    assert sorted(chosen.tolist()) == sorted(set(range(28)) - {0, 13, 27})


def test_typiclust_takes_the_most_typical_image_of_a_cluster():
    # One cluster: a dense core and a straggler; the straggler is never the first choice.
    rng = np.random.default_rng(0)
    core = rng.normal(size=(40, 4)) * 0.05 + np.array([1.0, 0, 0, 0])
    features = np.concatenate([np.array([[0.2, 1.0, 0, 0]]), core])
    chosen = select_to_label(features, 1, random_state=0)
    assert chosen[0] != 0
    typical = clusters.typicality(features[1:])
    assert chosen[0] == 1 + int(np.argmax(typical))


def test_typicality_of_some_rows_equals_theirs_among_all():
    features, _ = separated_clusters((40, 30), spread=2.0)
    rows = np.array([0, 5, 41, 69])
    np.testing.assert_allclose(
        clusters.typicality(features, rows), clusters.typicality(features)[rows]
    )


def test_typicality_ignores_duplicates_of_an_image_as_its_neighbours_only_once():
    features = np.array([[0.0], [0.0], [0.0], [1.0], [3.0], [6.0]])
    expected = 1.0 / (np.array([0.0, 0.0, 1.0]).mean() + 1e-5)
    assert clusters.typicality(features)[0] == pytest.approx(expected)


def test_typiclust_samples_the_candidates_of_a_huge_cluster(monkeypatch):
    # A cluster above the limit: typicality is computed for a seeded sample, against the whole
    # cluster, and the pick still comes from its dense core.
    monkeypatch.setattr(clusters, "TYPICALITY_MAX_CANDIDATES", 50)
    rng = np.random.default_rng(0)
    core = rng.normal(size=(150, 4)) * 0.02 + np.array([1.0, 0, 0, 0])
    halo = rng.normal(size=(150, 4)) * 0.3 + np.array([1.0, 0, 0, 0])
    features = np.concatenate([core, halo])
    first = select_to_label(features, 1, random_state=0)
    np.testing.assert_array_equal(first, select_to_label(features, 1, random_state=0))
    assert first[0] < 150


def test_kmeans_method_takes_the_image_closest_to_the_centroid():
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.5, 0.5]])
    chosen = select_to_label(features, 1, method="kmeans", random_state=0)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    centre = unit.mean(axis=0)
    assert chosen[0] == int(np.argmin(np.linalg.norm(unit - centre, axis=1)))


def test_probcover_picks_the_ball_that_covers_most_first():
    # delta 0.5 on unit rows: the dense group around (1, 0) holds the largest ball.
    angles = np.concatenate([np.linspace(-0.05, 0.05, 9), [1.5, 1.55, 3.0]])
    features = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    chosen = select_to_label(features, 3, method="probcover", delta=0.5, random_state=0)
    assert chosen[0] in range(9)
    assert {int(c) for c in chosen[1:]} & {9, 10}
    assert 11 in chosen


def test_probcover_fills_with_random_images_once_everything_is_covered():
    features, _ = separated_clusters((10, 10))
    chosen = select_to_label(features, 6, method="probcover", delta=1.9, random_state=0)
    assert len(np.unique(chosen)) == 6


def test_estimated_delta_keeps_95_percent_of_balls_pure():
    features, cluster = separated_clusters((50, 50, 50), spread=2.0)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    delta = coverage.estimate_delta(unit, cluster)
    graph = coverage.ball_graph(unit, delta)
    pure = [
        np.all(cluster[graph.indices[graph.indptr[i] : graph.indptr[i + 1]]] == cluster[i])
        for i in range(len(unit))
    ]
    assert np.mean(pure) >= 0.95


def test_large_inputs_take_the_subsampled_paths(monkeypatch):
    # Above the size limits, k-means seeds from a sample, runs one start, and ProbCover counts
    # balls on a sample: the selection still covers every cluster and stays deterministic.
    monkeypatch.setattr(clusters, "FULL_KMEANS_MAX_IMAGES", 100)
    monkeypatch.setattr(clusters, "SEEDING_IMAGES", 150)
    monkeypatch.setattr(coverage, "MAX_COVERED_IMAGES", 300)
    features, cluster = separated_clusters((300, 200, 100, 60))
    for method in LEARNED:
        first = select_to_label(features, 4, method=method, random_state=0)
        np.testing.assert_array_equal(
            first, select_to_label(features, 4, method=method, random_state=0)
        )
        assert sorted(cluster[first].tolist()) == [0, 1, 2, 3], method


def test_duplicate_images_do_not_break_kmeans():
    features = np.repeat(np.eye(3), 10, axis=0)
    chosen = select_to_label(features, 12, random_state=0)
    assert len(np.unique(chosen)) == 12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be a positive int"),
        ({"n": 61}, "only 60 of the 60"),
        ({"n": 2, "method": "uncertainty"}, "method must be one of"),
        ({"n": 2, "delta": 0.3}, "delta is the ball radius of method='probcover'"),
        ({"n": 2, "method": "probcover", "delta": -1.0}, "delta must be a positive float"),
        ({"n": 2, "already_labeled": [3, 60]}, r"already_labeled\[1\] = 60 is not a row"),
        ({"n": 2, "already_labeled": np.ones(5, bool)}, "boolean mask of shape"),
        ({"n": 2, "already_labeled": [0.5]}, "must hold row indices"),
        ({"n": 59, "already_labeled": [0, 1]}, r"only 58 of the 60 .*2 already labeled"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(kwargs, message):
    features, _ = separated_clusters((30, 30))
    with pytest.raises(ValueError, match=message):
        select_to_label(features, **kwargs)


def test_non_finite_features_name_the_row():
    features, _ = separated_clusters((10, 10))
    features[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"features\[7\] holds NaN"):
        select_to_label(features, 2)


def test_features_must_be_two_dimensional():
    with pytest.raises(ValueError, match="2-D array"):
        select_to_label(np.zeros(10), 2)


class _Embeddings(TransformerMixin, BaseEstimator):
    """A fitted transformer returning fixed rows, NaN for the images it "skipped"."""

    def __init__(self, rows):
        self.rows = rows

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def transform(self, X):
        return self.rows[np.asarray(X)]


def test_images_variant_never_chooses_images_the_featurizer_skipped():
    features, cluster = separated_clusters((20, 20, 20))
    features[cluster == 2] = np.nan  # every image of the third cluster "unreadable"
    featurizer = _Embeddings(features).fit(None)
    chosen = select_images_to_label(featurizer, np.arange(len(features)), 30, random_state=0)
    assert not np.isin(chosen, np.flatnonzero(cluster == 2)).any()
    with pytest.raises(ValueError, match=r"only 40 of the 60 .*20 unreadable"):
        select_images_to_label(featurizer, np.arange(len(features)), 41, random_state=0)


def test_images_variant_embeds_with_a_fitted_featurizer(fitted_featurizer, tiny_images):
    chosen = select_images_to_label(fitted_featurizer, tiny_images, 5, random_state=0)
    expected = select_to_label(fitted_featurizer.transform(tiny_images), 5, random_state=0)
    np.testing.assert_array_equal(chosen, expected)


def test_images_variant_needs_a_fitted_featurizer():
    with pytest.raises(TypeError, match="has no transform"):
        select_images_to_label(object(), [1, 2], 1)
