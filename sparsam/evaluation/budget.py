"""The budget curve: B images chosen without labels, a classifier on them, scored on the rest.

`FewShotSplit` draws exactly ``N`` labels per class, which nobody can do before labeling.
`budget_curve` scores what a user can do: choose ``B`` images in total from the features
alone (`sparsam.select_to_label`), label them, train on them (a class that got no label
cannot be predicted) and score on every other image; per budget, per selection method, over
repeated seeds. `BudgetCurveResult` holds the scores and the fraction of classes that got at
least one label, and turns them into a table, a CSV file, a DataFrame or a plot.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.metrics import check_scoring
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils import check_random_state

from .._files import atomic_write
from ..labeling import METHODS, select_to_label
from .splits import check_class_labels, check_positive_int

__all__ = ["BUDGET_MULTIPLES", "BudgetCurveResult", "budget_curve"]

# Budgets as multiples of the number of classes: the 1x, 2x, 5x and 10x.
BUDGET_MULTIPLES = (1, 2, 5, 10)


@dataclass
class BudgetCurveResult:
    """Scores of a budget curve: per selection method and budget, one score per seed.

    Attributes
    ----------
    budgets : ndarray of int
        Images labeled in total, ascending.
    n_classes : int
        Number of classes in ``y``.
    scores : dict of str to dict of int to ndarray of shape (n_repeats,)
        ``scores[method][budget]``: the score of every seed.
    coverage : dict of str to dict of int to ndarray of shape (n_repeats,)
        ``coverage[method][budget]``: the fraction of the classes that received at least one
        label, per seed.
    scoring : str
        Name of the score (``"balanced_accuracy"`` unless told otherwise).
    """

    budgets: np.ndarray
    n_classes: int
    scores: dict[str, dict[int, np.ndarray]]
    coverage: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    scoring: str = "balanced_accuracy"

    @property
    def methods(self) -> list[str]:
        """The selection methods, in the order they were run."""
        return list(self.scores)

    def mean(self, method: str) -> np.ndarray:
        """Mean score of ``method`` over seeds, aligned with ``budgets``."""
        return np.array([self.scores[method][int(b)].mean() for b in self.budgets])

    def std(self, method: str) -> np.ndarray:
        """Standard deviation of the score of ``method`` over seeds, aligned with ``budgets``."""
        return np.array([self.scores[method][int(b)].std() for b in self.budgets])

    def mean_coverage(self, method: str) -> np.ndarray:
        """Mean fraction of classes with a label, aligned with ``budgets``."""
        return np.array([self.coverage[method][int(b)].mean() for b in self.budgets])

    def to_dict(self) -> dict[str, Any]:
        """Plain Python lists and floats, ready for ``json.dump``."""
        return {
            "scoring": self.scoring,
            "n_classes": self.n_classes,
            "budgets": [int(b) for b in self.budgets],
            "scores": {
                method: {int(b): per_budget[int(b)].tolist() for b in self.budgets}
                for method, per_budget in self.scores.items()
            },
            "coverage": {
                method: {int(b): per_budget[int(b)].tolist() for b in self.budgets}
                for method, per_budget in self.coverage.items()
            },
        }

    def _rows(self) -> tuple[list[str], list[list[Any]]]:
        columns = ["method", "budget", "seed", self.scoring, "class_coverage"]
        rows = [
            [method, int(b), seed, float(score), float(self.coverage[method][int(b)][seed])]
            for method in self.methods
            for b in self.budgets
            for seed, score in enumerate(self.scores[method][int(b)])
        ]
        return columns, rows

    def to_frame(self):
        """A pandas DataFrame, one row per method, budget and seed (columns ``method``,
        ``budget``, ``seed``, the score's name and ``class_coverage``)."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError(
                "BudgetCurveResult.to_frame needs pandas (pip install pandas); to_csv and "
                "to_dict work without it."
            ) from error
        columns, rows = self._rows()
        return pd.DataFrame(rows, columns=columns)

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the rows of `to_frame` as CSV (no pandas needed), atomically."""
        columns, rows = self._rows()
        with atomic_write(path, "w") as file:
            writer = csv.writer(file)
            writer.writerow(columns)
            writer.writerows(rows)

    def table(self) -> str:
        """A plain-text table: one row per method, ``mean ± std`` and the mean fraction of
        classes labeled (in brackets) per budget."""
        headers = [f"B={int(b)} ({int(b) / self.n_classes:g}×)" for b in self.budgets]
        cells = {
            method: [
                f"{m:.3f} ± {s:.3f} [{c:.2f}]"
                for m, s, c in zip(
                    self.mean(method), self.std(method), self.mean_coverage(method), strict=True
                )
            ]
            for method in self.methods
        }
        name_width = max(len("method"), *(len(method) for method in self.methods))
        widths = [
            max(len(h), *(len(row[i]) for row in cells.values())) for i, h in enumerate(headers)
        ]
        lines = [
            f"{self.scoring}, mean ± std over seeds [fraction of classes labeled]",
            "  ".join(
                [
                    "method".ljust(name_width),
                    *(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
                ]
            ),
        ]
        lines.append("-" * len(lines[-1]))
        for method, row in cells.items():
            values = (cell.rjust(w) for cell, w in zip(row, widths, strict=True))
            lines.append("  ".join([method.ljust(name_width), *values]))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Score against budget, one line per method with a band of ± one standard deviation
        (`sparsam.plotting.plot_few_shot_curve` with budgets on the x axis; needs
        matplotlib)."""
        from ..plotting import plot_few_shot_curve

        curves = {
            method: SimpleNamespace(
                n_per_class=self.budgets,
                mean=self.mean(method),
                std=self.std(method),
                scoring=self.scoring,
            )
            for method in self.methods
        }
        ax = plot_few_shot_curve(curves, ax=ax, **kwargs)
        ax.set_xlabel("Images labeled in total (budget)")
        return ax


def budget_curve(
    features: Any,
    y: Any,
    *,
    budgets: Sequence[int] | None = None,
    methods: Sequence[str] = ("typiclust", "random"),
    estimator: BaseEstimator | None = None,
    n_repeats: int = 5,
    scoring: str = "balanced_accuracy",
    random_state: int | np.random.RandomState | None = None,
) -> BudgetCurveResult:
    """Score selection methods as a user meets them: ``B`` labels chosen without labels.

    For every budget ``B``, method and seed: `sparsam.select_to_label` chooses ``B`` images
    from ``features`` alone, ``estimator`` is fitted on those images and their labels, and
    scored on all other images. A class that got no label cannot be predicted (with a single
    class labeled, every image is predicted as that class), so missing a rare class costs
    what it costs a user. Seed ``r`` is the same for every method and budget, so the methods
    are compared on paired draws.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Features of the images, e.g. a fitted `DinoFeaturizer`'s ``transform``.
    y : array-like of shape (n_samples,)
        The class of every image; only the chosen images' labels are used for training.
    budgets : sequence of int, optional
        Images labeled in total. Defaults to 1, 2, 5 and 10 times the number of classes
        (those that leave an image to score on).
    methods : sequence of str, default=("typiclust", "random")
        Methods of `sparsam.select_to_label`; ``"random"`` is the baseline.
    estimator : classifier, optional
        Defaults to ``StandardScaler() -> SVC(class_weight="balanced")``, the classifier of
        the benchmarks' few-shot tables.
    n_repeats : int, default=5
        Seeds per method and budget.
    scoring : str, default="balanced_accuracy"
        A scikit-learn scorer name.
    random_state : int, RandomState instance or None, default=None
        Draws the seeds of the repeats.

    Returns
    -------
    BudgetCurveResult

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sizes = [300, 100, 30, 10]
    >>> y = np.repeat(np.arange(4), sizes)
    >>> features = rng.normal(size=(4, 8))[y] * 3 + rng.normal(size=(len(y), 8))
    >>> result = budget_curve(features, y, budgets=[8], n_repeats=3, random_state=0)
    >>> result.methods
    ['typiclust', 'random']
    >>> bool(result.mean_coverage("typiclust")[0] >= result.mean_coverage("random")[0])
    True
    """
    features, y = _checked(features, y)
    classes = np.unique(y)
    check_positive_int(n_repeats, "n_repeats")
    budgets = _checked_budgets(budgets, len(classes), len(y))
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        raise ValueError(
            f"methods must be a non-empty sequence of {', '.join(map(repr, METHODS))}; got "
            f"{list(methods)!r}."
        )
    if estimator is None:
        estimator = make_pipeline(StandardScaler(), SVC(class_weight="balanced"))
    scorer = check_scoring(estimator, scoring=scoring)
    seeds = check_random_state(random_state).randint(np.iinfo(np.int32).max, size=n_repeats)
    scores: dict[str, dict[int, np.ndarray]] = {}
    coverage: dict[str, dict[int, np.ndarray]] = {}
    for method in methods:
        scores[method], coverage[method] = {}, {}
        for budget in budgets:
            runs = [
                _score_budget(features, y, budget, method, estimator, scorer, int(seed))
                for seed in seeds
            ]
            scores[method][budget] = np.array([score for score, _ in runs])
            coverage[method][budget] = np.array(
                [len(np.unique(got)) / len(classes) for _, got in runs]
            )
    return BudgetCurveResult(np.array(budgets), len(classes), scores, coverage, scoring)


def _score_budget(
    features: np.ndarray,
    y: np.ndarray,
    budget: int,
    method: str,
    estimator: BaseEstimator,
    scorer: Any,
    seed: int,
) -> tuple[float, np.ndarray]:
    """The score on the images not chosen, and the labels of the chosen ones."""
    chosen = select_to_label(features, budget, method=method, random_state=seed)
    rest = np.ones(len(y), dtype=bool)
    rest[chosen] = False
    if len(np.unique(y[chosen])) == 1:
        model = _OneClass().fit(features[chosen], y[chosen])
    else:
        model = clone(estimator).fit(features[chosen], y[chosen])
    with warnings.catch_warnings():
        # Every image of a class may have been chosen: balanced accuracy then warns that a
        # predicted class is absent from the rest, which is what happened.
        warnings.simplefilter("ignore", UserWarning)
        return float(scorer(model, features[rest], y[rest])), y[chosen]


class _OneClass(ClassifierMixin, BaseEstimator):
    """Predicts the one class it was fitted on: what a user with labels of one class gets."""

    def fit(self, X: Any, y: Any) -> _OneClass:
        self.classes_ = np.unique(y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.classes_[0])


def _checked(features: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features)
    y = np.asarray(y)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (one row per image); got shape {features.shape}.")
    if y.ndim != 1 or len(y) != len(features):
        raise ValueError(
            f"y must hold one class per row of features ({len(features)}); got shape {y.shape}."
        )
    check_class_labels(y)
    return features, y


def _checked_budgets(budgets: Sequence[int] | None, n_classes: int, n_samples: int) -> list[int]:
    """Budgets, ascending and distinct; by default the multiples of the class count that leave
    an image to score."""
    if budgets is None:
        budgets = [m * n_classes for m in BUDGET_MULTIPLES if m * n_classes < n_samples]
    budgets = list(budgets)
    if not budgets:
        raise ValueError("budgets is empty; expected at least one number of images to label.")
    for budget in budgets:
        check_positive_int(budget, "every budget")
        if budget >= n_samples:
            raise ValueError(
                f"A budget of {budget} images leaves none of the {n_samples} to score on; "
                f"expected budgets below {n_samples}."
            )
    return sorted(set(int(b) for b in budgets))
