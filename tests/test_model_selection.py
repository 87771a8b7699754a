"""The few-shot protocol shared by the demo, the benchmarks and the learning test."""

import csv
import json
import os
import pickle
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from joblib import parallel_config
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, make_scorer
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedShuffleSplit,
    cross_val_score,
    cross_validate,
    train_test_split,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sparsam import FewShotSplit, few_shot_curve
from sparsam.model_selection import (
    FewShotCurveResult,
    few_shot_scores,
    format_few_shot_table,
    paper_classifiers,
)


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


# --- FewShotSplit -----------------------------------------------------------------------------


def _labels(sizes, n_unlabeled=0):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return np.concatenate([labels, np.full(n_unlabeled, -1)])


few_shot_problems = st.tuples(
    st.lists(st.integers(2, 30), min_size=2, max_size=5),  # class sizes
    st.integers(0, 10),  # unlabeled samples
    st.integers(1, 8),  # n_per_class
    st.integers(0, 2**16),  # random_state
)


@settings(max_examples=50, deadline=None)
@given(few_shot_problems)
def test_every_class_gets_n_per_class_training_samples_when_large_enough(problem):
    sizes, n_unlabeled, n_per_class, seed = problem
    y = _labels(sizes, n_unlabeled)
    splitter = FewShotSplit(n_per_class, n_repeats=3, random_state=seed)
    for train, _ in splitter.split(y, y):
        counts = np.bincount(y[train], minlength=len(sizes))
        expected = [n_per_class if s > n_per_class else max(s - 1, 1) for s in sizes]
        assert counts.tolist() == expected


@settings(max_examples=50, deadline=None)
@given(few_shot_problems)
def test_train_and_test_are_disjoint_and_the_test_part_is_every_other_labeled_sample(problem):
    sizes, n_unlabeled, n_per_class, seed = problem
    y = _labels(sizes, n_unlabeled)
    for train, test in FewShotSplit(n_per_class, n_repeats=3, random_state=seed).split(y, y):
        assert len(np.intersect1d(train, test)) == 0
        assert len(np.unique(train)) == len(train)
        labeled = np.flatnonzero(y != -1)
        assert np.array_equal(np.sort(test), np.setdiff1d(labeled, train))


@settings(max_examples=50, deadline=None)
@given(few_shot_problems)
def test_unlabeled_samples_are_never_drawn(problem):
    sizes, n_unlabeled, n_per_class, seed = problem
    y = _labels(sizes, n_unlabeled)
    for train, test in FewShotSplit(n_per_class, n_repeats=3, random_state=seed).split(y, y):
        assert np.all(y[train] != -1) and np.all(y[test] != -1)


@settings(max_examples=50, deadline=None)
@given(few_shot_problems)
def test_splits_are_reproducible_with_the_same_random_state(problem):
    sizes, n_unlabeled, n_per_class, seed = problem
    y = _labels(sizes, n_unlabeled)
    splitter = FewShotSplit(n_per_class, n_repeats=3, test_size=0.5, random_state=seed)
    for (train_a, test_a), (train_b, test_b) in zip(
        splitter.split(y, y), splitter.split(y, y), strict=True
    ):
        assert np.array_equal(train_a, train_b) and np.array_equal(test_a, test_b)


@settings(max_examples=50, deadline=None)
@given(few_shot_problems, st.one_of(st.integers(1, 5), st.floats(0.05, 0.95)))
def test_test_size_is_respected_and_the_test_part_stays_outside_training(problem, test_size):
    sizes, n_unlabeled, n_per_class, seed = problem
    y = _labels(sizes, n_unlabeled)
    left_after_training = sum(s - (n_per_class if s > n_per_class else s - 1) for s in sizes)
    assume(not isinstance(test_size, int) or test_size <= left_after_training)
    splitter = FewShotSplit(n_per_class, n_repeats=2, test_size=test_size, random_state=seed)
    for train, test in splitter.split(y, y):
        left = int(np.sum(y != -1)) - len(train)
        expected = (
            test_size if isinstance(test_size, int) else max(int(np.ceil(test_size * left)), 1)
        )
        assert len(test) == expected
        assert len(np.intersect1d(train, test)) == 0
        assert np.all(y[test] != -1)


def test_few_shot_split_trains_on_equal_counts_where_stratified_shuffle_split_is_proportional():
    y = _labels([80, 15, 6])
    stratified, _ = next(StratifiedShuffleSplit(1, train_size=15, random_state=0).split(y, y))
    few_shot, test = next(FewShotSplit(5, random_state=0).split(y, y))
    assert np.bincount(y[stratified]).tolist() == [12, 2, 1]
    assert np.bincount(y[few_shot]).tolist() == [5, 5, 5]
    assert len(test) == 75 + 10 + 1


def test_small_class_keeps_one_sample_for_testing():
    y = _labels([20, 3, 1])
    train, test = next(FewShotSplit(5, random_state=0).split(y, y))
    assert np.bincount(y[train]).tolist() == [5, 2, 1]
    assert np.bincount(y[test], minlength=3).tolist() == [15, 1, 0]


def test_small_class_raises_naming_the_class_and_its_size_when_asked():
    y = np.array(["big"] * 20 + ["rare"] * 3)
    with pytest.raises(ValueError, match=r"'rare' has 3 labeled samples"):
        next(FewShotSplit(5, small_classes="raise").split(y, y))


def test_min_class_size_drops_small_classes_from_both_parts():
    y = _labels([30, 30, 4])
    for train, test in FewShotSplit(2, min_class_size=10, random_state=0).split(y, y):
        assert 2 not in y[train] and 2 not in y[test]
        assert len(test) == 56


def test_a_class_of_exactly_min_class_size_is_kept():
    y = _labels([30, 10, 9])
    train, test = next(FewShotSplit(2, min_class_size=10, random_state=0).split(y, y))
    assert sorted(set(y[train])) == sorted(set(y[test])) == [0, 1]


def test_string_labels_are_split_per_class():
    y = np.array(["a"] * 10 + ["b"] * 10)
    train, _ = next(FewShotSplit(3, random_state=0).split(y, y))
    assert sorted(y[train].tolist()) == ["a"] * 3 + ["b"] * 3


def test_get_n_splits_is_n_repeats():
    assert FewShotSplit(1, n_repeats=7).get_n_splits() == 7


def test_repr_shows_the_parameters():
    assert "n_per_class=3" in repr(FewShotSplit(3)) and "n_repeats=5" in repr(FewShotSplit(3))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_per_class": 0}, "n_per_class must be a positive int"),
        ({"n_per_class": 1, "n_repeats": 0}, "n_repeats must be a positive int"),
        ({"n_per_class": 1, "small_classes": "drop"}, "small_classes must be one of"),
        ({"n_per_class": 1, "test_size": 1.5}, r"test_size as a float must be in \(0, 1\)"),
        ({"n_per_class": 1, "test_size": 0}, "test_size as an int must be at least 1"),
        ({"n_per_class": 1, "test_size": 999}, "test_size=999 exceeds"),
        ({"n_per_class": 1, "min_class_size": 100}, "No class has at least min_class_size=100"),
    ],
)
def test_invalid_parameters_raise_naming_the_parameter(params, message):
    y = _labels([10, 10])
    with pytest.raises(ValueError, match=message):
        next(FewShotSplit(**params).split(y, y))


@pytest.mark.parametrize("y", [[0.5, 1.7, 0.5, 1.7], [1.0, 2.0, np.nan, 1.0]], ids=["0.5", "nan"])
def test_continuous_labels_raise_naming_the_first_that_is_no_class(y):
    y = np.array(y * 5)
    first = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0]

    with pytest.raises(ValueError, match=rf"y\[{first}\] = {y[first]} is not a class label"):
        next(FewShotSplit(1).split(y, y))


def test_whole_number_float_labels_are_split_like_integers():
    y = np.repeat([0, 1, -1], 10)

    as_floats = list(FewShotSplit(3, random_state=0).split(y, y.astype(float)))
    as_integers = list(FewShotSplit(3, random_state=0).split(y, y))

    assert np.array_equal(np.concatenate(as_floats[0]), np.concatenate(as_integers[0]))


def test_all_unlabeled_y_raises():
    y = np.full(10, -1)
    with pytest.raises(ValueError, match="no labeled sample"):
        next(FewShotSplit(1).split(y, y))


@pytest.fixture
def toy_2d():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    features = rng.normal(size=(80, 2)) + labels[:, None] * 3
    return features, labels


def test_few_shot_split_works_as_cv_in_grid_search(toy_2d):
    search = GridSearchCV(SVC(), {"C": [0.1, 1.0]}, cv=FewShotSplit(5, n_repeats=3, random_state=0))
    search.fit(*toy_2d)
    assert search.best_score_ > 0.8
    assert len(search.cv_results_["split2_test_score"]) == 2


def test_cross_val_score_returns_one_score_per_repeat(toy_2d):
    scores = cross_val_score(SVC(), *toy_2d, cv=FewShotSplit(3, n_repeats=4, random_state=0))
    assert scores.shape == (4,)


def test_cross_validate_trains_on_n_per_class_samples(toy_2d):
    result = cross_validate(
        SVC(), *toy_2d, cv=FewShotSplit(4, n_repeats=2, random_state=0), return_estimator=True
    )
    assert [model.shape_fit_[0] for model in result["estimator"]] == [8, 8]


# --- few_shot_curve ---------------------------------------------------------------------------


def test_few_shot_curve_has_one_score_per_draw_for_each_n(separable):
    result = few_shot_curve(SVC(), *separable, n_per_class=(1, 5), n_repeats=3, random_state=0)
    assert result.n_per_class.tolist() == [1, 5]
    assert all(result.scores[n].shape == (3,) for n in (1, 5))
    assert result.mean.shape == result.std.shape == (2,)
    assert result.scoring == "balanced_accuracy"


def test_few_shot_curve_scores_separable_features_perfectly(separable):
    result = few_shot_curve(SVC(), *separable, n_per_class=(5,), n_repeats=2, random_state=0)
    assert np.all(result.scores[5] == 1.0)


def test_few_shot_curve_of_several_estimators_scores_them_on_the_same_draws(separable):
    features, labels = separable
    noisy = features + np.random.default_rng(2).normal(scale=3, size=features.shape)
    # random_state=None: separate calls draw differently, one call with a mapping may not.
    results = few_shot_curve(
        {"first": SVC(), "again": SVC(), "lr": LogisticRegression()},
        noisy,
        labels,
        n_per_class=(2, 5),
        n_repeats=4,
    )
    assert list(results) == ["first", "again", "lr"]
    assert all(
        np.array_equal(results["first"].scores[n], results["again"].scores[n]) for n in (2, 5)
    )
    alone = [few_shot_curve(SVC(), noisy, labels, n_per_class=(2,), n_repeats=4) for _ in range(2)]
    assert not np.array_equal(alone[0].scores[2], alone[1].scores[2])


def test_few_shot_curve_refuses_an_empty_mapping(separable):
    with pytest.raises(ValueError, match="empty mapping"):
        few_shot_curve({}, *separable)


def test_few_shot_curve_is_reproducible_with_an_int_random_state(separable):
    features, labels = separable
    noisy = features + np.random.default_rng(2).normal(scale=3, size=features.shape)
    first = few_shot_curve(SVC(), noisy, labels, n_per_class=(2,), random_state=3)
    second = few_shot_curve(SVC(), noisy, labels, n_per_class=(2,), random_state=3)
    assert np.array_equal(first.scores[2], second.scores[2])


def test_few_shot_curve_skips_n_larger_than_the_smallest_class_with_a_warning(separable):
    with pytest.warns(UserWarning, match="Skipping n_per_class=30"):
        result = few_shot_curve(SVC(), *separable, n_per_class=(1, 30), n_repeats=1)
    assert result.n_per_class.tolist() == [1]


def test_few_shot_curve_with_a_fixed_test_set_may_train_on_whole_classes(separable):
    features, labels = separable
    test = (features[::2], labels[::2])
    result = few_shot_curve(SVC(), features, labels, n_per_class=(30,), n_repeats=2, test=test)
    assert np.all(result.scores[30] == 1.0)


def test_few_shot_curve_scores_on_the_fixed_test_set(separable):
    features, labels = separable
    wrong = (features[:30], np.full(30, 2))  # every test label is class 2
    result = few_shot_curve(
        SVC(), features, labels, n_per_class=(5,), n_repeats=2, test=wrong, scoring="accuracy"
    )
    assert result.scoring == "accuracy"
    assert np.all(result.scores[5] == 0.0)


def test_few_shot_curve_accepts_a_list_of_samples(separable):
    features, labels = separable
    as_list = [row for row in features]
    result = few_shot_curve(SVC(), as_list, labels, n_per_class=(2,), n_repeats=2, random_state=0)
    assert result.scores[2].shape == (2,)


def test_few_shot_curve_runs_in_parallel(separable):
    serial = few_shot_curve(SVC(), *separable, n_per_class=(2,), n_repeats=2, random_state=0)
    # threads, not processes: starting loky workers on two busy cores took 13 s
    with parallel_config(backend="threading"):
        parallel = few_shot_curve(
            SVC(), *separable, n_per_class=(2,), n_repeats=2, random_state=0, n_jobs=2
        )
    assert np.array_equal(serial.scores[2], parallel.scores[2])


@pytest.mark.parametrize("n_repeats", [0, -1, 1.5])
def test_few_shot_curve_refuses_fewer_than_one_repeat(separable, n_repeats):
    with pytest.raises(ValueError, match=rf"n_repeats must be a positive int; got {n_repeats}"):
        few_shot_curve(SVC(), *separable, n_per_class=(1,), n_repeats=n_repeats, test=separable)


def test_few_shot_curve_refuses_continuous_labels(separable):
    features, labels = separable
    continuous = labels + 0.5

    with pytest.raises(ValueError, match=r"y\[0\] = 0.5 is not a class label"):
        few_shot_curve(SVC(), features, continuous, n_per_class=(1,), test=separable)


def test_few_shot_curve_raises_when_no_n_fits(separable):
    with pytest.raises(ValueError, match="No value of n_per_class"), pytest.warns(UserWarning):
        few_shot_curve(SVC(), *separable, n_per_class=(100,))


class _RecordingClassifier(ClassifierMixin, BaseEstimator):
    """Predicts the majority class and records the sample weights of every fit.

    ``fail_first=True`` makes the first fit of a test fail.
    """

    fits: ClassVar[list] = []

    def __init__(self, fail_first: bool = False) -> None:
        self.fail_first = fail_first

    def fit(self, X, y, sample_weight=None):
        if self.fail_first and not type(self).fits:
            type(self).fits.append("failed")
            raise RuntimeError("this fit fails")
        type(self).fits.append(None if sample_weight is None else np.asarray(sample_weight))
        values, counts = np.unique(y, return_counts=True)
        self.classes_ = values
        self.majority_ = values[np.argmax(counts)]
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


@pytest.fixture
def recording():
    _RecordingClassifier.fits = []
    yield _RecordingClassifier
    _RecordingClassifier.fits = []


def test_few_shot_scores_keep_the_draws_of_the_demo_protocol(separable):
    features, labels = separable
    noisy = features + np.random.default_rng(2).normal(scale=3, size=features.shape)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=0
    )
    expected = []
    for repeat in range(3):
        rng = np.random.default_rng(repeat)
        chosen = np.concatenate(
            [rng.choice(train[labels[train] == c], 2, replace=False) for c in range(3)]
        )
        model = make_pipeline(StandardScaler(), SVC(class_weight="balanced"))
        model.fit(noisy[chosen], labels[chosen])
        expected.append(balanced_accuracy_score(labels[test], model.predict(noisy[test])))

    scores = few_shot_scores(noisy, labels, n_per_class=(2,), n_repeats=3)

    assert scores[2].tolist() == expected


def test_few_shot_curve_scores_are_those_of_cross_validate_with_few_shot_split(separable):
    features, labels = separable
    noisy = features + np.random.default_rng(2).normal(scale=3, size=features.shape)
    seed = np.random.RandomState(3).randint(2**31 - 1)
    splitter = FewShotSplit(2, n_repeats=4, small_classes="raise", random_state=seed)

    result = few_shot_curve(SVC(), noisy, labels, n_per_class=(2,), n_repeats=4, random_state=3)

    expected = cross_validate(SVC(), noisy, labels, cv=splitter, scoring="balanced_accuracy")
    assert result.scores[2].tolist() == expected["test_score"].tolist()


def test_few_shot_curve_scores_a_failed_fit_as_error_score(separable, recording):
    with pytest.warns(FitFailedWarning):
        result = few_shot_curve(
            recording(fail_first=True), *separable, n_per_class=(1,), n_repeats=2, error_score=-1.0
        )

    assert result.scores[1].tolist() == [-1.0, pytest.approx(1 / 3)]


def test_few_shot_curve_raises_a_failed_fit_with_error_score_raise(separable, recording):
    with pytest.raises(RuntimeError, match="this fit fails"):
        few_shot_curve(
            recording(fail_first=True),
            *separable,
            n_per_class=(1,),
            n_repeats=2,
            error_score="raise",
        )


def test_few_shot_curve_passes_per_sample_params_indexed_by_each_draw(separable, recording):
    features, labels = separable
    weights = np.arange(len(labels), dtype=float)

    few_shot_curve(
        recording(),
        features,
        labels,
        n_per_class=(2,),
        n_repeats=3,
        params={"sample_weight": weights},
        random_state=0,
    )

    assert len(recording.fits) == 3
    for fitted in recording.fits:
        assert len(fitted) == 6
        assert np.bincount(labels[fitted.astype(int)]).tolist() == [2, 2, 2]


def test_few_shot_curve_with_a_fixed_test_set_fits_with_params_of_the_pool(separable, recording):
    features, labels = separable
    weights = np.arange(len(labels), dtype=float)

    few_shot_curve(
        recording(),
        features,
        labels,
        n_per_class=(30,),
        n_repeats=1,
        test=(features[::10], labels[::10]),
        params={"sample_weight": weights},
    )

    assert sorted(recording.fits[0].tolist()) == weights.tolist()


def test_few_shot_curve_routes_params_to_the_estimator_that_requests_them(separable, recording):
    weights = np.ones(len(separable[1]))
    with config_context(enable_metadata_routing=True):
        estimator = recording().set_fit_request(sample_weight=True)
        scorer = make_scorer(balanced_accuracy_score).set_score_request(sample_weight=False)

        few_shot_curve(
            estimator,
            *separable,
            n_per_class=(1,),
            n_repeats=2,
            scoring=scorer,
            params={"sample_weight": weights},
        )

    assert [len(fitted) for fitted in recording.fits] == [3, 3]


def test_few_shot_curve_refuses_params_routed_to_the_scorer_with_a_fixed_test_set(separable):
    weights = np.ones(len(separable[1]))
    with config_context(enable_metadata_routing=True):
        scorer = make_scorer(balanced_accuracy_score).set_score_request(sample_weight=True)

        with pytest.raises(ValueError, match=r"\['sample_weight'\] are routed to the scorer"):
            few_shot_curve(
                SVC(),
                *separable,
                n_per_class=(1,),
                scoring=scorer,
                test=separable,
                params={"sample_weight": weights},
            )


@pytest.fixture
def curve():
    return FewShotCurveResult(
        n_per_class=np.array([1, 5]),
        scores={1: np.array([0.5, 0.7]), 5: np.array([0.9, 0.9])},
    )


def test_curve_to_dict_is_json_serialisable(curve):
    restored = json.loads(json.dumps(curve.to_dict()))
    assert restored["mean"] == pytest.approx([0.6, 0.9])
    assert restored["scores"]["1"] == [0.5, 0.7]


def test_curve_to_frame_has_one_row_per_n(curve):
    frame = curve.to_frame()
    assert frame.columns.tolist() == ["n_per_class", "mean", "std"]
    assert frame["std"].tolist() == pytest.approx([0.1, 0.0])


def test_curve_to_frame_long_has_one_row_per_draw(curve):
    frame = curve.to_frame(long=True)
    assert frame.columns.tolist() == ["n_per_class", "draw", "balanced_accuracy"]
    assert len(frame) == 4


def test_curve_to_csv_writes_without_pandas(curve, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    path = tmp_path / "curve.csv"
    curve.to_csv(path)
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["n_per_class", "mean", "std"]
    assert [int(rows[1][0]), float(rows[1][1])] == [1, pytest.approx(0.6)]
    assert list(tmp_path.iterdir()) == [path]


def test_curve_to_csv_file_gets_the_permissions_of_the_umask(curve, tmp_path):
    previous = os.umask(0o022)
    try:
        curve.to_csv(tmp_path / "curve.csv")
    finally:
        os.umask(previous)

    assert (tmp_path / "curve.csv").stat().st_mode & 0o777 == 0o644


def test_curve_to_frame_without_pandas_names_the_missing_package(curve, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        curve.to_frame()


def test_curve_table_has_a_row_per_n(curve):
    lines = str(curve).splitlines()
    assert lines[0] == "balanced_accuracy"
    assert lines[3].split() == ["1", "0.600", "0.100", "2"]
    assert curve.table() == str(curve)


def test_curve_plot_passes_itself_to_plot_few_shot_curve(curve, monkeypatch):
    calls = []
    fake = types.ModuleType("sparsam.plotting")
    fake.plot_few_shot_curve = lambda results, ax=None, **kwargs: calls.append(
        (results, ax, kwargs)
    )
    monkeypatch.setitem(sys.modules, "sparsam.plotting", fake)
    curve.plot(ax="axes", label="dino", title="t")
    assert calls == [({"dino": curve}, "axes", {"title": "t"})]


# --- paper_classifiers ------------------------------------------------------------------------


@pytest.mark.parametrize("n_per_class", [1, 50])
@pytest.mark.parametrize("name", ["svm", "logistic_regression", "knn"])
def test_paper_classifiers_fit_and_predict_with_n_per_class_samples(name, n_per_class):
    # Three well separated clusters: every classifier must put fresh points in their own.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), n_per_class)
    features = rng.normal(size=(len(labels), 16)) + 3 * labels[:, None]
    model = paper_classifiers(random_state=0)[name].fit(features, labels)
    test_labels = np.repeat(np.arange(3), 10)
    test = rng.normal(size=(len(test_labels), 16)) + 3 * test_labels[:, None]
    np.testing.assert_array_equal(model.predict(test), test_labels)


def test_paper_classifiers_are_fresh_each_call():
    assert paper_classifiers()["svm"] is not paper_classifiers()["svm"]
    assert set(paper_classifiers()) == {"svm", "logistic_regression", "knn"}


def test_paper_knn_uses_five_neighbours_per_class_capped_at_the_training_size():
    features = np.random.default_rng(0).normal(size=(60, 4))
    labels = np.repeat(np.arange(3), 20)
    knn = paper_classifiers()["knn"]
    assert knn.fit(features, labels)[-1].n_neighbors_ == 15
    assert knn.fit(features[::10], labels[::10])[-1].n_neighbors_ == 6


def test_paper_knn_pickled_under_its_old_module_still_loads():
    # Before the evaluation package, the k-NN lived in sparsam/model_selection.py, and
    # pickles of a fitted paper_classifiers()["knn"] name it there. Protocol 0 spells the
    # module out as text, so it can be swapped for the old one.
    features = np.random.default_rng(0).normal(size=(30, 4))
    labels = np.repeat(np.arange(3), 10)
    knn = paper_classifiers()["knn"].fit(features, labels)
    pickled = pickle.dumps(knn, protocol=0)
    assert b"sparsam.evaluation.classifiers" in pickled
    old = pickle.loads(
        pickled.replace(b"sparsam.evaluation.classifiers", b"sparsam.model_selection")
    )
    np.testing.assert_array_equal(old.predict(features), knn.predict(features))
