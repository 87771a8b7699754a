"""The fixed protocol of the demo and the benchmarks, and its comparison table.

`few_shot_scores` scores features on stratified halves with the same draws for every method,
so that methods compared in ``benchmarks/`` and the quick-start demo see the same training
samples; `format_few_shot_table` prints the scores of several methods side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import check_scoring
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from .curve import cross_validate_per_n

__all__ = ["few_shot_scores", "format_few_shot_table"]


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
    return cross_validate_per_n(
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
