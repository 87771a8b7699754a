"""`select_to_label`: the images to label next, chosen from features without any label.

The checks of the inputs and the dispatch to a method live here; the methods themselves in
`sparsam.labeling.clusters` (TypiClust, k-means) and `sparsam.labeling.coverage`
(ProbCover).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .clusters import closest_to_centroids, typical_per_cluster
from .coverage import greedy_coverage

__all__ = ["METHODS", "select_images_to_label", "select_to_label"]

METHODS = ("typiclust", "probcover", "kmeans", "random")


def select_to_label(
    features: Any,
    n: int,
    *,
    method: str = "typiclust",
    already_labeled: Any = None,
    delta: float | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray:
    """Indices of the ``n`` images to label next, chosen from their features alone.

    Before anything is labeled nobody knows which image belongs to which class, so drawing
    "N per class" is impossible and a random draw from an imbalanced archive misses the rare
    classes. On self-supervised features, typical and representative images are the best
    first labels at small budgets (TypiClust, ProbCover; Chen et al. 2022 found missing classes
    the main failure of the first query on medical images).

    Methods (rows are scaled to unit length first, so distances are cosine distances):

    - ``"typiclust"`` (default; Hacohen, Dekel and Weinshall, ICML 2022): k-means into
      ``min(len(already_labeled) + n, 500)`` clusters; the clusters with the fewest labeled
      images come first, the largest first among equals, clusters of 5 images or fewer last;
      from each, the most *typical* unlabeled image (the inverse of its mean distance to its
      ``min(20, size // 2)`` nearest neighbours in its cluster; in a cluster of more than
      5,000 unlabeled images, the most typical of a random 5,000). With more images to pick
      than clusters, the next most typical of each cluster in the same order.
    - ``"probcover"`` (Yehuda et al., NeurIPS 2022): greedily the image whose ball of radius
      ``delta`` holds the most images not yet covered by a labeled one (once everything is
      covered, random unlabeled images). ``delta=None`` takes the largest radius at which 95 %
      of the balls are *pure*, i.e. hold images of one k-means cluster only (``min(labeled +
      n, 500)`` clusters standing for the unknown classes), the paper's rule; later work found
      the method sensitive to ``delta``. Above 20,000 images the balls are counted on a random
      20,000 of them (an unbiased estimate of the coverage), from which the picks are made.
    - ``"kmeans"`` (Pourahmadi et al., 2021): the image closest to the centroid of each
      cluster, clusters ordered as for ``"typiclust"``.
    - ``"random"``: ``n`` unlabeled images drawn uniformly, the baseline.

    Parameters
    ----------
    features : array-like of shape (n_images, n_features)
        One row per image, e.g. ``DinoFeaturizer().fit(images).transform(images)``. Every
        value must be finite.
    n : int
        Number of images to choose; at most the number of images not yet labeled.
    method : {"typiclust", "probcover", "kmeans", "random"}, default="typiclust"
    already_labeled : array-like of int or bool, optional
        Images labeled before (row indices, or a boolean mask of length ``n_images``): they
        are never chosen again, and the methods prefer regions they leave uncovered, so a
        second round adds to the first.
    delta : float, optional
        Ball radius of ``"probcover"`` in cosine distance on unit rows (Euclidean distance,
        between 0 and 2); estimated when None. Only ``"probcover"`` takes it.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means, the subsample of ``"probcover"`` and ``"random"``: the same seed gives
        the same indices.

    Returns
    -------
    indices : ndarray of int of shape (n,)
        Row indices into ``features``, distinct and none of ``already_labeled``, in the order
        chosen.

    Notes
    -----
    Written here rather than taken from scikit-activeml, which implements TypiClust and
    ProbCover on exact neighbours and a dense ``n_images × n_images`` distance matrix
    (80 GB at 100,000 images): these versions answer on 100,000 × 384 features in seconds
    on 2 CPU cores (mini-batch k-means above 20,000 images, neighbours searched within a
    cluster, ProbCover's balls counted on a subsample). ``benchmarks/selection.py`` measures
    them against random selection.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(4, 16)) * 10
    >>> sizes = [200, 60, 15, 5]
    >>> features = np.concatenate(
    ...     [c + rng.normal(size=(s, 16)) for c, s in zip(centres, sizes)])
    >>> cluster = np.repeat(np.arange(4), sizes)
    >>> chosen = select_to_label(features, 4, random_state=0)
    >>> sorted(cluster[chosen].tolist())
    [0, 1, 2, 3]
    >>> more = select_to_label(features, 4, already_labeled=chosen, random_state=0)
    >>> bool(np.intersect1d(chosen, more).size)
    False
    """
    features = _checked_features(features)
    labeled = _labeled_mask(already_labeled, len(features))
    return _select(features, n, method, labeled, np.ones(len(features), bool), delta, random_state)


def select_images_to_label(
    featurizer: Any,
    images: Any,
    n: int,
    *,
    method: str = "typiclust",
    already_labeled: Any = None,
    delta: float | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray:
    """Indices of the ``n`` of ``images`` to label next, embedded by a fitted featurizer.

    `select_to_label` on ``featurizer.transform(images)``. With a featurizer that skips
    unreadable files (``on_error="skip"``), their rows of NaN are never chosen.

    Parameters
    ----------
    featurizer : fitted DinoFeaturizer or transformer
        Anything fitted with a ``transform`` that returns one row per image; with ``memory``
        set on a `sparsam.DinoFeaturizer`, a second round reads the embeddings from its cache.
    images : array-like or list of paths
        What ``featurizer.transform`` takes.
    n, method, already_labeled, delta, random_state
        As in `select_to_label`.

    Returns
    -------
    indices : ndarray of int of shape (n,)
        Positions in ``images``.
    """
    if not hasattr(featurizer, "transform"):
        raise TypeError(
            f"featurizer must be a fitted transformer (e.g. a fitted DinoFeaturizer); got "
            f"{type(featurizer).__name__}, which has no transform."
        )
    check_is_fitted(featurizer)
    features = np.asarray(featurizer.transform(images), dtype=np.float64)
    if features.ndim != 2 or len(features) != _count(images):
        raise ValueError(
            f"featurizer.transform returned shape {features.shape}; expected one row per "
            f"image ({_count(images)} rows)."
        )
    readable = np.isfinite(features).all(axis=1)
    features = np.where(readable[:, None], features, 0.0)
    labeled = _labeled_mask(already_labeled, len(features))
    return _select(features, n, method, labeled, readable, delta, random_state)


def _select(
    features: np.ndarray,
    n: Any,
    method: Any,
    labeled: np.ndarray,
    usable: np.ndarray,
    delta: Any,
    random_state: Any,
) -> np.ndarray:
    """``n`` indices among the usable, unlabeled rows, by ``method``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}.")
    if delta is not None and method != "probcover":
        raise ValueError(f"delta is the ball radius of method='probcover'; got method={method!r}.")
    if delta is not None and (not isinstance(delta, Real) or isinstance(delta, bool) or delta <= 0):
        raise ValueError(f"delta must be a positive float (a cosine distance); got {delta!r}.")
    candidates = usable & ~labeled
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    if n > candidates.sum():
        raise ValueError(
            f"n={n} images asked for, but only {int(candidates.sum())} of the "
            f"{len(features)} are left to choose from ({int(labeled.sum())} already labeled"
            + (f", {int((~usable).sum())} unreadable" if (~usable).any() else "")
            + ")."
        )
    rng = check_random_state(random_state)
    if method == "random":
        return rng.choice(np.flatnonzero(candidates), int(n), replace=False).astype(np.intp)
    unit = _unit_rows(features)
    if method == "probcover":
        chosen = greedy_coverage(unit, int(n), labeled, candidates, delta, rng)
    elif method == "typiclust":
        chosen = typical_per_cluster(unit, int(n), labeled, candidates, rng)
    else:
        chosen = closest_to_centroids(unit, int(n), labeled, candidates, rng)
    return np.asarray(chosen, dtype=np.intp)


def _checked_features(features: Any) -> np.ndarray:
    """``features`` as a 2-D float array with finite values, or an error naming the row."""
    array = np.asarray(features)
    if array.ndim != 2:
        raise ValueError(
            f"features must be a 2-D array (one row per image); got shape {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"features must hold real numbers; got dtype {array.dtype}.")
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"features[{row}] holds NaN or infinity ({int((~finite).sum())} such rows); "
            "expected finite values. Drop those images, or use select_images_to_label, which "
            "passes over the images a featurizer skipped."
        )
    return array


def _labeled_mask(already_labeled: Any, n_images: int) -> np.ndarray:
    """A boolean mask of the labeled rows from indices or a mask."""
    mask = np.zeros(n_images, dtype=bool)
    if already_labeled is None:
        return mask
    values = np.asarray(already_labeled)
    if values.dtype == bool:
        if values.shape != (n_images,):
            raise ValueError(
                f"already_labeled is a boolean mask of shape {values.shape}; expected one "
                f"value per image, shape ({n_images},)."
            )
        return values.copy()
    values = values.reshape(-1)
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"already_labeled must hold row indices (int) or be a boolean mask; got dtype "
            f"{values.dtype}."
        )
    outside = (values < 0) | (values >= n_images)
    if outside.any():
        position = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"already_labeled[{position}] = {int(values[position])} is not a row of features; "
            f"expected indices from 0 to {n_images - 1}."
        )
    mask[values] = True
    return mask


def _unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a row of zeros stays zero."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(np.float32).tiny)


def _count(images: Any) -> int:
    return len(images) if hasattr(images, "__len__") else np.asarray(images).shape[0]
