"""The few-shot splits: exactly ``N`` labels per class, and what counts as a class label.

`FewShotSplit` draws the paper's training parts (``N`` samples of every class, repeated
draws) as a scikit-learn ``cv=`` splitter; `check_class_labels` refuses continuous targets and
`labeled_mask` marks the samples whose label is not -1, checks the estimators share.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state
from sklearn.utils.validation import _num_samples, column_or_1d

__all__ = ["FewShotSplit", "check_class_labels", "check_positive_int", "labeled_mask"]

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
        check_positive_int(self.n_repeats, "n_repeats")
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
        check_positive_int(self.n_per_class, "n_per_class")
        check_positive_int(self.n_repeats, "n_repeats")
        if self.min_class_size is not None:
            check_positive_int(self.min_class_size, "min_class_size")
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


def check_positive_int(value: Any, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int of at least 1."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")
