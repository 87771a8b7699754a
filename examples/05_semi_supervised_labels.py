"""Semi-supervised: label a few images, mark the rest -1, fit one pipeline on all of them.

scikit-learn marks unlabeled samples with the label ``-1``. sparsam follows it everywhere:

- ``DinoFeaturizer.fit(X, y)`` ignores ``y``: DINO trains on every image, labeled or not;
- ``sparsam.model_selection.LabeledOnly(estimator)`` fits a supervised classifier on the
  samples whose label is not -1, so that
  ``make_pipeline(DinoFeaturizer(), LabeledOnly(SVC()))`` is one ``fit(images, labels)``;
- scikit-learn's ``SelfTrainingClassifier`` works at the end of such a pipeline too: it
  pseudo-labels confident unlabeled images and refits (here on the frozen featurizer, so that
  DINO is not trained a second time);
- ``FewShotSplit`` and ``few_shot_curve`` never draw a -1 sample.

The digits are split into ``--n-labeled`` labeled images per class; every other digit is
given the label -1 for training, and its true label is used only to score the predictions.

Run it from the repository root::

    python examples/05_semi_supervised_labels.py
    python examples/05_semi_supervised_labels.py --n-labeled 5 --epochs 20

About 3 minutes on 2 CPU cores with the default 10 epochs (about 12 s per epoch).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import SelfTrainingClassifier
from sklearn.svm import SVC

from sparsam import DinoFeaturizer, FewShotSplit
from sparsam.datasets import load_demo
from sparsam.model_selection import LabeledOnly
from sparsam.recipes import DIGITS_RECIPE


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="DINO on all digits, a classifier on the few labeled ones (-1 marks the "
        "unlabeled); about 3 minutes on 2 CPU cores."
    )
    parser.add_argument("--epochs", type=int, default=10, help="DINO epochs (default: 10)")
    parser.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="use only the first N digits (default: all 1,797); for quick trials",
    )
    parser.add_argument(
        "--n-labeled", type=int, default=10, help="labeled images per class (default: 10)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="SelfTrainingClassifier: pseudo-label above this probability (default: 0.9)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random state (default: 0)")
    parser.add_argument("--verbose", type=int, default=0, help="1 shows progress bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    images, true_labels, _ = load_demo()
    images, true_labels = images[: args.n_images], true_labels[: args.n_images]
    split = FewShotSplit(args.n_labeled, n_repeats=1, random_state=args.seed)
    labeled, unlabeled = next(split.split(images, true_labels))
    labels = np.full_like(true_labels, -1)
    labels[labeled] = true_labels[labeled]
    print(
        f"{len(images)} digits: {len(labeled)} labeled ({args.n_labeled} per class), "
        f"{len(unlabeled)} marked -1"
    )

    featurizer = DinoFeaturizer(
        **{
            **DIGITS_RECIPE,
            "epochs": args.epochs,
            "warmup_epochs": min(DIGITS_RECIPE["warmup_epochs"], args.epochs // 4),
            "teacher_temperature": 0.02 if args.epochs < DIGITS_RECIPE["epochs"] else 0.04,
        },
        random_state=args.seed,
        verbose=args.verbose,
    )
    pipeline = make_pipeline(
        featurizer, LabeledOnly(make_pipeline(StandardScaler(), SVC(class_weight="balanced")))
    )
    pipeline.fit(images, labels)  # one call: DINO on every image, the SVC on the labeled ones
    dino = pipeline[0].set_params(verbose=0)
    svc = pipeline[-1]
    print(
        f"DINO trained {len(dino.history_['loss'])} epochs on all {len(images)} images; "
        f"LabeledOnly fitted the SVC on {svc.n_labeled_} labeled images, "
        f"classes {svc.classes_.tolist()} (no -1)"
    )
    score = balanced_accuracy_score(true_labels[unlabeled], pipeline.predict(images[unlabeled]))
    print(f"LabeledOnly(SVC): balanced accuracy on the {len(unlabeled)} unlabeled: {score:.3f}")

    # Self-training: confident predictions on the unlabeled images become labels, in rounds.
    # FrozenEstimator reuses the DINO features; LogisticRegression gives the probabilities.
    self_training = make_pipeline(
        FrozenEstimator(dino),
        StandardScaler(),
        SelfTrainingClassifier(
            LogisticRegression(class_weight="balanced", max_iter=5000),
            threshold=args.threshold,
        ),
    ).fit(images, labels)
    classifier = self_training[-1]
    n_pseudo = int(np.sum(classifier.labeled_iter_ > 0))
    score = balanced_accuracy_score(
        true_labels[unlabeled], self_training.predict(images[unlabeled])
    )
    print(
        f"SelfTrainingClassifier(LogisticRegression): {n_pseudo} images pseudo-labeled in "
        f"{classifier.n_iter_} rounds; balanced accuracy on the {len(unlabeled)} unlabeled: "
        f"{score:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
