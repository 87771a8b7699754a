"""Never worse than where you started: choose the DINO snapshot by the labels given to ``fit``.

On small data sets DINO from scratch can make features worse than the backbone's starting
weights (issue 18: on a held-out colour-texture set the trained CLS token scored 0.40 against
0.60 untrained at one label per class). When ``DinoFeaturizer.fit`` receives labels, a
`SnapshotScorer` scores the teacher's features of the labeled images, as the starting
weights and after every epoch, by cross-validated balanced accuracy of a cheap classifier
(`labeled_score`), and the featurizer keeps the best snapshot. The DINO loss never sees the
labels, and only the labels passed to ``fit`` are read: inside ``cross_validate`` those of
the training folds.

The same features give ``history_["knn_accuracy"]``, the weighted k-nearest-neighbour
accuracy that DINO, lightly and solo-learn log per epoch (`knn_accuracy`): cheap, and read
from the features already computed, so it costs no forward pass and changes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ._estimator import batched_outputs
from .data import ImageSource
from .readout import ReadOut

__all__ = ["SnapshotScorer", "knn_accuracy", "labeled_score"]

# Folds (at most) and repeats of the stratified cross-validation that scores a snapshot.
N_SPLITS = 5
N_REPEATS = 3
# DINO's eval_knn.py: 20 neighbours, votes weighted by exp(cosine similarity / 0.07).
KNN_NEIGHBOURS = 20
KNN_TEMPERATURE = 0.07
# Rows of the similarity matrix computed at once: memory of 1024 x n floats.
KNN_CHUNK = 1024


def labeled_score(features: np.ndarray, labels: np.ndarray) -> float:
    """Cross-validated balanced accuracy of ``StandardScaler -> SVC`` on the features.

    The classifier of the few-shot protocol (RBF SVC, ``class_weight="balanced"``), scored
    on ``N_REPEATS`` repeats of stratified ``k``-fold splits with ``k`` the smallest class
    count capped at ``N_SPLITS``; the splits are fixed (``random_state=0``), so every
    snapshot is scored on the same ones. Every class needs at least 2 samples.

    Examples
    --------
    >>> import numpy as np
    >>> features = np.r_[np.zeros((4, 2)), np.ones((4, 2))] + np.arange(8)[:, None] * 0.01
    >>> labeled_score(features, np.repeat([0, 1], 4))
    1.0
    """
    n_splits = min(N_SPLITS, int(np.unique(labels, return_counts=True)[1].min()))
    splits = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=N_REPEATS, random_state=0)
    classifier = make_pipeline(StandardScaler(), SVC(class_weight="balanced"))
    scores = cross_val_score(classifier, features, labels, cv=splits, scoring="balanced_accuracy")
    return float(np.mean(scores))


def knn_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    n_neighbors: int = KNN_NEIGHBOURS,
    temperature: float = KNN_TEMPERATURE,
) -> float:
    """Leave-one-out accuracy of DINO's weighted k-nearest-neighbour classifier.

    As DINO's ``eval_knn.py`` (and lightly's and solo-learn's kNN monitors): features L2
    normalised, each image's ``n_neighbors`` most cosine-similar other images vote for their
    class with weight ``exp(similarity / temperature)``, and the class with the most weight
    is predicted (ties to the class sorted first). Every image is classified by all the
    others (leave one out), so no split is drawn and the score is deterministic. The
    fraction predicted right (top-1 accuracy, as DINO reports it; not balanced).

    Parameters
    ----------
    features : ndarray of shape (n, d)
    labels : ndarray of shape (n,)
    n_neighbors : int, default=20
        Neighbours per image, at most ``n - 1``.
    temperature : float, default=0.07

    Returns
    -------
    float
        In [0, 1]; NaN for fewer than 2 images.

    Examples
    --------
    >>> import numpy as np
    >>> features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> knn_accuracy(features, np.array([0, 0, 1, 1]), n_neighbors=1)
    1.0
    """
    features = np.asarray(features, dtype=np.float32)
    n_images = len(features)
    if n_images < 2:
        return float("nan")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    features = features / np.maximum(norms, np.finfo(np.float32).tiny)
    _, codes = np.unique(labels, return_inverse=True)
    n_classes = int(codes.max()) + 1
    k = min(n_neighbors, n_images - 1)
    correct = 0
    for start in range(0, n_images, KNN_CHUNK):
        stop = min(start + KNN_CHUNK, n_images)
        rows = np.arange(stop - start)
        similarity = features[start:stop] @ features.T
        # Leave one out: an image is never its own neighbour.
        similarity[rows, rows + start] = -np.inf
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / temperature)
        votes = np.zeros((stop - start, n_classes))
        np.add.at(votes, (rows[:, None], codes[nearest]), weights)
        correct += int(np.sum(votes.argmax(axis=1) == codes[start:stop]))
    return correct / n_images


class SnapshotScorer:
    """``scorer(backbone)``: `labeled_score` and `knn_accuracy` of the labeled images.

    Parameters
    ----------
    images : ImageSource
        The labeled images, already at the training size (uint8).
    labels : ndarray
        Their labels (at least 2 classes, at least 2 images each).
    data_config : dict
        The featurizer's ``data_config_`` (normalisation, image size).
    readout : dict
        ``pooling`` and ``n_last_blocks`` of the featurizer: snapshots are scored on the
        features ``transform`` will return.
    batch_size : int
        Images per forward pass.
    device : torch.device
        Where the backbone is.
    precision : str
        The featurizer's ``precision``.
    """

    def __init__(
        self,
        images: ImageSource,
        labels: np.ndarray,
        data_config: dict[str, Any],
        readout: dict[str, Any],
        batch_size: int,
        device: torch.device,
        precision: str,
    ) -> None:
        self.images = images
        self.labels = labels
        self.data_config = data_config
        self.readout = readout
        self.batch_size = batch_size
        self.device = device
        self.precision = precision

    @property
    def key(self) -> str:
        """A digest of the labels, which a checkpoint must share to be resumed."""
        text = "\0".join(map(str, self.labels.tolist()))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def __call__(self, backbone: torch.nn.Module) -> dict[str, float]:
        """``selection_score`` (`labeled_score`, which chooses the snapshot) and
        ``knn_accuracy`` of the backbone's features of the labeled images."""
        readout = ReadOut(backbone, self.readout["pooling"], self.readout["n_last_blocks"])
        features = batched_outputs(
            readout,
            self.images,
            self.data_config,
            readout.width,
            batch_size=self.batch_size,
            num_workers=0,
            device=self.device,
            precision=self.precision,
            verbose=0,
            description="scoring",
        )
        return {
            "selection_score": labeled_score(features, self.labels),
            "knn_accuracy": knn_accuracy(features, self.labels),
        }
