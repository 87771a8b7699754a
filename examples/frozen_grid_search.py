"""Pretrain once, then tune the classifier with a grid search that never repeats pretraining.

DINO sees every image (labels are not needed); the grid search over the SVC's C then uses only
100 labeled images, with the featurizer wrapped in ``FrozenEstimator`` so that no fold refits it.

    python examples/frozen_grid_search.py
"""

from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sparsam import DinoFeaturizer
from sparsam.cli import DIGITS_RECIPE
from sparsam.datasets import load_demo

images, labels, _ = load_demo()
labeled, test, labeled_y, test_y = train_test_split(
    images, labels, train_size=100, stratify=labels, random_state=0
)

featurizer = DinoFeaturizer(**{**DIGITS_RECIPE, "epochs": 20, "random_state": 0}).fit(images)
featurizer.set_params(verbose=0)  # no progress bar for each fold's embedding

pipeline = make_pipeline(
    FrozenEstimator(featurizer), StandardScaler(), SVC(class_weight="balanced")
)
grid = {"svc__C": [0.1, 1.0, 10.0]}
search = GridSearchCV(pipeline, grid, cv=5, scoring="balanced_accuracy").fit(labeled, labeled_y)
print(f"best C: {search.best_params_['svc__C']}")
print(f"balanced accuracy on the held-out digits: {search.score(test, test_y):.3f}")
