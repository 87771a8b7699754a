"""The few-shot protocol shared by the demo, the benchmarks and the learning test."""

import numpy as np
import pytest

from sparsam.model_selection import few_shot_scores, format_few_shot_table


@pytest.fixture
def separable():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    features = np.eye(3)[labels] * 5 + rng.normal(scale=0.1, size=(90, 3))
    return features, labels


def test_few_shot_scores_returns_one_score_per_draw_for_each_n(separable):
    scores = few_shot_scores(*separable, n_per_class=(1, 5), n_repeats=4)
    assert list(scores) == [1, 5]
    assert all(values.shape == (4,) for values in scores.values())


def test_separable_features_score_perfectly(separable):
    scores = few_shot_scores(*separable, n_per_class=(5,))
    assert np.all(scores[5] == 1.0)


def test_noise_features_score_near_chance(separable):
    _, labels = separable
    noise = np.random.default_rng(1).normal(size=(len(labels), 8))
    assert few_shot_scores(noise, labels, n_per_class=(5,))[5].mean() < 0.6


def test_few_shot_scores_are_reproducible(separable):
    features, labels = separable
    noisy = features + np.random.default_rng(2).normal(scale=3, size=features.shape)
    first = few_shot_scores(noisy, labels, n_per_class=(2,))
    second = few_shot_scores(noisy, labels, n_per_class=(2,))
    assert np.array_equal(first[2], second[2])


def test_table_has_a_row_per_method_and_a_column_per_n(separable):
    scores = few_shot_scores(*separable, n_per_class=(1, 5))
    table = format_few_shot_table({"a": scores, "bb": scores})
    lines = table.splitlines()
    assert "N=1" in lines[0] and "N=5" in lines[0]
    assert lines[2].startswith("a ") and lines[3].startswith("bb")
    assert "1.000 ± 0.000" in lines[2]


def test_table_shows_a_lone_mean_without_a_spread():
    table = format_few_shot_table({"peer": {10: np.array([0.5])}, "x": {10: np.array([1.0, 0.0])}})
    assert table.splitlines()[2].rstrip().endswith(" 0.500")
    assert "0.500 ± 0.500" in table.splitlines()[3]
