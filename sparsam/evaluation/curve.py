"""The few-shot curve: scores of an estimator trained on ``N`` labels per class, per ``N``.

`few_shot_curve` scores one estimator, or several on the same draws, with
`sklearn.model_selection.cross_validate` and a `FewShotSplit` per ``N`` (or a fixed test
set); `FewShotCurveResult` holds the scores of every draw and turns them into a table, a CSV
file, a DataFrame or a plot.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.base import BaseEstimator
from sklearn.metrics import check_scoring
from sklearn.model_selection import cross_validate
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.metadata_routing import get_routing_for_object
from sklearn.utils.validation import _num_samples, column_or_1d

from .._files import atomic_write
from .splits import FewShotSplit, check_class_labels, check_positive_int, labeled_mask

__all__ = ["FewShotCurveResult", "cross_validate_per_n", "few_shot_curve"]


@dataclass
class FewShotCurveResult:
    """Scores of a few-shot curve: one array of draws per number of labels per class.

    Attributes
    ----------
    n_per_class : ndarray of int
        Labels per class that were evaluated, ascending.
    scores : dict of int to ndarray of shape (n_repeats,)
        The score of every draw, keyed by labels per class.
    scoring : str
        Name of the score (``"balanced_accuracy"`` unless told otherwise).
    mean, std : ndarray
        Mean and standard deviation over draws, aligned with ``n_per_class``.
    """

    n_per_class: np.ndarray
    scores: dict[int, np.ndarray]
    scoring: str = "balanced_accuracy"

    @property
    def mean(self) -> np.ndarray:
        """Mean score over draws, aligned with ``n_per_class``."""
        return np.array([self.scores[int(n)].mean() for n in self.n_per_class])

    @property
    def std(self) -> np.ndarray:
        """Standard deviation over draws, aligned with ``n_per_class``."""
        return np.array([self.scores[int(n)].std() for n in self.n_per_class])

    def to_dict(self) -> dict[str, Any]:
        """Plain Python lists and floats, ready for ``json.dump``."""
        return {
            "scoring": self.scoring,
            "n_per_class": [int(n) for n in self.n_per_class],
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "scores": {int(n): self.scores[int(n)].tolist() for n in self.n_per_class},
        }

    def _rows(self, long: bool) -> tuple[list[str], list[list[Any]]]:
        if long:
            rows = [
                [int(n), draw, float(score)]
                for n in self.n_per_class
                for draw, score in enumerate(self.scores[int(n)])
            ]
            return ["n_per_class", "draw", self.scoring], rows
        rows = [
            [int(n), float(m), float(s)]
            for n, m, s in zip(self.n_per_class, self.mean, self.std, strict=True)
        ]
        return ["n_per_class", "mean", "std"], rows

    def to_frame(self, long: bool = False):
        """A pandas DataFrame.

        Parameters
        ----------
        long : bool, default=False
            ``False``: one row per labels-per-class value, columns ``n_per_class``, ``mean``,
            ``std``. ``True``: one row per draw, columns ``n_per_class``, ``draw`` and the
            score's name.
        """
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError(
                "FewShotCurveResult.to_frame needs pandas (pip install pandas); "
                "to_csv and to_dict work without it."
            ) from error
        columns, rows = self._rows(long)
        return pd.DataFrame(rows, columns=columns)

    def to_csv(self, path: str | os.PathLike, long: bool = False) -> None:
        """Write the table of `to_frame` as CSV (no pandas needed).

        The file is written next to ``path`` first and then moved in place, so an interrupted
        run never leaves half a file behind; it gets the permissions of the umask, as with
        ``open``.
        """
        columns, rows = self._rows(long)
        with atomic_write(path, "w") as file:
            writer = csv.writer(file)
            writer.writerow(columns)
            writer.writerows(rows)

    def plot(self, ax: Any = None, label: str | None = None, **kwargs: Any) -> Any:
        """Plot the curve with `sparsam.plotting.plot_few_shot_curve` (needs matplotlib)."""
        from ..plotting import plot_few_shot_curve

        return plot_few_shot_curve({label or "estimator": self}, ax=ax, **kwargs)

    def table(self) -> str:
        """A plain-text table: one row per labels-per-class value with mean and std."""
        header = f"{'n_per_class':>11}  {'mean':>7}  {'std':>7}  {'draws':>5}"
        lines = [f"{self.scoring}", header, "-" * len(header)]
        for n, mean, std in zip(self.n_per_class, self.mean, self.std, strict=True):
            draws = len(self.scores[int(n)])
            lines.append(f"{int(n):>11}  {mean:>7.3f}  {std:>7.3f}  {draws:>5}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def few_shot_curve(
    estimator: BaseEstimator | Mapping[str, BaseEstimator],
    X: Any,
    y: Any,
    *,
    n_per_class: Sequence[int] = (1, 5, 10, 25, 50, 100, 250),
    n_repeats: int = 5,
    scoring: str | Callable | None = "balanced_accuracy",
    test: tuple[Any, Any] | None = None,
    n_jobs: int | None = None,
    random_state: int | np.random.RandomState | None = None,
    error_score: float | str = np.nan,
    params: dict[str, Any] | None = None,
) -> FewShotCurveResult | dict[str, FewShotCurveResult]:
    """Score an estimator trained on ``N`` labels per class, for several ``N`` and draws.

    Like `sklearn.model_selection.learning_curve`, but the x axis is labels per class
    and every class gets exactly ``N`` training samples (see `FewShotSplit`): the
    protocol of the paper's few-shot plots. Each ``N`` is one call of
    `sklearn.model_selection.cross_validate` with ``cv=FewShotSplit(N, ...)``, so
    ``error_score``, ``params`` and metadata routing behave as they do there.

    Parameters
    ----------
    estimator : estimator or mapping of str to estimator
        Cloned and fitted once per ``(N, draw)``; usually a pipeline on frozen features. A
        mapping (name to estimator) scores every estimator on the same draws, the paired
        comparison of the paper's Figure 1 (e.g. DINO + SVM against a
        `SupervisedClassifier`), and returns one result per name, ready for
        `sparsam.plotting.plot_few_shot_curve`.
    X : array-like or sequence of length n_samples
        Anything indexable: an array of features or images, or a list of image paths.
    y : array-like of shape (n_samples,)
        Class labels (integers, whole-number floats or strings, not continuous values); -1
        (unlabeled) samples are never drawn.
    n_per_class : sequence of int, default=(1, 5, 10, 25, 50, 100, 250)
        Labels per class to evaluate. A value that the smallest class cannot supply is skipped
        with a warning: without ``test`` the smallest class must keep one sample for testing
        (``N < n_smallest``), with ``test`` it may give all (``N <= n_smallest``).
    n_repeats : int, default=5
        Draws per ``N``; at least 1.
    scoring : str, callable or None, default="balanced_accuracy"
        Anything `sklearn.metrics.check_scoring` accepts.
    test : tuple (X_test, y_test) or None, default=None
        A fixed test set, as in the paper; all of ``X, y`` is then the pool for the training
        draws. ``None``: each draw is scored on the samples it did not train on.
    n_jobs : int or None, default=None
        The draws of one ``N`` are fitted in parallel with joblib (``cross_validate``'s
        ``n_jobs``).
    random_state : int, RandomState instance or None, default=None
        An int makes the draws, and so the scores, reproducible.
    error_score : "raise" or float, default=np.nan
        Score of a draw whose fit fails, as in ``cross_validate``: a number (NaN by
        default, with a ``FitFailedWarning``), or "raise" to raise the error.
    params : dict, optional
        Passed to ``cross_validate(params=...)``: without metadata routing, fit parameters
        of ``estimator`` (``sample_weight`` and other per-sample values are indexed with
        each draw's training part); with ``sklearn.set_config(enable_metadata_routing=True)``
        routed to the estimator's ``fit`` and the scorer as they request. Per-sample values
        are indexed like ``X``. With ``test`` they reach only the fits: routing one to the
        scorer then raises, since ``params`` hold no values for the test samples.

    Returns
    -------
    FewShotCurveResult, or dict of str to FewShotCurveResult
        The latter, in the mapping's order, when ``estimator`` is a mapping.

    Raises
    ------
    ValueError
        If ``estimator`` is an empty mapping, ``n_repeats`` is not a positive int, ``y``
        holds continuous values, ``X`` and ``y`` differ in length, or no value of
        ``n_per_class`` fits the smallest class.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> from sparsam import few_shot_curve
    >>> X, y = load_iris(return_X_y=True)
    >>> result = few_shot_curve(SVC(), X, y, n_per_class=(1, 10), random_state=0)
    >>> result.n_per_class.tolist()
    [1, 10]
    >>> from sklearn.linear_model import LogisticRegression
    >>> results = few_shot_curve({"SVC": SVC(), "LR": LogisticRegression()}, X, y,
    ...                          n_per_class=(1, 10), random_state=0)
    >>> list(results)
    ['SVC', 'LR']
    """
    if isinstance(estimator, Mapping):
        settings = {
            "n_per_class": n_per_class,
            "n_repeats": n_repeats,
            "scoring": scoring,
            "test": test,
            "n_jobs": n_jobs,
            "error_score": error_score,
            "params": params,
        }
        return _paired_curves(estimator, X, y, random_state, settings)
    check_positive_int(n_repeats, "n_repeats")
    y = _checked_class_labels(X, y)
    smallest = _smallest_class_size(y)
    if test is not None:
        X_test, y_test = test
        y_test = column_or_1d(np.asarray(y_test))
    kept = _n_per_class_that_fit(n_per_class, smallest, fixed_test=test is not None)
    scorer = check_scoring(estimator, scoring=scoring)
    rng = check_random_state(random_state)
    seeds = {n: rng.randint(2**31 - 1) for n in kept}
    if test is None:
        splits_by_n = {
            n: FewShotSplit(n, n_repeats=n_repeats, small_classes="raise", random_state=seed)
            for n, seed in seeds.items()
        }
        X_all, y_all, params_all = X, y, params
    else:
        splits_by_n, X_all, y_all, params_all = _pool_then_fixed_test(
            X, y, X_test, y_test, seeds, n_repeats, params, scorer
        )
    scores = cross_validate_per_n(
        estimator,
        X_all,
        y_all,
        splits_by_n,
        scorer,
        n_jobs=n_jobs,
        error_score=error_score,
        params=params_all,
    )
    name = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "score")
    return FewShotCurveResult(n_per_class=np.array(kept), scores=scores, scoring=name)


def _paired_curves(
    estimators: Mapping[str, BaseEstimator],
    X: Any,
    y: Any,
    random_state: int | np.random.RandomState | None,
    settings: dict[str, Any],
) -> dict[str, FewShotCurveResult]:
    """One curve per named estimator, every one scored on the same draws."""
    if not estimators:
        raise ValueError("estimator is an empty mapping; expected name -> estimator pairs.")
    # One integer seed for all: every estimator then trains and tests on the same draws,
    # even when random_state is None or a RandomState that each call would advance.
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    return {
        name: few_shot_curve(member, X, y, random_state=seed, **settings)
        for name, member in estimators.items()
    }


def _checked_class_labels(X: Any, y: Any) -> np.ndarray:
    """``y`` as a 1-D array of class labels, as long as ``X``."""
    y = column_or_1d(np.asarray(y))
    check_class_labels(y)
    if _num_samples(X) != len(y):
        raise ValueError(
            f"X and y have different lengths: X has {_num_samples(X)} samples, y has {len(y)}; "
            "expected the same number."
        )
    return y


def _smallest_class_size(y: np.ndarray) -> int:
    """Labeled samples of the smallest class."""
    counts = np.unique(y[labeled_mask(y)], return_counts=True)[1]
    if len(counts) == 0:
        raise ValueError("y has no labeled sample (every label is -1); expected some.")
    return int(counts.min())


def _n_per_class_that_fit(n_per_class: Sequence[int], smallest: int, fixed_test: bool) -> list[int]:
    """The values of ``n_per_class`` the smallest class can supply, ascending; warn of the rest."""
    largest_allowed = smallest if fixed_test else smallest - 1
    kept = []
    for n in sorted({int(n) for n in n_per_class}):
        if n > largest_allowed:
            warnings.warn(
                f"Skipping n_per_class={n}: the smallest class has {smallest} labeled samples"
                + ("" if fixed_test else ", and one of them must stay for testing")
                + ".",
                UserWarning,
                stacklevel=3,  # the caller of few_shot_curve
            )
        else:
            kept.append(n)
    if not kept:
        raise ValueError(
            f"No value of n_per_class={tuple(n_per_class)} fits the smallest class "
            f"({smallest} labeled samples); expected values up to {largest_allowed}."
        )
    return kept


def _pool_then_fixed_test(
    X: Any,
    y: np.ndarray,
    X_test: Any,
    y_test: np.ndarray,
    seeds: dict[int, int],
    n_repeats: int,
    params: dict[str, Any] | None,
    scorer: Callable,
) -> tuple[dict[int, list], Any, np.ndarray, dict[str, Any] | None]:
    """Splits that train in the pool ``X, y`` and test on all of ``X_test``, and their data.

    Returns the splits per ``N`` and ``X``, ``y`` and ``params`` with the test samples
    appended.
    """
    # cross_validate scores on samples of X: the fixed test set joins the pool, and every
    # split trains in the pool and tests on all of it. FewShotSplit is not used here, as
    # with a fixed test set a class may give every sample to training, which FewShotSplit
    # refuses because it would leave that class without a test sample.
    n_pool, n_test = len(y), len(y_test)
    held_out = np.arange(n_pool, n_pool + n_test)
    splits_by_n = {
        n: [
            (train, held_out)
            for train in _draw_per_class(y, n, n_repeats, check_random_state(seed))
        ]
        for n, seed in seeds.items()
    }
    X_all = _concatenate(X, X_test)
    y_all = np.concatenate([y, y_test])
    params_all = _params_with_test_placeholders(params, n_pool, n_test, scorer)
    return splits_by_n, X_all, y_all, params_all


def cross_validate_per_n(
    estimator: BaseEstimator,
    X: Any,
    y: np.ndarray,
    splits_by_n: dict[int, Any],
    scorer: Callable,
    *,
    n_jobs: int | None = None,
    error_score: float | str = np.nan,
    params: dict[str, Any] | None = None,
) -> dict[int, np.ndarray]:
    """Test scores of ``cross_validate`` with one ``cv`` per number of labels per class.

    The one path by which `few_shot_curve` and `sparsam.model_selection.few_shot_scores`
    fit and score, so that both treat fits, errors and ``params`` alike.

    Parameters
    ----------
    estimator : estimator
        Cloned and fitted once per split.
    X : array-like or sequence of length n_samples
    y : ndarray of shape (n_samples,)
    splits_by_n : dict of int to cross-validator or iterable of (train, test)
        The ``cv`` of each number of labels per class.
    scorer : callable
        As `sklearn.metrics.check_scoring` returns it.
    n_jobs, error_score, params
        Passed to ``cross_validate``.

    Returns
    -------
    dict of int to ndarray of shape (n_splits,)
        The test score of every split, keyed like ``splits_by_n``.
    """
    return {
        n: cross_validate(
            estimator,
            X,
            y,
            cv=cv,
            scoring=scorer,
            n_jobs=n_jobs,
            error_score=error_score,
            params=params,
        )["test_score"]
        for n, cv in splits_by_n.items()
    }


def _concatenate(X: Any, X_test: Any) -> Any:
    """The training pool followed by the test samples, in the container type of ``X``."""
    if hasattr(X, "iloc") and hasattr(X_test, "iloc"):
        import pandas as pd

        return pd.concat([X, X_test], ignore_index=True)
    if isinstance(X, np.ndarray) and isinstance(X_test, np.ndarray):
        if X.shape[1:] == X_test.shape[1:]:
            return np.concatenate([X, X_test])
    return _as_list(X) + _as_list(X_test)


def _as_list(X: Any) -> list[Any]:
    if hasattr(X, "iloc"):
        return [X.iloc[index] for index in range(len(X))]
    return list(X)


def _params_with_test_placeholders(
    params: dict[str, Any] | None, n_pool: int, n_test: int, scorer: Callable
) -> dict[str, Any] | None:
    """Extend per-sample ``params`` over the appended test samples, which no fit sees."""
    if not params:
        return params
    if get_config().get("enable_metadata_routing", False):
        requested = get_routing_for_object(scorer).consumes("score", list(params))
        if requested:
            raise ValueError(
                f"params {sorted(requested)} are routed to the scorer, but with a fixed test "
                "set params hold values for the samples of X only; expected test=None to "
                "route per-sample values to the scorer."
            )
    extended = {}
    for key, value in params.items():
        if _is_per_sample(value, n_pool):
            # Placeholder rows (copies of the first): fits index only the pool, and no
            # scorer receives them (checked above).
            placeholders = _safe_indexing(value, np.zeros(n_test, dtype=int))
            value = _concatenate(value, placeholders)
        extended[key] = value
    return extended


def _is_per_sample(value: Any, n_samples: int) -> bool:
    try:
        return not np.isscalar(value) and _num_samples(value) == n_samples
    except TypeError:
        return False


def _draw_per_class(
    y: np.ndarray, n: int, n_repeats: int, rng: np.random.RandomState
) -> Iterator[np.ndarray]:
    labeled = np.flatnonzero(labeled_mask(y))
    classes, inverse = np.unique(y[labeled], return_inverse=True)
    members = [labeled[inverse == i] for i in range(len(classes))]
    for _ in range(n_repeats):
        yield np.concatenate([np.sort(rng.choice(m, n, replace=False)) for m in members])
