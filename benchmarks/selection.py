"""Which images to label first: selection methods against random selection, per budget.

The protocol of ``sparsam.model_selection.budget_curve``: a budget of B images in total is
chosen from the features alone (``sparsam.select_to_label``), an SVC
(``StandardScaler -> SVC(class_weight="balanced")``, the few-shot tables' classifier) is
fitted on those B images and their labels, and balanced accuracy is measured on every other
image; a class that got no label cannot be predicted. B = 1, 2, 5 and 10 times the number of
classes; 5 seeds per cell, the same seeds for every method (paired draws).

Data: the few-shot suite's three data sets (digits; synthetic cytology; synthetic tissue
textures; ``benchmarks/fewshot_suite.py``), each in its balanced form and in an imbalanced
form whose class sizes fall geometrically by a factor of 30 from the largest class to the
smallest (as in the paper's bone-marrow set; which class is largest is a seeded draw).
Features: DINO trained by the small-data recipe (``sparsam.recipes.small_data_recipe``,
random_state=0) on all images of the balanced set without labels, the same backbone
untrained, and raw pixels. Features are cached in ``--features-dir`` (training DINO takes
about 10 minutes per data set on 2 CPU cores).

``--speed`` times every method on 100,000 x 384 features (a seeded mixture of 50 Gaussian
clusters of geometric sizes) at n = 200 and n = 1 (one cluster of everything: the
largest neighbour search).

    python benchmarks/selection.py [--datasets digits cytology textures]
        [--features dino untrained pixels] [--methods typiclust probcover kmeans random]
        [--repeats 5] [--features-dir DIR] [--speed]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

# benchmarks/ is on sys.path when a script here runs.
from fewshot_suite import load_suite_dataset
from memory import cpu_model

from sparsam.featurizer import DinoFeaturizer
from sparsam.labeling import METHODS, select_to_label
from sparsam.model_selection import budget_curve
from sparsam.recipes import small_data_recipe

DEFAULT_FEATURES_DIR = Path(__file__).with_name("selection_features")
FEATURE_KINDS = ("dino", "untrained", "pixels")
IMBALANCE_FACTOR = 30
TARGET_MULTIPLE = 2


def suite_features(dataset: str, kind: str, directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features of one kind for one data set of the suite and its labels, cached as .npy."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dataset}_{kind}.npy"
    labels_path = directory / f"{dataset}_labels.npy"
    if path.exists() and labels_path.exists():
        return np.load(path), np.load(labels_path, allow_pickle=False)
    images, labels = load_suite_dataset(dataset)
    if kind == "pixels":
        features = images.reshape(len(images), -1).astype(np.float32)
    else:
        params = {
            **small_data_recipe(image_size=images.shape[1], n_images=len(images)),
            "random_state": 0,
            "verbose": 0,
        }
        if kind == "untrained":
            params["epochs"] = 0
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            features = DinoFeaturizer(**params).fit(images).transform(images)
        minutes = (time.perf_counter() - started) / 60
        print(f"  {dataset}: {kind} features in {minutes:.1f} min", flush=True)
    np.save(path, features)
    np.save(labels_path, labels)
    return features, labels


def imbalanced_subset(labels: np.ndarray, factor: float, seed: int = 0) -> np.ndarray:
    """Indices of a subset whose class sizes fall geometrically by ``factor`` from the largest
    class (as large as the smallest class of ``labels``) to the smallest."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    largest = min(int((labels == c).sum()) for c in classes)
    steps = np.arange(len(classes)) / max(len(classes) - 1, 1)
    sizes = np.maximum(1, np.round(largest * factor**-steps)).astype(int)
    chosen = [
        rng.permutation(np.flatnonzero(labels == c))[:size]
        for c, size in zip(classes, sizes, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def summary_row(name: str, result, methods: list[str]) -> str:
    """At B = 2x classes: each method's gain over random and its class coverage."""
    column = list(result.budgets).index(TARGET_MULTIPLE * result.n_classes)
    random_mean = result.mean("random")[column]
    cells = []
    for method in methods:
        if method == "random":
            cells.append(f"{random_mean:.3f} [{result.mean_coverage(method)[column]:.2f}]")
            continue
        gain = result.mean(method)[column] - random_mean
        cells.append(f"{gain:+.3f} [{result.mean_coverage(method)[column]:.2f}]")
    return f"| {name} | " + " | ".join(cells) + " |"


def speed(methods: list[str]) -> None:
    """Seconds per method on 100,000 x 384 features, n = 200."""
    rng = np.random.default_rng(0)
    n_clusters, n_images, width = 50, 100_000, 384
    weights = 30.0 ** -(np.arange(n_clusters) / (n_clusters - 1))
    cluster = rng.choice(n_clusters, n_images, p=weights / weights.sum())
    features = rng.normal(size=(n_clusters, width))[cluster] * 2 + rng.normal(
        size=(n_images, width)
    )
    features = features.astype(np.float32)
    print(f"\nSpeed: {n_images:,} x {width} features, {torch.get_num_threads()} threads")
    print("| method | seconds, n = 200 | clusters covered of 50 | seconds, n = 1 |")
    print("| --- | --- | --- | --- |")
    for method in methods:
        started = time.perf_counter()
        chosen = select_to_label(features, 200, method=method, random_state=0)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        select_to_label(features, 1, method=method, random_state=0)
        one = time.perf_counter() - started
        covered = len(np.unique(cluster[chosen]))
        print(f"| {method} | {seconds:.1f} | {covered} | {one:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "cytology", "textures"])
    parser.add_argument("--features", nargs="+", default=list(FEATURE_KINDS),
                        choices=FEATURE_KINDS)  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--features-dir", type=Path, default=DEFAULT_FEATURES_DIR)
    parser.add_argument("--speed", action="store_true", help="only time the methods")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods if m != "random"] + ["random"]
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if args.speed:
        speed(methods)
        return
    header = "| data set, form, features | " + " | ".join(
        f"{m} − random [coverage]" if m != "random" else "random [coverage]" for m in methods
    )
    summary = [header + " |", "| --- " * (len(methods) + 1) + "|"]
    for dataset in args.datasets:
        for kind in args.features:
            features, labels = suite_features(dataset, kind, args.features_dir)
            for form in ("balanced", "imbalanced"):
                subset = np.arange(len(labels))
                if form == "imbalanced":
                    subset = imbalanced_subset(labels, IMBALANCE_FACTOR)
                sizes = np.bincount(np.unique(labels[subset], return_inverse=True)[1])
                started = time.perf_counter()
                result = budget_curve(
                    features[subset],
                    labels[subset],
                    methods=methods,
                    n_repeats=args.repeats,
                    random_state=0,
                )
                name = f"{dataset}, {form}, {kind}"
                print(
                    f"\n{name}: {len(subset)} images, class sizes {sizes.max()} … {sizes.min()}"
                    f" ({time.perf_counter() - started:.0f} s)\n{result.table()}",
                    flush=True,
                )
                summary.append(summary_row(name, result, methods))
    print(
        f"\nAt B = {TARGET_MULTIPLE}× the number of classes: balanced accuracy gain over random "
        "selection (mean over seeds) [mean fraction of classes labeled]\n"
    )
    print("\n".join(summary))


if __name__ == "__main__":
    sys.exit(main())
