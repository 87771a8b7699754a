"""The ``sparsam`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import PRETRAINED_BACKBONES, convert_checkpoint, push_backbone

__all__ = [
    "DIGITS_RECIPE",
    "EVALUATE_DATASETS",
    "compare_on_digits",
    "load_evaluation_dataset",
    "main",
    "run_demo",
    "run_evaluate",
]

# The small-data recipe found on digits; benchmarks/RESULTS.md has the measurements behind
# each choice and docs/small_data_recipe.md explains them.
DIGITS_RECIPE: dict[str, Any] = {
    "backbone": "vit_small_patch16_224",
    # 4 blocks, 96 wide, patch 4 at 16 px: 16 tokens, ~0.15 s per step of 64 images on 2 cores.
    "backbone_kwargs": {"embed_dim": 96, "depth": 4, "num_heads": 3, "patch_size": 4},
    "image_size": 16,
    "local_crop_size": 8,
    "local_crops": 6,
    "batch_size": 64,
    "epochs": 60,
    "global_crop_scale": (0.4, 1.0),
    "local_crop_scale": (0.1, 0.4),
    # Digits have an up and a down: flips and large rotations would destroy the label.
    "horizontal_flip": 0.0,
    "vertical_flip": 0.0,
    "rotation": 15.0,
    "perspective": 0.0,
    "out_dim": 256,
    "head_hidden_dim": 512,
    "head_bottleneck_dim": 64,
    "koleo_weight": 0.1,
    "lr": 2e-3,
    "warmup_epochs": 10,
    "teacher_momentum": 0.99,
    "teacher_temperature": 0.04,
    "precision": "fp32",
}


def compare_on_digits(
    params: dict[str, Any],
) -> tuple[dict[str, dict[int, np.ndarray]], Any, float]:
    """Few-shot scores on digits of DINO features, the untrained backbone and raw pixels.

    Parameters
    ----------
    params : dict
        ``DinoFeaturizer`` parameters, e.g. ``DIGITS_RECIPE`` plus ``random_state``.

    Returns
    -------
    rows : dict
        Method name to ``{labels per class: balanced accuracy per draw}``.
    trained : DinoFeaturizer
        The fitted featurizer (its ``history_`` holds the training curve).
    minutes : float
        Wall-clock minutes of DINO training.
    """
    from .datasets import load_demo
    from .featurizer import DinoFeaturizer
    from .model_selection import few_shot_scores

    images, labels, _ = load_demo()
    started = time.perf_counter()
    trained = DinoFeaturizer(**params).fit(images)
    minutes = (time.perf_counter() - started) / 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        untrained = DinoFeaturizer(**{**params, "epochs": 0}).fit(images)
    rows = {
        "DINO features + SVC": few_shot_scores(trained.transform(images), labels),
        "untrained backbone + SVC": few_shot_scores(untrained.transform(images), labels),
        "raw pixels + SVC": few_shot_scores(images.reshape(len(images), -1), labels),
    }
    return rows, trained, minutes


def run_demo(
    epochs: int | None = None, random_state: int = 0, verbose: int = 1
) -> dict[str, dict[int, np.ndarray]]:
    """Pretrain on digits with DINO and print few-shot accuracy against two baselines.

    Returns
    -------
    rows : dict
        Method name to ``{labels per class: balanced accuracy per draw}``.
    """
    from .model_selection import format_few_shot_table

    params = {**DIGITS_RECIPE, "random_state": random_state, "verbose": verbose}
    if epochs is not None:
        params["epochs"] = epochs
    rows, trained, minutes = compare_on_digits(params)
    history = trained.history_
    print(
        f"\nDINO on digits: {params['epochs']} epochs in {minutes:.1f} min; final loss "
        f"{history['loss'][-1]:.3f}, teacher entropy {history['teacher_entropy'][-1]:.2f} "
        f"(ln(out_dim) = {np.log(params['out_dim']):.2f})"
    )
    print("Balanced accuracy, mean ± std over 5 draws, N labeled images per class:\n")
    print(format_few_shot_table(rows))
    return rows


EVALUATE_DATASETS = (
    "demo",
    "image-folder",
    "bone-marrow",
    "hyperkvasir",
    "isic2019",
    "isic2020",
    "medmnist",
)


def load_evaluation_dataset(
    dataset: str, root: str | os.PathLike[str] | None = None
) -> tuple[Any, np.ndarray, list[str]]:
    """``(images, labels, class_names)`` of one of ``EVALUATE_DATASETS`` via sparsam.datasets."""
    from . import datasets

    if dataset == "demo":
        return datasets.load_demo()
    loaders = {
        "image-folder": datasets.load_image_folder,
        "bone-marrow": datasets.load_bone_marrow,
        "hyperkvasir": datasets.load_hyperkvasir,
        "isic2019": datasets.load_isic2019,
        "isic2020": datasets.load_isic2020,
        "medmnist": datasets.load_medmnist,
    }
    if dataset not in loaders:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of {EVALUATE_DATASETS}.")
    if root is None:
        raise ValueError(
            f"--dataset {dataset} needs --root: the downloaded data set (a .npz file for "
            "medmnist, a directory otherwise)."
        )
    return loaders[dataset](root)


def run_evaluate(
    dataset: str,
    root: str | os.PathLike[str] | None = None,
    *,
    pretrained: str | None = None,
    featurizer: str | os.PathLike[str] | None = None,
    epochs: int = 0,
    n_per_class: Sequence[int] = (1, 5, 10, 25, 50, 100, 250),
    n_repeats: int = 5,
    classifier: str = "svm",
    out: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    random_state: int = 0,
    verbose: int = 1,
) -> Any:
    """The paper's experiment: frozen DINO features, few labels per class, a plain classifier.

    Loads ``dataset``, builds the featurizer (``pretrained`` weights, optionally trained
    further with DINO on all images of the data set, labels unused; or a fitted featurizer
    saved with joblib), and runs ``sparsam.model_selection.few_shot_curve`` with one of the
    paper's classifiers. Prints the table; with ``out``, writes ``few_shot_curve.csv`` and
    ``few_shot_curve.png`` there.

    Parameters
    ----------
    dataset : str
        One of ``EVALUATE_DATASETS``.
    root : str or path-like, optional
        The download the loader reads; not needed for ``"demo"``.
    pretrained : str, optional
        ``DinoFeaturizer(pretrained=...)``: ``"imagenet"``, ``"bm"``, ``"endo"``, ``"isic"``,
        ``"hf-hub:org/name"`` or a directory written by ``save_backbone``.
    featurizer : str or path-like, optional
        A joblib file holding a fitted ``DinoFeaturizer``; exclusive with ``pretrained``.
    epochs : int, default=0
        DINO epochs on the data set before evaluating (only with ``pretrained``).
    n_per_class : sequence of int, default=(1, 5, 10, 25, 50, 100, 250)
        Labeled images per class; values the smallest class cannot afford are skipped.
    n_repeats : int, default=5
        Random draws per value of ``n_per_class``.
    classifier : {"svm", "logistic_regression", "knn"}, default="svm"
        A preset of ``sparsam.model_selection.paper_classifiers``.
    out : str or path-like, optional
        Output directory (created if missing).
    image_size, batch_size : int, optional
        Featurizer settings for ``pretrained``; the featurizer's defaults when omitted.
    device : str, default="auto"
        Featurizer device for ``pretrained``.
    random_state : int, default=0
        Seed of the featurizer, the classifier and the draws.
    verbose : int, default=1
        Featurizer verbosity.

    Returns
    -------
    FewShotCurveResult
    """
    import joblib

    from .featurizer import DinoFeaturizer
    from .model_selection import few_shot_curve, paper_classifiers

    if (pretrained is None) == (featurizer is None):
        raise ValueError("Pass exactly one of pretrained= and featurizer=.")
    classifiers = paper_classifiers(random_state=random_state)
    if classifier not in classifiers:
        raise ValueError(
            f"Unknown classifier {classifier!r}; expected one of {sorted(classifiers)}."
        )
    images, labels, class_names = load_evaluation_dataset(dataset, root)
    labels = np.asarray(labels)
    if featurizer is not None:
        if epochs:
            raise ValueError(
                f"epochs={epochs} with a saved featurizer: it is evaluated as it is; to train "
                "with DINO first, start from pretrained weights instead."
            )
        model = joblib.load(featurizer)
        if not isinstance(model, DinoFeaturizer) or not hasattr(model, "backbone_"):
            raise ValueError(f"{featurizer} does not hold a fitted DinoFeaturizer.")
        source = str(featurizer)
    else:
        settings = {"image_size": image_size, "batch_size": batch_size}
        model = DinoFeaturizer(
            pretrained=pretrained,
            epochs=epochs,
            device=device,
            random_state=random_state,
            verbose=verbose,
            **{name: value for name, value in settings.items() if value is not None},
        ).fit(images)
        source = str(pretrained) + (f" + {epochs} DINO epochs" if epochs else "")
    # The featurizer is frozen, so FrozenEstimator(featurizer) -> classifier in few_shot_curve
    # would give the same scores but embed the test images again for every draw: embed once.
    labeled = np.flatnonzero(labels != -1)
    if isinstance(images, np.ndarray):
        labeled_images = images[labeled]
    else:
        labeled_images = [images[index] for index in labeled]
    features = model.transform(labeled_images)
    counts = np.bincount(labels[labeled], minlength=len(class_names))
    print(
        f"{dataset}: {len(labels)} images, {len(labeled)} labeled in {len(class_names)} classes "
        f"({counts.min()} to {counts.max()} per class); features: {source}, "
        f"{features.shape[1]} dimensions; classifier: {classifier}"
    )
    result = few_shot_curve(
        classifiers[classifier],
        features,
        labels[labeled],
        n_per_class=n_per_class,
        n_repeats=n_repeats,
        random_state=random_state,
    )
    print(result.table())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result.to_csv(out / "few_shot_curve.csv")
        _save_few_shot_figure(
            result, out / "few_shot_curve.png", f"{source} + {classifier}", dataset
        )
        print(f"Wrote {out / 'few_shot_curve.csv'} and {out / 'few_shot_curve.png'}")
    return result


def _save_few_shot_figure(result: Any, path: Path, label: str, title: str) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(
            f"sparsam evaluate: no {path.name}: plotting needs matplotlib: "
            'pip install "sparsam[plot]"',
            file=sys.stderr,
        )
        return
    from .plotting import plot_few_shot_curve

    # A Figure without pyplot: no GUI backend, nothing left open after saving.
    figure = Figure(figsize=(6.4, 4.4))
    plot_few_shot_curve({label: result}, ax=figure.subplots(), title=title)
    figure.savefig(path, dpi=150, bbox_inches="tight")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsam`` console script."""
    parser = argparse.ArgumentParser(prog="sparsam", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="pretrain a small ViT with DINO on the bundled digits and print a few-shot table",
    )
    demo.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    demo.add_argument("--seed", type=int, default=0, help="random_state of the featurizer")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate = commands.add_parser(
        "evaluate",
        help="the paper's experiment: few-shot curve of frozen features + a classifier",
        description=(
            "Embed a data set with a pretrained (optionally further DINO-trained) featurizer, "
            "train one of the paper's classifiers on N labeled images per class over repeated "
            "draws, score balanced accuracy on the rest, print the table and write "
            "few_shot_curve.csv and few_shot_curve.png to --out."
        ),
    )
    evaluate.add_argument("--dataset", choices=EVALUATE_DATASETS, required=True)
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
    evaluate.add_argument("--out", default=None, help="directory for the CSV and PNG")
    evaluate.add_argument(
        "--image-size", type=int, default=None, help="featurizer input size (default: 224)"
    )
    evaluate.add_argument("--batch-size", type=int, default=None, help="embedding batch size")
    evaluate.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    evaluate.add_argument("--seed", type=int, default=0, help="random_state of everything")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    convert = commands.add_parser(
        "convert",
        help="convert one of the paper's original .pt checkpoints to timm's Hub format",
        description=(
            "Convert a checkpoint of Nielsen et al. 2023 (pretrained_bm.pt, pretrained_endo.pt, "
            "pretrained_isic.pt; Zenodo record 10391339) to a directory with config.json, "
            "model.safetensors and a model card, loadable with sparsam.load_backbone and "
            "timm.create_model('local-dir:OUTDIR', pretrained=True)."
        ),
    )
    convert.add_argument("checkpoint", help="the original .pt file (read with weights_only=True)")
    convert.add_argument(
        "outdir",
        help="output directory; sparsam's files in it are replaced, other files left alone",
    )
    convert.add_argument(
        "--name",
        choices=sorted(PRETRAINED_BACKBONES),
        default=None,
        help="which of the paper's backbones it is (names its training data in the card)",
    )
    convert.add_argument(
        "--architecture",
        default="xcit_small_12_p8_224",
        help="timm model name (default: the paper's xcit_small_12_p8_224)",
    )
    convert.add_argument(
        "--image-size", type=int, default=256, help="training image size (default: 256)"
    )
    push = commands.add_parser(
        "push",
        help="upload a saved backbone (config.json + model.safetensors) to the Hugging Face Hub",
    )
    push.add_argument("directory", help="written by save_backbone or sparsam convert")
    push.add_argument("repo_id", help="Hub repository, org/name (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    push.add_argument(
        "--token",
        default=None,
        help="Hub token with write access (default: HF_TOKEN or the `hf auth login` token)",
    )
    push.add_argument("--message", default=None, help="commit message")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _run_command(args)
    except (ValueError, OSError) as error:
        print(f"sparsam {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _run_command(args: argparse.Namespace) -> None:
    """Dispatch a parsed command line; ``main`` turns bad input into exit code 1."""
    if args.command == "demo":
        run_demo(epochs=args.epochs, random_state=args.seed, verbose=0 if args.quiet else 1)
    elif args.command == "evaluate":
        run_evaluate(
            args.dataset,
            args.root,
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
        )
    elif args.command == "convert":
        path = convert_checkpoint(
            args.checkpoint,
            args.outdir,
            name=args.name,
            architecture=args.architecture,
            image_size=args.image_size,
        )
        print(f"Converted {args.checkpoint} to {path}")
    elif args.command == "push":
        options = {"commit_message": args.message} if args.message else {}
        url = push_backbone(
            args.directory,
            args.repo_id,
            private=args.private,
            token=args.token,
            revision=args.revision,
            **options,
        )
        print(f"Pushed {args.directory} to {args.repo_id}: {url}")


if __name__ == "__main__":
    sys.exit(main())
