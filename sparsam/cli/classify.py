"""``sparsam classify``: train the final classifier on all labels, predict the unlabeled images.

The last step of the clinician's workflow: a folder of images, a labels CSV (``path,label``)
for some of them, a backbone. The paper's classifiers (`paper_classifiers`) fit the frozen
embeddings of the labeled images; ``--classifier finetune`` fine-tunes a
`SupervisedClassifier` instead, with the settings machinery of ``sparsam pretrain``
(``--config``, ``--dry-run``, ``params.json``, ``--resume``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .images import (
    DATA_HELP,
    SKIPPED_REPORT,
    add_backbone_option,
    add_on_error_option,
    reporting_skipped,
    resolve_images,
)
from .settings import (
    OPTION_FLAGS,
    Layer,
    Settings,
    add_settings_options,
    check_checkpoints,
    check_resume,
    config_layer,
    options_layer,
    print_dry_run,
    resolve_settings,
    seconds_per_step,
    seed_default_layer,
    write_params,
)

__all__ = ["CLASSIFIERS", "add_parser", "run"]

# --classifier: the paper's classifiers on frozen embeddings (keys of paper_classifiers), and
# a network fine-tuned end to end.
CLASSIFIERS = {
    "svm": "svm",
    "logistic": "logistic_regression",
    "logistic_regression": "logistic_regression",
    "knn": "knn",
    "finetune": None,
}
# SupervisedClassifier parameters that have an option of the same name.
_FINETUNE_OPTIONS = ("epochs", "lr", "image_size", "batch_size", "device", "precision")


def add_parser(commands: Any) -> None:
    """Add the ``classify`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
    classify = commands.add_parser(
        "classify",
        help="fit a classifier on the labeled images and predict the unlabeled ones",
        description=(
            "Embed the images of DATA with the backbone SPEC (as sparsam embed does), fit one "
            "of the paper's classifiers on the images the labels CSV labels, and write one row "
            "per unlabeled image to --out: its path, the predicted class and one probability "
            "column per class (proba_<class>). The fitted pipeline (featurizer + classifier) "
            "goes to --model, for joblib.load(model).predict(paths). --classifier finetune "
            "fine-tunes the backbone end to end instead (a SupervisedClassifier)."
        ),
    )
    classify.add_argument("data", metavar="DATA", help=DATA_HELP)
    classify.add_argument(
        "--labels",
        required=True,
        metavar="CSV",
        help="CSV with the columns path,label (paths absolute or relative to the CSV's folder; "
        "an empty label, or an image not in the file, is unlabeled)",
    )
    add_backbone_option(classify)
    classify.add_argument(
        "--out", required=True, metavar="FILE.csv", help="the predictions of the unlabeled images"
    )
    classify.add_argument(
        "--classifier",
        choices=list(CLASSIFIERS),
        default="svm",
        help="svm, logistic or knn on frozen embeddings (paper_classifiers), or finetune: a "
        "SupervisedClassifier trained end to end (default: svm)",
    )
    classify.add_argument(
        "--model",
        metavar="FILE",
        help="where the fitted pipeline goes (default: --out with .joblib)",
    )
    classify.add_argument("--arch", metavar="NAME", help="timm model name for --backbone imagenet")
    classify.add_argument(
        "--memory", metavar="DIR", help="cache the embeddings there (DinoFeaturizer's memory)"
    )
    _add_training_options(classify)


def _add_training_options(classify: argparse.ArgumentParser) -> None:
    """Options of the featurizer, and of the fine-tuning of ``--classifier finetune``."""
    classify.add_argument("--image-size", type=int, metavar="N", help="input size")
    classify.add_argument("--batch-size", type=int, metavar="N", help="images per batch")
    classify.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    classify.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="(default: auto)")
    classify.add_argument("--num-workers", type=int, metavar="N", help="DataLoader workers")
    classify.add_argument("--epochs", type=int, metavar="N", help="finetune: most epochs")
    classify.add_argument("--lr", type=float, help="finetune: AdamW learning rate")
    classify.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="finetune: where checkpoints go (default: beside --out, FILE_checkpoints)",
    )
    classify.add_argument(
        "--resume", action="store_true", help="finetune: continue from --checkpoint-dir"
    )
    classify.add_argument("--seed", type=int, metavar="S", help="random_state (default: 0)")
    classify.add_argument(
        "--overwrite", action="store_true", help="replace existing --out and --model files"
    )
    classify.add_argument("--quiet", action="store_true", help="no progress bars")
    add_on_error_option(classify)
    add_settings_options(classify)


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam classify`` as parsed into ``args``."""
    from ..data.labels import read_labels

    out = Path(args.out)
    model_path = Path(args.model) if args.model else out.with_suffix(".joblib")
    finetune = args.classifier == "finetune"
    _check_arguments(args, out, finetune)
    images = resolve_images(args.data)
    if isinstance(images, np.ndarray):
        raise ValueError(
            f"DATA={args.data!r} is a data set of arrays; a labels CSV names image files: "
            "expected a folder of images or a list of image files."
        )
    labels = read_labels(args.labels, images)
    labeled = np.array([label != -1 for label in labels], dtype=bool)
    classes = _check_classes(labels[labeled], args.labels)
    settings = _finetune_settings(args) if finetune else _embedding_settings(args)
    run_description = {
        "data": str(Path(args.data).absolute()),
        "labels": str(Path(args.labels).absolute()),
        "backbone_spec": str(args.backbone),
        "classifier": args.classifier,
        "n_images": len(images),
        "n_labeled": int(labeled.sum()),
    }
    facts = [
        f"Images found: {len(images)} in {args.data}; {int(labeled.sum())} labeled in "
        f"{len(classes)} classes ({_class_counts(labels[labeled])}), {int((~labeled).sum())} "
        f"unlabeled (the rows of {out})"
    ]
    if args.dry_run:
        _dry_run(args, settings, facts, images, labels, finetune)
        return
    _refuse_existing((out, model_path), args.overwrite)
    checkpoint_dir = _checkpoint_dir(args, out) if finetune else None
    if args.resume:
        check_resume(_params_path(out), settings, run_description)
    if checkpoint_dir is not None:
        check_checkpoints(checkpoint_dir, args.resume, prefix="supervised")
    out.parent.mkdir(parents=True, exist_ok=True)
    command_line = getattr(args, "argv", sys.argv[1:])
    write_params(_params_path(out), "classify", settings, run_description, command_line)
    unlabeled = [image for image, known in zip(images, labeled, strict=True) if not known]
    # With --on-error skip, the files that could not be decoded are listed beside --out.
    with reporting_skipped(out.parent / SKIPPED_REPORT):
        if finetune:
            model = _fit_finetuned(args, settings, checkpoint_dir, images, labels, labeled)
            probabilities = model.predict_proba(unlabeled) if unlabeled else None
        else:
            model, probabilities = _fit_on_embeddings(args, images, labels, labeled)
    _write_outputs(model, unlabeled, probabilities, out, model_path)


def _check_arguments(args: argparse.Namespace, out: Path, finetune: bool) -> None:
    """Refuse options that do not go with the chosen classifier, before any work."""
    if out.suffix.lower() != ".csv":
        raise ValueError(f"--out {str(out)!r}: expected a file name ending in .csv.")
    if finetune:
        if args.memory is not None:
            raise ValueError(
                "--memory caches embeddings, which --classifier finetune does not use: drop it."
            )
        return
    given = [
        option
        for option, value in (
            ("--config", args.config),
            ("--epochs", args.epochs),
            ("--lr", args.lr),
            ("--checkpoint-dir", args.checkpoint_dir),
            ("--resume", args.resume or None),
        )
        if value is not None
    ]
    if given:
        raise ValueError(
            f"{', '.join(given)} set the fine-tuning of --classifier finetune; "
            f"--classifier {args.classifier} fits on frozen embeddings and trains no network."
        )


def _check_classes(labels: np.ndarray, csv_file: str) -> list[str]:
    classes = sorted({str(label) for label in labels})
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no label"
        raise ValueError(
            f"{csv_file} holds {found}: a classifier needs labeled images of at least 2 "
            "classes (a row 'path,label' with a non-empty label per labeled image)."
        )
    return classes


def _class_counts(labels: np.ndarray) -> str:
    names, counts = np.unique(labels.astype(str), return_counts=True)
    return ", ".join(f"{name}: {count}" for name, count in zip(names, counts, strict=True))


def _params_path(out: Path) -> Path:
    return out.with_suffix(".params.json")


def _checkpoint_dir(args: argparse.Namespace, out: Path) -> Path:
    if args.checkpoint_dir is not None:
        return Path(args.checkpoint_dir)
    return out.parent / f"{out.stem}_checkpoints"


def _refuse_existing(paths: tuple[Path, ...], overwrite: bool) -> None:
    for path in paths:
        if path.exists() and not overwrite:
            raise ValueError(
                f"{path} exists; pass --overwrite to replace it, or choose another --out/--model."
            )


def _embedding_settings(args: argparse.Namespace) -> Settings:
    """What ``params.json`` records of a classifier on frozen embeddings: the options given."""
    from sklearn.pipeline import Pipeline

    given = {
        name: getattr(args, name)
        for name in (
            "arch",
            "image_size",
            "batch_size",
            "device",
            "precision",
            "num_workers",
            "on_error",
        )
        if getattr(args, name) is not None
    }
    params = {
        "classifier": CLASSIFIERS[args.classifier],
        "random_state": 0 if args.seed is None else args.seed,
        **given,
        "memory": args.memory,
    }
    sources = dict.fromkeys(params, "command line")
    if args.seed is None:
        sources["random_state"] = "default of sparsam classify"
    if args.memory is None:
        sources["memory"] = "default"
    return Settings(Pipeline, params, sources)


def _finetune_settings(args: argparse.Namespace) -> Settings:
    """The resolved SupervisedClassifier settings: seed 0 < ``--config`` < options given."""
    from ..classifier import SupervisedClassifier

    options = {
        name: getattr(args, name)
        for name in (*_FINETUNE_OPTIONS, "num_workers", "on_error")
        if getattr(args, name) is not None
    }
    # The starting weights are --backbone; as a string here, loaded when training starts.
    options["pretrained"] = str(args.backbone)
    if args.seed is not None:
        options["random_state"] = args.seed
    if args.quiet:
        options["verbose"] = 0
    layers: list[tuple[str, Layer]] = [seed_default_layer("classify")]
    if args.config:
        layers.append((str(args.config), config_layer(SupervisedClassifier, args.config)))
    layers.append(
        ("command line", options_layer(options, {**OPTION_FLAGS, "pretrained": "--backbone"}))
    )
    return resolve_settings(SupervisedClassifier, layers)


def _starting_point(spec: str) -> Any:
    """``--backbone`` for a SupervisedClassifier: a fitted featurizer from a joblib file, or
    the SPEC itself (a directory, a Hub id, a short name)."""
    import joblib

    from ..featurizer import DinoFeaturizer

    if not Path(spec).is_file():
        return spec
    featurizer = joblib.load(spec)
    if not isinstance(featurizer, DinoFeaturizer) or not hasattr(featurizer, "backbone_"):
        raise ValueError(
            f"--backbone {spec} does not hold a fitted DinoFeaturizer: expected a "
            "featurizer.joblib written by sparsam pretrain, or a backbone directory."
        )
    return featurizer


def _dry_run(
    args: argparse.Namespace,
    settings: Settings,
    facts: list[str],
    images: list[Path],
    labels: np.ndarray,
    finetune: bool,
) -> None:
    if not finetune:
        facts.append(
            f"--classifier {args.classifier} embeds every image with {args.backbone} and fits "
            "on the embeddings: no training steps to time."
        )
        print_dry_run("classify", settings, facts, None, None)
        return
    from .._estimator import resolve_device

    params = {**settings.params, "pretrained": _starting_point(args.backbone)}
    n_labeled = sum(label != -1 for label in labels)
    fraction = params["validation_fraction"]
    n_validation = 0 if fraction is None else round(fraction * n_labeled)
    batch_size = min(int(params["batch_size"]), n_labeled - n_validation)
    steps_per_epoch = math.ceil((n_labeled - n_validation) / batch_size)
    estimator = settings.estimator(**params)
    seconds = seconds_per_step(
        estimator,
        images,
        labels,
        validation_fraction=None,
        n_iter_no_change=None,
        batch_size=batch_size,
    )
    device = str(resolve_device(params["device"]))
    print_dry_run("classify", settings, facts, steps_per_epoch, (seconds, 3, device))


def _fit_on_embeddings(
    args: argparse.Namespace, images: list[Path], labels: np.ndarray, labeled: np.ndarray
) -> tuple[Any, np.ndarray | None]:
    """The featurizer of ``--backbone`` with a paper classifier fitted on its embeddings, and
    the class probabilities of the unlabeled images (None when there are none)."""
    from sklearn.pipeline import Pipeline

    from ..evaluation.classifiers import paper_classifiers
    from .embed import embedding_featurizer

    featurizer = embedding_featurizer(
        args.backbone,
        images[:1],
        architecture=args.arch,
        image_size=args.image_size,
        settings={
            "batch_size": args.batch_size,
            "device": args.device,
            "precision": args.precision,
            "num_workers": args.num_workers,
            "memory": args.memory,
            "on_error": args.on_error,
        },
        verbose=0 if args.quiet else 1,
    )
    # Every image once: the labeled ones to fit, the unlabeled ones to predict. With
    # --on-error skip an image that could not be decoded has a row of NaN: no label is
    # learnt from it, and its prediction is left empty.
    features = featurizer.transform(images)
    readable = np.isfinite(features).all(axis=1)
    seed = 0 if args.seed is None else args.seed
    # probability=True: the probability columns, and predict as their argmax (the paper's
    # rule), so the written table and the saved pipeline's predict always agree.
    classifier = paper_classifiers(random_state=seed, probability=True)
    classifier = classifier[CLASSIFIERS[args.classifier]]
    classifier.fit(features[labeled & readable], labels[labeled & readable].astype(str))
    if not (~labeled).any():
        return Pipeline([("featurizer", featurizer), ("classifier", classifier)]), None
    probabilities = np.full((int((~labeled).sum()), len(classifier.classes_)), np.nan)
    predictable = readable[~labeled]
    if predictable.any():
        probabilities[predictable] = classifier.predict_proba(features[~labeled][predictable])
    return Pipeline([("featurizer", featurizer), ("classifier", classifier)]), probabilities


def _fit_finetuned(
    args: argparse.Namespace,
    settings: Settings,
    checkpoint_dir: Path,
    images: list[Path],
    labels: np.ndarray,
    labeled: np.ndarray,
) -> Any:
    """A SupervisedClassifier fine-tuned from ``--backbone`` on the labeled images."""
    from sklearn.pipeline import Pipeline

    params = {
        **settings.params,
        "pretrained": _starting_point(args.backbone),
        "checkpoint_dir": checkpoint_dir,
    }
    classifier = settings.estimator(**params)
    labeled_images = [image for image, keep in zip(images, labeled, strict=True) if keep]
    classifier.fit(labeled_images, labels[labeled].astype(str))
    return Pipeline([("classifier", classifier)])


def _write_outputs(
    model: Any,
    unlabeled: list[Path],
    probabilities: np.ndarray | None,
    out: Path,
    model_path: Path,
) -> None:
    """Write the predictions of the unlabeled images to ``out`` and save ``model``, each
    atomically."""
    import joblib

    from .._files import atomic_write

    classes = [str(name) for name in model.classes_]
    if probabilities is None:
        probabilities = np.zeros((0, len(classes)))
    with atomic_write(out, "w") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "prediction", *(f"proba_{name}" for name in classes)])
        for image, row in zip(unlabeled, probabilities, strict=True):
            if not np.isfinite(row).all():  # a file skipped with --on-error skip
                writer.writerow([os.fspath(image), "", *([""] * len(classes))])
                continue
            # repr: the shortest text that reads back as the same float, so the argmax of a
            # row read back equals the pipeline's prediction.
            values = [repr(float(value)) for value in row]
            writer.writerow([os.fspath(image), classes[int(np.argmax(row))], *values])
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(model_path) as file:
        joblib.dump(model, file)
    print(f"Wrote predictions of {len(unlabeled)} unlabeled images to {out}")
    print(
        f"Wrote the fitted pipeline to {model_path}: joblib.load({str(model_path)!r})"
        ".predict(paths)"
    )
