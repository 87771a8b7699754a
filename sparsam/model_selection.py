"""Few-shot evaluation of frozen features.

`FewShotSplit` and `few_shot_curve` implement the paper's protocol (exactly ``N``
labels per class, repeated draws, balanced accuracy); `paper_classifiers` gives its three
downstream classifiers; `LabeledOnly` lets a pipeline train its featurizer on every
image and its classifier on the labeled ones. `rankme` judges embeddings without labels
(their effective rank; Garrido et al. 2023).
"""

from __future__ import annotations

import csv
import numbers
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring
from sklearn.model_selection import BaseCrossValidator, cross_validate, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import PowerTransformer, StandardScaler
from sklearn.svm import SVC
from sklearn.utils import _safe_indexing, check_random_state, get_tags
from sklearn.utils.metadata_routing import get_routing_for_object
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples, check_is_fitted, column_or_1d

from ._files import atomic_write
from .dino.quality import rankme

__all__ = [
    "FewShotCurveResult",
    "FewShotSplit",
    "LabeledOnly",
    "check_class_labels",
    "few_shot_curve",
    "few_shot_scores",
    "format_few_shot_table",
    "labeled_mask",
    "paper_classifiers",
    "rankme",
]


def few_shot_scores(
    features: np.ndarray,
    labels: np.ndarray,
    n_per_class: Sequence[int] = (1, 5, 10, 25),
    n_repeats: int = 5,
    classifier: BaseEstimator | None = None,
    random_state: int = 0,
) -> dict[int, np.ndarray]:
    """Balanced accuracy with ``n`` labeled samples per class, over repeated draws.

    The protocol of the demo and of ``benchmarks/``: a stratified half of the data is the
    test set (``random_state`` fixes it); each draw takes exactly ``n`` training samples of
    every class from the other half (draw ``r`` uses ``numpy.random.default_rng(r)``), so
    every method is scored on the same draws. The fits and scores run through
    `sklearn.model_selection.cross_validate`, the path of `few_shot_curve`;
    only the draws differ.

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,)
    n_per_class : sequence of int, default=(1, 5, 10, 25)
    n_repeats : int, default=5
    classifier : estimator, optional
        Defaults to ``StandardScaler() -> SVC(class_weight="balanced")``.
    random_state : int, default=0
        Seed of the train/test halves.

    Returns
    -------
    scores : dict of int to ndarray of shape (n_repeats,)
    """
    features = np.asarray(features)
    labels = np.asarray(labels)
    if classifier is None:
        classifier = make_pipeline(StandardScaler(), SVC(class_weight="balanced"))
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=random_state
    )
    classes = np.unique(labels)
    splits_by_n = {}
    for n in n_per_class:
        splits = []
        for repeat in range(n_repeats):
            rng = np.random.default_rng(repeat)
            chosen = np.concatenate(
                [rng.choice(train[labels[train] == c], n, replace=False) for c in classes]
            )
            splits.append((chosen, test))
        splits_by_n[int(n)] = splits
    scorer = check_scoring(classifier, scoring="balanced_accuracy")
    return _cross_validate_per_n(
        classifier, features, labels, splits_by_n, scorer, error_score="raise"
    )


def format_few_shot_table(rows: dict[str, dict[int, np.ndarray]]) -> str:
    """A plain-text table: one row per method, mean ± std per labels-per-class column.

    A method with a single score per column (a mean reported without its draws) shows the
    mean alone; a missing column shows ``-``.
    """
    columns = sorted({n for scores in rows.values() for n in scores})
    width = max(len(name) for name in rows) + 2
    header = "method".ljust(width) + "".join(f"N={n}".rjust(15) for n in columns)
    lines = [header, "-" * len(header)]
    for name, scores in rows.items():
        cells = "".join(_cell(scores.get(n)).rjust(15) for n in columns)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


def _cell(scores: np.ndarray | None) -> str:
    if scores is None or len(scores) == 0:
        return "-"
    if len(scores) == 1:  # a mean reported by someone else, without its draws
        return f"{scores[0]:.3f}"
    return f"{scores.mean():.3f} ± {scores.std():.3f}"


# ---------------------------------------------------------------------------------------------
# FewShotSplit
# ---------------------------------------------------------------------------------------------

_SMALL_CLASS_POLICIES = ("all_available", "raise")


def check_class_labels(y: np.ndarray) -> None:
    """Refuse continuous targets, which would make every distinct value a class of its own."""
    if y.dtype.kind == "f":
        offending = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
    elif y.dtype.kind == "O":
        offending = [
            index
            for index, label in enumerate(y)
            if isinstance(label, numbers.Real)
            and not isinstance(label, numbers.Integral)
            and not float(label).is_integer()
        ]
    else:
        return
    if len(offending):
        index = int(offending[0])
        raise ValueError(
            f"y[{index}] = {y[index]} is not a class label: y holds continuous values, and "
            "few-shot draws are made per class. Expected class labels (integers, whole-number "
            "floats such as 1.0, or strings; -1 marks an unlabeled sample); bin a continuous "
            "target into classes first."
        )


def labeled_mask(y: np.ndarray) -> np.ndarray:
    """True where ``y`` is a label, False where it is -1 (unlabeled, the sklearn convention)."""
    if y.dtype.kind in "iufO":
        return np.asarray(y != -1, dtype=bool)
    return np.ones(len(y), dtype=bool)


class FewShotSplit(BaseCrossValidator):
    """Exactly ``n_per_class`` training samples of every class, drawn ``n_repeats`` times.

    The protocol of the paper: a classifier on frozen features sees ``N`` labels per class
    (1, 5, 10, 25, …) and is scored on the remaining samples; every ``N`` is repeated over
    several random draws. Usable as ``cv=`` anywhere in scikit-learn (``cross_val_score``,
    ``cross_validate``, ``GridSearchCV``).

    No scikit-learn splitter does this: ``StratifiedShuffleSplit(train_size=15)`` allocates
    the training samples *in proportion* to the class frequencies, so classes of 80, 15 and 6
    samples get 12, 2 and 1 training samples, where the few-shot protocol needs 5, 5 and 5.
    ``StratifiedKFold`` and ``train_test_split(stratify=...)`` are proportional too.

    Parameters
    ----------
    n_per_class : int
        Training samples drawn (without replacement) from every class in each split.
    n_repeats : int, default=5
        Number of splits (independent draws).
    test_size : int, float or None, default=None
        ``None``: every labeled sample that is not in the training part is in the test part.
        An int: that many test samples; a float in (0, 1): that fraction of the samples left
        after the training draw. The test part is drawn from what the training draw left, in
        proportion to the class sizes there (largest remainders; at least the floor of each
        class's share), so it never overlaps the training part.
    min_class_size : int or None, default=None
        Classes with fewer labeled samples are dropped from both parts (the paper's "250+"
        experiments keep only classes with at least 250 samples).
    small_classes : {"all_available", "raise"}, default="all_available"
        What to do with a class of ``n_c < n_per_class + 1`` labeled samples, too small to give
        ``n_per_class`` training samples and still keep one for testing.
        ``"all_available"``: that class trains on ``max(n_c - 1, 1)`` samples, so one sample is
        held out for testing (a class of a single sample trains on it and has no test sample).
        ``"raise"``: raise a ValueError naming the class and its size.
    random_state : int, RandomState instance or None, default=None
        An int gives the same splits at every call of ``split``.

    Notes
    -----
    Samples labeled ``-1`` (unlabeled, the scikit-learn semi-supervised convention) are never
    in the training nor in the test part. The training indices of a split list the classes in
    sorted order; shuffle them if an estimator depends on sample order.

    Examples
    --------
    >>> import numpy as np
    >>> from sparsam import FewShotSplit
    >>> y = np.repeat([0, 1, 2], [80, 15, 6])
    >>> train, test = next(FewShotSplit(n_per_class=5, random_state=0).split(y, y))
    >>> np.bincount(y[train]).tolist()
    [5, 5, 5]
    >>> len(test)
    86
    """

    def __init__(
        self,
        n_per_class: int,
        n_repeats: int = 5,
        test_size: int | float | None = None,
        min_class_size: int | None = None,
        small_classes: str = "all_available",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_per_class = n_per_class
        self.n_repeats = n_repeats
        self.test_size = test_size
        self.min_class_size = min_class_size
        self.small_classes = small_classes
        self.random_state = random_state

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of splits, ``n_repeats``."""
        _check_positive_int(self.n_repeats, "n_repeats")
        return int(self.n_repeats)

    def split(self, X: Any, y: Any, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Generate indices of the training and test part of each split.

        Parameters
        ----------
        X : array-like or sequence of length n_samples
            Only its length is used.
        y : array-like of shape (n_samples,)
            Class labels: integers, whole-number floats or strings; -1 marks an unlabeled
            sample.
        groups : ignored

        Yields
        ------
        train : ndarray of int
        test : ndarray of int

        Raises
        ------
        ValueError
            If ``y`` holds continuous values (such as 0.5 or NaN), naming the first.
        """
        self._validate_params()
        if y is None:
            raise ValueError("FewShotSplit.split needs the class labels y; got y=None.")
        y = column_or_1d(np.asarray(y))
        check_class_labels(y)
        if X is not None and _num_samples(X) != len(y):
            raise ValueError(
                f"X and y have different lengths: X has {_num_samples(X)} samples, "
                f"y has {len(y)}; expected the same number."
            )
        members = self._class_members(y)
        n_train = self._n_train_per_class(members)
        rng = check_random_state(self.random_state)
        for _ in range(self.n_repeats):
            train_parts, rest_parts = [], []
            for indices, n in zip(members.values(), n_train, strict=True):
                shuffled = rng.permutation(indices)
                train_parts.append(np.sort(shuffled[:n]))
                rest_parts.append(np.sort(shuffled[n:]))
            train = np.concatenate(train_parts)
            test = self._draw_test(rest_parts, rng)
            yield train, test

    def _validate_params(self) -> None:
        _check_positive_int(self.n_per_class, "n_per_class")
        _check_positive_int(self.n_repeats, "n_repeats")
        if self.min_class_size is not None:
            _check_positive_int(self.min_class_size, "min_class_size")
        if self.small_classes not in _SMALL_CLASS_POLICIES:
            raise ValueError(
                f"small_classes must be one of {_SMALL_CLASS_POLICIES}; got {self.small_classes!r}."
            )
        size = self.test_size
        if size is None:
            return
        if isinstance(size, numbers.Integral) and not isinstance(size, bool):
            if size < 1:
                raise ValueError(f"test_size as an int must be at least 1; got {size}.")
        elif isinstance(size, numbers.Real) and not isinstance(size, bool):
            if not 0 < size < 1:
                raise ValueError(f"test_size as a float must be in (0, 1); got {size}.")
        else:
            raise ValueError(f"test_size must be None, an int or a float; got {size!r}.")

    def _class_members(self, y: np.ndarray) -> dict[Any, np.ndarray]:
        labeled = np.flatnonzero(labeled_mask(y))
        if len(labeled) == 0:
            raise ValueError("y has no labeled sample (every label is -1); expected some.")
        classes, inverse = np.unique(y[labeled], return_inverse=True)
        members = {c: labeled[inverse == i] for i, c in enumerate(classes.tolist())}
        if self.min_class_size is not None:
            members = {c: m for c, m in members.items() if len(m) >= self.min_class_size}
            if not members:
                raise ValueError(
                    f"No class has at least min_class_size={self.min_class_size} labeled "
                    f"samples; the largest has {np.bincount(inverse).max()}."
                )
        return members

    def _n_train_per_class(self, members: dict[Any, np.ndarray]) -> list[int]:
        n_train = []
        for label, indices in members.items():
            size = len(indices)
            if size >= self.n_per_class + 1:
                n_train.append(self.n_per_class)
            elif self.small_classes == "raise":
                raise ValueError(
                    f"Class {label!r} has {size} labeled samples; n_per_class={self.n_per_class} "
                    f"needs at least {self.n_per_class + 1} (one left for testing). Lower "
                    "n_per_class, drop small classes with min_class_size, or pass "
                    'small_classes="all_available".'
                )
            else:
                n_train.append(max(size - 1, 1))
        return n_train

    def _draw_test(self, rest_parts: list[np.ndarray], rng: np.random.RandomState) -> np.ndarray:
        sizes = np.array([len(part) for part in rest_parts])
        total = int(sizes.sum())
        if self.test_size is None:
            return np.concatenate(rest_parts)
        if isinstance(self.test_size, numbers.Integral):
            n_test = int(self.test_size)
            if n_test > total:
                raise ValueError(
                    f"test_size={n_test} exceeds the {total} labeled samples left after drawing "
                    f"{self.n_per_class} per class; expected at most {total}."
                )
        else:
            n_test = max(int(np.ceil(self.test_size * total)), 1)
        allocation = _largest_remainder_allocation(sizes, n_test, rng)
        chosen = [
            np.sort(rng.choice(part, n, replace=False)) if n else part[:0]
            for part, n in zip(rest_parts, allocation, strict=True)
        ]
        return np.concatenate(chosen)


def _largest_remainder_allocation(
    sizes: np.ndarray, n: int, rng: np.random.RandomState
) -> np.ndarray:
    """Split ``n`` over classes in proportion to ``sizes``, never exceeding a class's size."""
    exact = n * sizes / sizes.sum()
    allocation = np.floor(exact).astype(int)
    remainder = exact - allocation
    # random tie-breaking, so equal remainders do not always favour the first class
    order = np.lexsort((rng.random_sample(len(sizes)), -remainder))
    for index in order:
        if allocation.sum() >= n:
            break
        if allocation[index] < sizes[index]:
            allocation[index] += 1
    return allocation


def _check_positive_int(value: Any, name: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")


# ---------------------------------------------------------------------------------------------
# few_shot_curve
# ---------------------------------------------------------------------------------------------


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
        from .plotting import plot_few_shot_curve

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
        if not estimator:
            raise ValueError("estimator is an empty mapping; expected name -> estimator pairs.")
        # One integer seed for all: every estimator then trains and tests on the same draws,
        # even when random_state is None or a RandomState that each call would advance.
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        settings = {
            "n_per_class": n_per_class,
            "n_repeats": n_repeats,
            "scoring": scoring,
            "test": test,
            "n_jobs": n_jobs,
            "random_state": seed,
            "error_score": error_score,
            "params": params,
        }
        return {
            name: few_shot_curve(member, X, y, **settings) for name, member in estimator.items()
        }
    _check_positive_int(n_repeats, "n_repeats")
    y = column_or_1d(np.asarray(y))
    check_class_labels(y)
    if _num_samples(X) != len(y):
        raise ValueError(
            f"X and y have different lengths: X has {_num_samples(X)} samples, y has {len(y)}; "
            "expected the same number."
        )
    counts = np.unique(y[labeled_mask(y)], return_counts=True)[1]
    if len(counts) == 0:
        raise ValueError("y has no labeled sample (every label is -1); expected some.")
    if test is not None:
        X_test, y_test = test
        y_test = column_or_1d(np.asarray(y_test))
    smallest = int(counts.min())
    largest_allowed = smallest if test is not None else smallest - 1
    kept = []
    for n in sorted({int(n) for n in n_per_class}):
        if n > largest_allowed:
            warnings.warn(
                f"Skipping n_per_class={n}: the smallest class has {smallest} labeled samples"
                + ("" if test is not None else ", and one of them must stay for testing")
                + ".",
                UserWarning,
                stacklevel=2,
            )
        else:
            kept.append(n)
    if not kept:
        raise ValueError(
            f"No value of n_per_class={tuple(n_per_class)} fits the smallest class "
            f"({smallest} labeled samples); expected values up to {largest_allowed}."
        )
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
    scores = _cross_validate_per_n(
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


def _cross_validate_per_n(
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
    """Test scores of ``cross_validate`` with one ``cv`` per number of labels per class."""
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


# ---------------------------------------------------------------------------------------------
# The paper's classifiers
# ---------------------------------------------------------------------------------------------


class _AdaptiveKNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """k-nearest neighbours whose k never exceeds the number of training samples.

    ``n_neighbors=None`` follows the paper's code: ``5 × n_classes`` neighbours (its
    ``KNeighborsClassifier(n_neighbors=8)`` is overridden to that in ``fit_classifier``).
    """

    def __init__(self, n_neighbors: int | None = None, weights: str = "distance") -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X: Any, y: Any) -> _AdaptiveKNeighborsClassifier:
        n_classes = len(np.unique(y))
        wanted = 5 * n_classes if self.n_neighbors is None else self.n_neighbors
        self.n_neighbors_ = int(min(wanted, _num_samples(X)))
        self.estimator_ = KNeighborsClassifier(n_neighbors=self.n_neighbors_, weights=self.weights)
        self.estimator_.fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.estimator_.predict_proba(X)


def paper_classifiers(random_state: int | None = None) -> dict[str, Pipeline]:
    """The paper's three downstream classifiers on frozen features, ready to fit.

    As in the original code (``reproducability/reproduce_results.py`` of
    IPMI-ICNS-UKE/sparsam), every classifier sits behind ``PowerTransformer() -> PCA()``; a
    ``PCA`` without ``n_components`` keeps ``min(n_samples, n_features)`` components, so it
    fits even on one sample per class.

    - ``"svm"``: ``SVC(kernel="rbf", C=1, class_weight="balanced")``. The paper's SVC also set
      ``probability=True`` to take the argmax of Platt-scaled probabilities; this preset
      predicts with the decision function, which needs no internal cross-validation and
      works with a single sample per class.
    - ``"logistic_regression"``: ``LogisticRegression(C=2.5, class_weight="balanced",
      max_iter=10000)``.
    - ``"knn"``: distance-weighted k-nearest neighbours with ``k = 5 × n_classes`` as in the
      paper's code, capped at the number of training samples.

    Parameters
    ----------
    random_state : int or None, default=None
        Passed to the estimators that draw random numbers (PCA's solver, the SVC).

    Returns
    -------
    dict of str to Pipeline
        Fresh, unfitted pipelines keyed ``"svm"``, ``"logistic_regression"``, ``"knn"``.
    """

    def head(classifier: BaseEstimator) -> Pipeline:
        return make_pipeline(PowerTransformer(), PCA(random_state=random_state), classifier)

    return {
        "svm": head(SVC(kernel="rbf", C=1.0, class_weight="balanced", random_state=random_state)),
        "logistic_regression": head(
            LogisticRegression(
                C=2.5, class_weight="balanced", max_iter=10_000, random_state=random_state
            )
        ),
        "knn": head(_AdaptiveKNeighborsClassifier(weights="distance")),
    }


# ---------------------------------------------------------------------------------------------
# Semi-supervised
# ---------------------------------------------------------------------------------------------


def _estimator_has(attribute: str) -> Callable[[Any], bool]:
    def check(self: LabeledOnly) -> bool:
        if hasattr(self, "estimator_"):
            return hasattr(self.estimator_, attribute)
        return hasattr(self.estimator, attribute)

    return check


class LabeledOnly(MetaEstimatorMixin, BaseEstimator):
    """Fit a supervised estimator on the labeled samples only (``y != -1``).

    Lets a pipeline fit its unsupervised steps on every sample and its classifier on the
    labeled ones: in ``make_pipeline(DinoFeaturizer(), LabeledOnly(SVC()))`` DINO trains on
    all images, labeled or not, and the SVC only on those whose label is not -1.

    Parameters
    ----------
    estimator : estimator
        Cloned and fitted on the labeled samples.

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone.
    classes_ : ndarray
        Classes of ``estimator_`` (never -1).
    n_labeled_ : int
        Number of labeled samples ``estimator_`` was fitted on.
    """

    def __init__(self, estimator: BaseEstimator) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any, **fit_params: Any) -> LabeledOnly:
        """Fit a clone of ``estimator`` on the samples whose label is not -1."""
        y = column_or_1d(np.asarray(y))
        if _num_samples(X) != len(y):
            raise ValueError(
                f"X and y have different lengths: X has {_num_samples(X)} samples, "
                f"y has {len(y)}; expected the same number."
            )
        labeled = np.flatnonzero(labeled_mask(y))
        if len(labeled) == 0:
            raise ValueError(
                f"LabeledOnly got no labeled sample: all {len(y)} labels are -1; expected at "
                "least one label other than -1."
            )
        self.estimator_ = clone(self.estimator).fit(
            _safe_indexing(X, labeled), y[labeled], **fit_params
        )
        self.n_labeled_ = len(labeled)
        return self

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator_.classes_

    @available_if(_estimator_has("predict"))
    def predict(self, X: Any) -> np.ndarray:
        """Predictions of ``estimator_``."""
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of ``estimator_``."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """Decision function of ``estimator_``."""
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("score"))
    def score(self, X: Any, y: Any) -> float:
        """Score of ``estimator_`` on the labeled samples of ``X, y``."""
        check_is_fitted(self)
        y = column_or_1d(np.asarray(y))
        labeled = np.flatnonzero(labeled_mask(y))
        return self.estimator_.score(_safe_indexing(X, labeled), y[labeled])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.input_tags = inner.input_tags
        return tags
