"""sparsam.model_selection.budget_curve: B labels chosen without labels, scored on the rest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

from sparsam import select_to_label
from sparsam.model_selection import BudgetCurveResult, budget_curve


def clustered(sizes, seed=0, spread=0.3):
    """Features of well-separated clusters, one per class, and the classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), 8))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(sizes)), sizes)
    return centres[y] * 10 + spread * rng.normal(size=(len(y), 8)), y


def test_default_budgets_are_one_two_five_and_ten_times_the_classes():
    features, y = clustered((40, 30, 20))
    result = budget_curve(features, y, n_repeats=1, random_state=0)
    assert result.budgets.tolist() == [3, 6, 15, 30]
    assert result.n_classes == 3


def test_score_is_the_classifier_on_the_chosen_images_scored_on_the_rest():
    features, y = clustered((40, 30, 20, 10), spread=4.0)
    estimator = KNeighborsClassifier(n_neighbors=1)
    result = budget_curve(
        features, y, budgets=[8], methods=["kmeans"], estimator=estimator, n_repeats=2,
        random_state=5,
    )  # fmt: skip
    seeds = np.random.RandomState(5).randint(np.iinfo(np.int32).max, size=2)
    for repeat, seed in enumerate(seeds):
        chosen = select_to_label(features, 8, method="kmeans", random_state=int(seed))
        rest = np.setdiff1d(np.arange(len(y)), chosen)
        model = KNeighborsClassifier(n_neighbors=1).fit(features[chosen], y[chosen])
        expected = balanced_accuracy_score(y[rest], model.predict(features[rest]))
        assert result.scores["kmeans"][8][repeat] == pytest.approx(expected)
        assert result.coverage["kmeans"][8][repeat] == len(np.unique(y[chosen])) / 4


def test_classes_without_a_label_cannot_be_predicted():
    features, y = clustered((50, 50, 50, 50))
    result = budget_curve(features, y, budgets=[2], methods=["typiclust"], n_repeats=3)
    # Two labels reach at most two of four classes: at most half the recall on average.
    assert np.all(result.scores["typiclust"][2] <= 0.5 + 1e-12)
    assert np.all(result.coverage["typiclust"][2] <= 0.5)


def test_a_single_labeled_class_predicts_that_class_everywhere():
    features, y = clustered((60, 60, 60))
    result = budget_curve(features, y, budgets=[1], methods=["random"], n_repeats=2)
    np.testing.assert_allclose(result.scores["random"][1], 1 / 3)


def test_selection_beats_random_on_imbalanced_separated_classes():
    features, y = clustered((300, 120, 50, 20, 8))
    result = budget_curve(features, y, budgets=[5], n_repeats=5, random_state=0)
    assert result.mean_coverage("typiclust")[0] == 1.0
    assert result.mean_coverage("random")[0] < 1.0
    assert result.mean("typiclust")[0] > result.mean("random")[0] + 0.05


def test_same_random_state_gives_the_same_curve():
    features, y = clustered((40, 20, 10), spread=3.0)
    first = budget_curve(features, y, budgets=[3, 6], n_repeats=2, random_state=1)
    second = budget_curve(features, y, budgets=[3, 6], n_repeats=2, random_state=1)
    assert first.to_dict() == second.to_dict()


def test_result_exports_table_dict_csv_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    features, y = clustered((30, 20, 10))
    result = budget_curve(features, y, budgets=[3, 6], n_repeats=2, random_state=0)
    assert isinstance(result, BudgetCurveResult)
    table = result.table()
    assert "typiclust" in table and "random" in table and "B=6 (2×)" in table
    assert json.loads(json.dumps(result.to_dict()))["budgets"] == [3, 6]
    result.to_csv(tmp_path / "curve.csv")
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0] == "method,budget,seed,balanced_accuracy,class_coverage"
    assert len(lines) == 1 + 2 * 2 * 2
    ax = result.plot()
    assert ax.get_xlabel() == "Images labeled in total (budget)"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["typiclust", "random"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["uncertainty"]}, "methods must be a non-empty sequence"),
        ({"methods": []}, "methods must be a non-empty sequence"),
        ({"budgets": [60]}, "leaves none of the 60"),
        ({"budgets": []}, "budgets is empty"),
        ({"budgets": [0]}, "every budget must be a positive int"),
        ({"n_repeats": 0}, "n_repeats must be a positive int"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(kwargs, message):
    features, y = clustered((30, 30))
    with pytest.raises(ValueError, match=message):
        budget_curve(features, y, **kwargs)


def test_labels_must_match_the_features():
    features, y = clustered((10, 10))
    with pytest.raises(ValueError, match="one class per row of features"):
        budget_curve(features, y[:-1])
