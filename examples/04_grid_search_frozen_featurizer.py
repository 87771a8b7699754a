"""Pretrain once, then grid-search the classifier without repeating pretraining or embedding.

DINO is the expensive step, so the featurizer is fitted once on every digit (no labels) and
wrapped in scikit-learn's ``FrozenEstimator``: ``GridSearchCV`` then clones and fits only the
classifier, never DINO again. The grid compares an SVC and a logistic regression at three
values of C each, on ``FewShotSplit`` folds (exactly ``--n-per-class`` labels per class per
fold) drawn from a labeled pool of ``--n-labeled`` images per class; the best setting is
refitted on the pool and scored on all other digits. ``memory=`` caches every image's
embedding on disk, keyed by the weights and the image, so each image is embedded once however
many folds and settings the search tries: the script counts the cache entries to show it.

Run it from the repository root::

    python examples/04_grid_search_frozen_featurizer.py
    python examples/04_grid_search_frozen_featurizer.py --epochs 20 --memory cache

About 3 minutes on 2 CPU cores with the default 10 epochs (about 12 s per epoch; the
search itself takes seconds).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sparsam import DinoFeaturizer, FewShotSplit
from sparsam.datasets import load_demo
from sparsam.recipes import DIGITS_RECIPE


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fit DINO once, then GridSearchCV over SVC and logistic regression "
        "settings with FewShotSplit folds (about 3 minutes on 2 CPU cores)."
    )
    parser.add_argument("--epochs", type=int, default=10, help="DINO epochs (default: 10)")
    parser.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="use only the first N digits (default: all 1,797); for quick trials",
    )
    parser.add_argument(
        "--n-labeled",
        type=int,
        default=30,
        help="labeled images per class in the pool the search sees (default: 30)",
    )
    parser.add_argument(
        "--n-per-class",
        type=int,
        default=10,
        help="training labels per class in each fold of the search (default: 10)",
    )
    parser.add_argument("--n-repeats", type=int, default=5, help="folds of the search (default: 5)")
    parser.add_argument(
        "--memory",
        type=Path,
        default=None,
        help="embedding cache directory, kept for later runs (default: a temporary one)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random state (default: 0)")
    parser.add_argument("--verbose", type=int, default=0, help="1 shows progress bars")
    return parser.parse_args(argv)


def count_cached_embeddings(memory: Path) -> int:
    """Number of files below ``<memory>/sparsam-embeddings``: one per embedded image."""
    return sum(1 for path in (memory / "sparsam-embeddings").rglob("*") if path.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    images, labels, _ = load_demo()
    images, labels = images[: args.n_images], labels[: args.n_images]
    with tempfile.TemporaryDirectory(prefix="sparsam-embeddings-") as scratch:
        memory = args.memory if args.memory is not None else Path(scratch)
        featurizer = DinoFeaturizer(
            **{
                **DIGITS_RECIPE,
                "epochs": args.epochs,
                "warmup_epochs": min(DIGITS_RECIPE["warmup_epochs"], args.epochs // 4),
                "teacher_temperature": 0.02 if args.epochs < DIGITS_RECIPE["epochs"] else 0.04,
            },
            memory=memory,
            random_state=args.seed,
            verbose=args.verbose,
        )
        print(f"DINO: {args.epochs} epochs on {len(images)} digits, no labels")
        featurizer.fit(images)  # once, on every image
        featurizer.set_params(verbose=0)  # no progress bar for each fold's embedding

        # The labeled pool: n_labeled images per class; the other digits are the test set.
        pool_split = FewShotSplit(args.n_labeled, n_repeats=1, random_state=args.seed)
        pool, test = next(pool_split.split(images, labels))

        pipeline = Pipeline(
            [
                ("features", FrozenEstimator(featurizer)),
                ("scale", StandardScaler()),
                ("classifier", SVC()),
            ]
        )
        grid = [
            {
                "classifier": [SVC(class_weight="balanced")],
                "classifier__C": [0.1, 1.0, 10.0],
            },
            {
                "classifier": [LogisticRegression(class_weight="balanced", max_iter=5000)],
                "classifier__C": [0.1, 1.0, 10.0],
            },
        ]
        folds = FewShotSplit(args.n_per_class, n_repeats=args.n_repeats, random_state=args.seed)
        search = GridSearchCV(pipeline, grid, cv=folds, scoring="balanced_accuracy")
        search.fit(images[pool], labels[pool])

        results = search.cv_results_
        print(
            f"\nGridSearchCV: {len(results['params'])} settings x {folds.get_n_splits()} folds, "
            f"{args.n_per_class} labels per class to train each fold "
            f"(pool: {args.n_labeled} per class)"
        )
        print(f"{'classifier':<22}{'C':>6}{'balanced accuracy':>22}{'rank':>6}")
        for index in np.argsort(results["rank_test_score"], kind="stable"):
            params = results["params"][index]
            name = type(params["classifier"]).__name__
            mean, std = results["mean_test_score"][index], results["std_test_score"][index]
            cell = f"{mean:.3f} ± {std:.3f}"
            rank = results["rank_test_score"][index]
            print(f"{name:<22}{params['classifier__C']:>6}{cell:>22}{rank:>6}")
        best = search.best_params_
        print(
            f"best: {type(best['classifier']).__name__}(C={best['classifier__C']}), refitted "
            f"on the pool of {len(pool)}; balanced accuracy on the other {len(test)} digits: "
            f"{search.score(images[test], labels[test]):.3f}"
        )
        print(
            f"embeddings in the cache: {count_cached_embeddings(memory)} for {len(images)} "
            "images: each was embedded once, then read from the cache in every fold and setting"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
