"""TypiClust and k-means selection: one image per k-means cluster, uncovered clusters first.

Both methods cluster every usable image (labeled or not) into ``min(labeled + n, 500)``
clusters, visit the clusters with the fewest labeled images first (the largest first among
equals; clusters of 5 images or fewer last, as TypiClust drops them) and take from each the
best unlabeled image: the most typical one (TypiClust) or the one closest to the centroid
(k-means). With more images to pick than clusters they go round again, taking the next best.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import sparse
from sklearn.cluster import kmeans_plusplus
from sklearn.neighbors import NearestNeighbors

__all__ = [
    "MAX_CLUSTERS",
    "closest_to_centroids",
    "cluster_order",
    "kmeans_labels",
    "typical_per_cluster",
    "typicality",
]

# TypiClust's constants (Hacohen et al. 2022, and their code): at most 500 clusters, clusters of
# 5 images or fewer are outliers, typicality over the 20 nearest neighbours.
MAX_CLUSTERS = 500
SMALL_CLUSTER = 5
TYPICALITY_NEIGHBOURS = 20
# Above this many unlabeled images in a cluster, typicality is computed for a random sample.
TYPICALITY_MAX_CANDIDATES = 5_000
# k-means: 3 starts up to this many images, 1 above; seeds drawn from at most
# SEEDING_IMAGES of them; at most MAX_ITERATIONS Lloyd steps.
FULL_KMEANS_MAX_IMAGES = 20_000
SEEDING_IMAGES = 10_000
MAX_ITERATIONS = 50
# Lloyd stops once no more than this fraction of the labels change in a step.
STOP_CHANGED_FRACTION = 1e-3
ASSIGN_CHUNK_ROWS = 8192


def typical_per_cluster(
    unit: np.ndarray,
    n: int,
    labeled: np.ndarray,
    candidates: np.ndarray,
    rng: np.random.RandomState,
) -> list[int]:
    """TypiClust: the most typical unlabeled image of each cluster, uncovered clusters first."""

    def most_typical_first(members: np.ndarray, cluster: int, centres: np.ndarray) -> np.ndarray:
        rows = np.arange(len(members))
        if len(members) > TYPICALITY_MAX_CANDIDATES:
            # Typicality of a random sample of a huge cluster, against the whole cluster: the
            # neighbour search costs sample x cluster, not cluster squared (seconds instead of
            # a minute for one cluster of 100,000 images).
            rows = np.sort(rng.choice(len(members), TYPICALITY_MAX_CANDIDATES, replace=False))
        scores = typicality(unit[members], rows)
        return members[rows[np.argsort(-scores, kind="stable")]]

    return _one_per_cluster(unit, n, labeled, candidates, rng, most_typical_first)


def closest_to_centroids(
    unit: np.ndarray,
    n: int,
    labeled: np.ndarray,
    candidates: np.ndarray,
    rng: np.random.RandomState,
) -> list[int]:
    """k-means selection: the unlabeled image closest to each centroid, uncovered clusters
    first."""

    def closest_first(members: np.ndarray, cluster: int, centres: np.ndarray) -> np.ndarray:
        distances = np.linalg.norm(unit[members] - centres[cluster], axis=1)
        return members[np.argsort(distances, kind="stable")]

    return _one_per_cluster(unit, n, labeled, candidates, rng, closest_first)


def typicality(features: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """TypiClust's typicality: the inverse of the mean distance to the nearest neighbours.

    Over ``k = min(20, len(features) // 2)`` neighbours among ``features`` (each image's own
    row excluded), so a small cluster is judged on half of itself, as in the paper's code; a
    single image has typicality 1. ``rows`` (indices into ``features``) limits the images
    whose typicality is computed; their neighbours are still searched among all.

    >>> points = np.array([[0.0], [0.1], [0.2], [5.0]])
    >>> int(np.argmax(typicality(points)))
    1
    """
    k = min(TYPICALITY_NEIGHBOURS, len(features) // 2)
    if rows is None:
        rows = np.arange(len(features))
    if k < 1:
        return np.ones(len(rows))
    search = NearestNeighbors(n_neighbors=k + 1).fit(features)
    distances, neighbours = search.kneighbors(features[rows])
    # Drop each image itself; a duplicate found first in its place is dropped instead, and
    # the image (at distance 0 as well) kept, which gives the same distances.
    itself = neighbours == np.asarray(rows)[:, None]
    first_self = np.where(itself.any(axis=1), itself.argmax(axis=1), 0)
    keep = np.ones_like(itself)
    keep[np.arange(len(rows)), first_self] = False
    distances = distances[keep].reshape(len(rows), k)
    return 1.0 / (distances.mean(axis=1) + 1e-5)


def kmeans_labels(
    unit: np.ndarray, n_clusters: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels of the rows and the centroids, by Lloyd's k-means seeded from ``rng``.

    k-means++ seeds (`sklearn.cluster.kmeans_plusplus`) on at most 10,000 of the rows, then
    Lloyd iterations on all of them with one matrix product per chunk of rows, until at most
    0.1 % of the labels change (at most 50 iterations); the labels returned are each row's
    nearest centroid. The best of 3 starts by inertia up to 20,000 rows, one start above.
    scikit-learn's `~sklearn.cluster.KMeans` needed minutes for 200 clusters of 100,000 x 384
    features on 2 cores, through small per-thread products; this takes seconds.
    """
    n_clusters = min(n_clusters, len(unit))
    starts = 3 if len(unit) <= FULL_KMEANS_MAX_IMAGES else 1
    best = None
    for _ in range(starts):
        labels, centres, inertia = _lloyd(unit, n_clusters, rng)
        if best is None or inertia < best[2]:
            best = labels, centres, inertia
    return best[0], best[1]


def _lloyd(
    unit: np.ndarray, n_clusters: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray, float]:
    """One k-means run: labels, centroids and inertia."""
    sample = unit
    if len(unit) > SEEDING_IMAGES:
        sample = unit[np.sort(rng.choice(len(unit), SEEDING_IMAGES, replace=False))]
    seed = int(rng.randint(np.iinfo(np.int32).max))
    with warnings.catch_warnings():
        # Fewer distinct images than clusters (duplicates): some centres coincide and their
        # clusters stay empty; the selection passes over empty clusters.
        warnings.simplefilter("ignore", RuntimeWarning)
        # float64: scikit-learn computes float32 distances through a slow chunked upcast.
        centres = kmeans_plusplus(sample.astype(np.float64), n_clusters, random_state=seed)[0]
    labels = np.full(len(unit), -1)
    for _ in range(MAX_ITERATIONS):
        new_labels, distances = _nearest_centre(unit, centres)
        changed = np.count_nonzero(new_labels != labels)
        labels = new_labels
        if changed <= STOP_CHANGED_FRACTION * len(unit):
            break
        members = sparse.csr_matrix(
            (np.ones(len(unit), np.float32), (labels, np.arange(len(unit)))),
            shape=(n_clusters, len(unit)),
        )
        counts = np.asarray(members.sum(axis=1)).ravel()
        sums = np.asarray(members @ unit)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return labels, centres.astype(np.float32), float(distances.sum())


def _nearest_centre(unit: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centre, for every row."""
    centres = centres.astype(np.float32)
    centre_norms = np.einsum("ij,ij->i", centres, centres)
    labels = np.empty(len(unit), dtype=np.intp)
    distances = np.empty(len(unit), dtype=np.float64)
    for start in range(0, len(unit), ASSIGN_CHUNK_ROWS):
        rows = unit[start : start + ASSIGN_CHUNK_ROWS]
        # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c; |x|^2 is the same for every centre of a row.
        partial = centre_norms[None, :] - 2 * (rows @ centres.T)
        nearest = np.argmin(partial, axis=1)
        labels[start : start + len(rows)] = nearest
        row_norms = np.einsum("ij,ij->i", rows, rows)
        best = partial[np.arange(len(rows)), nearest] + row_norms
        distances[start : start + len(rows)] = np.maximum(best, 0)
    return labels, distances


def cluster_order(labels: np.ndarray, labeled: np.ndarray, n_clusters: int) -> np.ndarray:
    """Clusters in TypiClust's order: the fewest labeled images first, then the largest; clusters
    of 5 images or fewer after all others; empty clusters left out."""
    sizes = np.bincount(labels, minlength=n_clusters)
    labeled_counts = np.bincount(labels[labeled], minlength=n_clusters)
    ids = np.arange(n_clusters)
    # np.lexsort sorts by its last key first.
    order = np.lexsort((ids, -sizes, labeled_counts, sizes <= SMALL_CLUSTER))
    return order[sizes[order] > 0]


def _one_per_cluster(
    unit: np.ndarray,
    n: int,
    labeled: np.ndarray,
    candidates: np.ndarray,
    rng: np.random.RandomState,
    best_first: Callable[[np.ndarray, int, np.ndarray], np.ndarray],
) -> list[int]:
    """Round-robin over the clusters in `cluster_order`, taking the next image of each by
    ``best_first(unlabeled members, cluster, centroids)``."""
    usable = np.flatnonzero(labeled | candidates)
    n_clusters = min(int(labeled.sum()) + n, MAX_CLUSTERS, len(usable))
    usable_labels, centres = kmeans_labels(unit[usable], n_clusters, rng)
    labels = np.full(len(unit), -1)
    labels[usable] = usable_labels
    order = cluster_order(usable_labels, labeled[usable], len(centres))
    ranked: dict[int, np.ndarray] = {}
    taken = dict.fromkeys(order.tolist(), 0)
    chosen: list[int] = []
    while len(chosen) < n:
        for cluster in order.tolist():
            if cluster not in ranked:
                ranked[cluster] = best_first(
                    np.flatnonzero((labels == cluster) & candidates), cluster, centres
                )
            if taken[cluster] < len(ranked[cluster]):
                chosen.append(int(ranked[cluster][taken[cluster]]))
                taken[cluster] += 1
                if len(chosen) == n:
                    break
    return chosen
