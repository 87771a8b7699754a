"""ProbCover (Yehuda et al., NeurIPS 2022): greedy maximum coverage of δ-balls.

Every image covers the images within distance δ of it. Starting from what the labeled images
cover, the greedy step picks the image whose ball holds the most images not yet covered. δ is
the largest radius at which 95 % of the balls are pure with respect to k-means pseudo-labels,
the paper's rule for choosing it without labels.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

from .clusters import MAX_CLUSTERS, kmeans_labels

__all__ = ["MAX_COVERED_IMAGES", "ball_graph", "estimate_delta", "greedy_coverage"]

# Balls are counted on at most this many images: the pairwise distances of 20,000 images
# take a few seconds on 2 cores, those of 100,000 twenty-five times as long.
MAX_COVERED_IMAGES = 20_000
PURITY = 0.95
CHUNK_ROWS = 1024


def greedy_coverage(
    unit: np.ndarray,
    n: int,
    labeled: np.ndarray,
    candidates: np.ndarray,
    delta: float | None,
    rng: np.random.RandomState,
) -> list[int]:
    """ProbCover's greedy selection of ``n`` candidates (indices into ``unit``)."""
    pool = np.flatnonzero(candidates)
    if len(pool) > max(MAX_COVERED_IMAGES, n):
        # A uniform sample's coverage estimates the whole set's without bias.
        pool = np.sort(rng.choice(pool, max(MAX_COVERED_IMAGES, n), replace=False))
    points = unit[pool]
    if delta is None:
        n_clusters = max(2, min(int(labeled.sum()) + n, MAX_CLUSTERS))
        delta = estimate_delta(points, kmeans_labels(points, n_clusters, rng)[0])
    graph = ball_graph(points, delta)
    covered = np.zeros(len(pool), dtype=bool)
    if labeled.any():
        nearest = NearestNeighbors(n_neighbors=1).fit(unit[labeled]).kneighbors(points)[0]
        covered = nearest[:, 0] < delta
    return [int(pool[index]) for index in _greedy(graph, covered, n, rng)]


def estimate_delta(points: np.ndarray, pseudo_labels: np.ndarray) -> float:
    """The largest radius at which at least 95 % of the balls around ``points`` are pure.

    A ball is pure when every point inside it (distance below the radius) has the centre's
    pseudo-label, i.e. when the radius is at most the distance from the centre to the
    nearest point of another pseudo-label.

    >>> points = np.array([[0.0], [0.1], [1.0], [1.1]])
    >>> estimate_delta(points, np.array([0, 0, 1, 1]))
    0.9
    """
    to_other = np.full(len(points), np.inf)
    for rows, distances in _distance_chunks(points):
        distances[pseudo_labels[rows][:, None] == pseudo_labels[None, :]] = np.inf
        to_other[rows] = distances.min(axis=1)
    if not np.isfinite(to_other).any():
        raise ValueError("estimate_delta needs at least two distinct pseudo-labels.")
    ranked = np.sort(to_other)
    return float(ranked[int(np.floor((1 - PURITY) * len(points)))])


def ball_graph(points: np.ndarray, delta: float) -> sparse.csr_matrix:
    """Boolean adjacency: row ``i`` holds the points within distance ``delta`` of point ``i``
    (itself included)."""
    parts = [sparse.csr_matrix(distances < delta) for _, distances in _distance_chunks(points)]
    return sparse.vstack(parts, format="csr") if parts else sparse.csr_matrix((0, 0), dtype=bool)


def _greedy(
    graph: sparse.csr_matrix, covered: np.ndarray, n: int, rng: np.random.RandomState
) -> list[int]:
    """Indices of ``n`` rows of ``graph`` that greedily cover the most uncovered columns; once
    nothing is left to cover, random rows not yet chosen."""
    covered = covered.copy()
    incoming = graph.T.tocsr()
    degree = np.asarray(graph.astype(np.int64) @ (~covered).astype(np.int64)).ravel()
    chosen: list[int] = []
    selectable = np.ones(graph.shape[0], dtype=bool)
    while len(chosen) < n:
        gains = np.where(selectable, degree, -1)
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            rest = rng.choice(np.flatnonzero(selectable), n - len(chosen), replace=False)
            return chosen + [int(index) for index in rest]
        chosen.append(best)
        selectable[best] = False
        ball = graph.indices[graph.indptr[best] : graph.indptr[best + 1]]
        newly_covered = ball[~covered[ball]]
        covered[newly_covered] = True
        # Every ball that held a newly covered point now covers one point fewer.
        degree -= np.bincount(incoming[newly_covered].indices, minlength=len(degree))
    return chosen


def _distance_chunks(points: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row indices, Euclidean distances of those rows to every point), chunk by chunk."""
    squared_norms = np.einsum("ij,ij->i", points, points)
    for start in range(0, len(points), CHUNK_ROWS):
        rows = np.arange(start, min(start + CHUNK_ROWS, len(points)))
        squared = squared_norms[rows][:, None] + squared_norms[None, :]
        squared -= 2 * points[rows] @ points.T
        yield rows, np.sqrt(np.maximum(squared, 0))
