"""``sparsam evaluate``: the paper's experiment, a few-shot curve of frozen features."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..experiments import EVALUATE_DATASETS, run_evaluate
from .images import SKIPPED_REPORT, add_on_error_option, reporting_skipped

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add the ``evaluate`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
    evaluate = commands.add_parser(
        "evaluate",
        help="the paper's experiment: few-shot curve of frozen features + a classifier",
        description=(
            "Embed a data set (--dataset NAME, or DATA --labels labels.csv) with a pretrained "
            "(optionally further DINO-trained) featurizer, train one of the paper's classifiers "
            "on N labeled images per class over repeated draws, score balanced accuracy on the "
            "rest, print the table and write "
            "few_shot_curve.csv and few_shot_curve.png to --out. With --supervised, a network "
            "fine-tuned end to end from the same starting point is scored on the same draws "
            "too: a second table, few_shot_curve_supervised.csv, and both curves in the PNG."
        ),
    )
    evaluate.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="with --labels: a folder of images or a .txt/.csv list of image files",
    )
    evaluate.add_argument(
        "--labels",
        metavar="CSV",
        help="with DATA: a CSV with the columns path,label (paths absolute or relative to the "
        "CSV's folder; empty labels and images not in the file are unlabeled)",
    )
    evaluate.add_argument(
        "--dataset", choices=EVALUATE_DATASETS, help="a data set by name (instead of DATA)"
    )
    evaluate.add_argument(
        "--root", default=None, help="the download (a .npz file for medmnist); not for demo"
    )
    features = evaluate.add_mutually_exclusive_group(required=True)
    features.add_argument(
        "--pretrained",
        metavar="SPEC",
        help="imagenet, bm, endo, isic, hf-hub:org/name or a directory from save_backbone",
    )
    features.add_argument(
        "--featurizer", metavar="FILE", help="a fitted DinoFeaturizer saved with joblib.dump"
    )
    evaluate.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="DINO epochs on all images of the data set first, labels unused (default: 0)",
    )
    evaluate.add_argument(
        "--n-per-class",
        type=int,
        nargs="+",
        default=[1, 5, 10, 25, 50, 100, 250],
        help="labeled images per class (default: 1 5 10 25 50 100 250)",
    )
    evaluate.add_argument("--repeats", type=int, default=5, help="draws per N (default: 5)")
    evaluate.add_argument(
        "--classifier", choices=["svm", "logistic_regression", "knn"], default="svm"
    )
    evaluate.add_argument("--out", default=None, help="directory for the CSVs and PNG")
    _add_model_options(evaluate)


def _add_model_options(evaluate: argparse.ArgumentParser) -> None:
    """The options of the featurizer and of the supervised arm."""
    evaluate.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size of the featurizer and of --supervised (default: the backbone's)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size of embedding and of --supervised (default: theirs)",
    )
    evaluate.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    evaluate.add_argument("--seed", type=int, default=0, help="random_state of everything")
    add_on_error_option(evaluate)
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.add_argument(
        "--supervised",
        action="store_true",
        help="also fine-tune the backbone end to end with a linear head on the same draws "
        "(from the DINO-trained or saved featurizer, if any): the paper's supervised arm",
    )
    evaluate.add_argument(
        "--supervised-epochs",
        type=int,
        default=None,
        metavar="N",
        help="most epochs of each fine-tuning; early stopping usually ends it sooner "
        "(default: 100)",
    )


def _labeled_images(args: argparse.Namespace) -> tuple[Any, Any, list[str]] | None:
    """The images of DATA with the labels of ``--labels``; None with ``--dataset``."""
    from ..data.labels import class_indices, read_labels
    from .images import resolve_images

    if (args.dataset is None) == (args.data is None):
        raise ValueError(
            "Pass either --dataset NAME or DATA with --labels labels.csv (a folder or list of "
            "images and a CSV with the columns path,label)."
        )
    if args.dataset is not None:
        if args.labels is not None:
            raise ValueError(
                f"--labels goes with DATA, not with --dataset {args.dataset}, whose loader "
                "reads its own labels."
            )
        return None
    if args.labels is None:
        raise ValueError(
            f"DATA={args.data!r} without --labels: expected a CSV with the columns path,label "
            "naming the labeled images of DATA."
        )
    if args.root is not None:
        raise ValueError("--root goes with --dataset, not with DATA --labels.")
    images = resolve_images(args.data)
    if not isinstance(images, list):
        raise ValueError(
            f"DATA={args.data!r} is a data set of arrays; --labels names image files: "
            "expected a folder of images or a list of image files."
        )
    indices, class_names = class_indices(read_labels(args.labels, images))
    return images, indices, class_names


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam evaluate`` as parsed into ``args``."""
    if args.supervised_epochs is not None and not args.supervised:
        raise ValueError(
            f"--supervised-epochs {args.supervised_epochs} without --supervised: add "
            "--supervised to fine-tune, or drop --supervised-epochs."
        )
    # Without --supervised-epochs, run_evaluate's default: one place states it.
    supervised_options = (
        {} if args.supervised_epochs is None else {"supervised_epochs": args.supervised_epochs}
    )
    # Skipped images are listed in --out; without it, the warning names them.
    report = Path(args.out) / SKIPPED_REPORT if args.out is not None else None
    with reporting_skipped(report):
        _run_evaluate(args, supervised_options)


def _run_evaluate(args: argparse.Namespace, supervised_options: dict[str, Any]) -> None:
    """``run_evaluate`` with the command line's options."""
    labeled = _labeled_images(args)
    run_evaluate(
        args.dataset or Path(args.data).name,
        args.root,
        labeled=labeled,
        pretrained=args.pretrained,
        featurizer=args.featurizer,
        epochs=args.epochs,
        n_per_class=args.n_per_class,
        n_repeats=args.repeats,
        classifier=args.classifier,
        out=args.out,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
        supervised=args.supervised,
        on_error=args.on_error,
        **supervised_options,
    )
