"""The experiments that the command line and the benchmarks share.

``compare_on_digits`` and ``run_demo`` are ``sparsam demo``: DINO on the bundled digits against
two baselines. ``run_evaluate`` is ``sparsam evaluate``, the paper's experiment: frozen
features, few labels per class, a plain classifier, optionally against end-to-end fine-tuning.
``load_evaluation_dataset`` reads the data sets both name.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .recipes import DIGITS_RECIPE

if TYPE_CHECKING:
    from .model_selection import FewShotCurveResult

__all__ = [
    "EVALUATE_DATASETS",
    "EvaluationResult",
    "compare_on_digits",
    "load_evaluation_dataset",
    "run_demo",
    "run_evaluate",
]


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
        f"(ln(out_dim) = {np.log(params['out_dim']):.2f}); RankMe "
        f"{trained.initial_rankme_:.1f} untrained -> {history['rankme'][-1]:.1f}"
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


@dataclass(frozen=True)
class EvaluationResult:
    """The arms that `run_evaluate` scored, each with its legend label.

    Attributes
    ----------
    features_label : str
        The frozen-features arm's legend label, ``"<features> + <classifier>"``, e.g.
        ``"bm + svm"``.
    features : FewShotCurveResult
        The frozen-features arm's few-shot curve.
    supervised_label : str or None
        The supervised arm's legend label, ``"supervised, fine-tuned from <features>"``;
        ``None`` without ``supervised``.
    supervised : FewShotCurveResult or None
        The supervised arm's few-shot curve, on the same draws; ``None`` without
        ``supervised``.
    """

    features_label: str
    features: FewShotCurveResult
    supervised_label: str | None = None
    supervised: FewShotCurveResult | None = None

    @property
    def curves(self) -> dict[str, FewShotCurveResult]:
        """Legend label to few-shot curve of every arm scored, the frozen features first."""
        curves = {self.features_label: self.features}
        if self.supervised is not None:
            curves[self.supervised_label] = self.supervised
        return curves


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
    supervised: bool = False,
    supervised_epochs: int = 100,
    labeled: tuple[Any, np.ndarray, list[str]] | None = None,
    on_error: str = "raise",
) -> EvaluationResult:
    """The paper's experiment: frozen DINO features, few labels per class, a plain classifier.

    Loads ``dataset``, builds the featurizer (``pretrained`` weights, optionally trained
    further with DINO on all images of the data set, labels unused; or a fitted featurizer
    saved with joblib), and runs ``sparsam.model_selection.few_shot_curve`` with one of the
    paper's classifiers. Prints the table; with ``out``, writes ``few_shot_curve.csv`` and
    ``few_shot_curve.png`` there.

    With ``supervised``, a second arm follows: a `SupervisedClassifier` fine-tuned end to end
    from the same starting point, scored by ``few_shot_curve`` on the same draws (the draws
    depend on ``random_state`` only), the paired comparison of the paper's Figure 1. Its table
    is printed too, ``out`` also gets ``few_shot_curve_supervised.csv``, and the PNG shows
    both curves.

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
        Featurizer settings for ``pretrained``, and of the supervised arm; their defaults
        when omitted.
    device : str, default="auto"
        Featurizer device for ``pretrained``, and the supervised arm's.
    random_state : int, default=0
        Seed of the featurizer, the classifiers and the draws.
    verbose : int, default=1
        Featurizer verbosity; the supervised arm trains quietly, as it trains once per draw.
    supervised : bool, default=False
        Also score the supervised arm. It starts from ``pretrained`` when ``epochs=0``, and
        from the fitted featurizer itself after DINO training or with ``featurizer`` ("DINO,
        then fine-tune").
    supervised_epochs : int, default=100
        ``SupervisedClassifier(epochs=...)``: the most epochs of each fine-tuning; early
        stopping usually ends it sooner.
    labeled : (images, labels, class_names), optional
        Images to evaluate instead of loading ``dataset``, which then only names them in the
        outputs: ``labels`` are indices into ``class_names``, ``-1`` for unlabeled images
        (used by DINO with ``epochs``, left out of the curve), as
        ``sparsam.data.labels.class_indices`` returns them for a labels CSV.
    on_error : {"raise", "skip"}, default="raise"
        The estimators' ``on_error``: with "skip", a labeled image that cannot be decoded is
        named in a warning and left out of both arms' scores.

    Returns
    -------
    EvaluationResult
        The frozen-features arm's curve and legend label; with ``supervised``, the supervised
        arm's too.
    """
    from .model_selection import few_shot_curve

    classifiers = _checked_classifiers(
        pretrained, featurizer, classifier, supervised, supervised_epochs, random_state
    )
    images, labels, class_names = (
        labeled if labeled is not None else load_evaluation_dataset(dataset, root)
    )
    labels = np.asarray(labels)
    settings = {
        name: value
        for name, value in {"image_size": image_size, "batch_size": batch_size}.items()
        if value is not None
    }
    settings["on_error"] = on_error
    model, source = _evaluation_featurizer(
        images, pretrained, featurizer, epochs, device, random_state, verbose, settings
    )
    labeled_images, labeled_labels, features = _embedded_labeled_images(model, images, labels)
    counts = np.bincount(labeled_labels, minlength=len(class_names))
    print(
        f"{dataset}: {len(labels)} images, {len(labeled_labels)} labeled in "
        f"{len(class_names)} classes ({counts.min()} to {counts.max()} per class); "
        f"features: {source}, {features.shape[1]} dimensions; classifier: {classifier}"
    )
    draws = {"n_per_class": n_per_class, "n_repeats": n_repeats, "random_state": random_state}
    result = few_shot_curve(classifiers[classifier], features, labeled_labels, **draws)
    evaluation = EvaluationResult(f"{source} + {classifier}", result)
    if supervised:
        print(f"\nFrozen features: {evaluation.features_label}")
    print(result.table())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        # Written before the supervised arm, which may train for hours, so that it survives
        # an interrupted run.
        result.to_csv(out / "few_shot_curve.csv")
    if supervised:
        # The weights it fine-tunes: the featurizer's own when DINO trained it or it came from
        # a file ("DINO, then fine-tune"); otherwise the same SPEC, which it loads itself.
        starting_point = model if featurizer is not None or epochs else pretrained
        fine_tuned = _supervised_arm(
            starting_point, source, supervised_epochs, device, random_state, settings
        )
        # Same labels, n_per_class, n_repeats and integer random_state as the frozen-features
        # arm: few_shot_curve draws from nothing else, so both arms see the same draws.
        evaluation = _score_supervised_arm(
            evaluation, fine_tuned, source, labeled_images, labeled_labels, draws, out
        )
    if out is not None:
        _write_figure(evaluation, out, dataset)
    return evaluation


def _checked_classifiers(
    pretrained: str | None,
    featurizer: str | os.PathLike[str] | None,
    classifier: str,
    supervised: bool,
    supervised_epochs: int,
    random_state: int,
) -> dict[str, Any]:
    """The paper's classifiers, once ``run_evaluate``'s arguments have been checked."""
    from .model_selection import paper_classifiers

    if (pretrained is None) == (featurizer is None):
        raise ValueError("Pass exactly one of pretrained= and featurizer=.")
    # Checked before the data is loaded and DINO trains: within few_shot_curve a bad value
    # would only show as NaN scores after the frozen-features arm.
    if supervised and (
        not isinstance(supervised_epochs, (int, np.integer)) or supervised_epochs < 1
    ):
        raise ValueError(
            f"supervised_epochs={supervised_epochs!r}: expected a positive number of epochs."
        )
    classifiers = paper_classifiers(random_state=random_state)
    if classifier not in classifiers:
        raise ValueError(
            f"Unknown classifier {classifier!r}; expected one of {sorted(classifiers)}."
        )
    return classifiers


def _embedded_labeled_images(
    model: Any, images: Any, labels: np.ndarray
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The labeled images that could be read, their labels and their features."""
    # The featurizer is frozen, so FrozenEstimator(featurizer) -> classifier in few_shot_curve
    # would give the same scores but embed the test images again for every draw: embed once.
    labeled_images, labeled_labels = _labeled_subset(images, labels)
    features = model.transform(labeled_images)
    # With on_error="skip", an image that could not be decoded has a row of NaN (and was
    # named in a warning): neither arm is scored on it.
    readable = np.flatnonzero(~np.isnan(features).any(axis=1))
    if len(readable) < len(features):
        features, labeled_labels = features[readable], labeled_labels[readable]
        labeled_images = _subset(labeled_images, readable)
    return labeled_images, labeled_labels, features


def _labeled_subset(images: Any, labels: np.ndarray) -> tuple[Any, np.ndarray]:
    """The images with a label (not ``-1``) and their labels, in the same order."""
    labeled = np.flatnonzero(labels != -1)
    return _subset(images, labeled), labels[labeled]


def _subset(images: Any, indices: np.ndarray) -> Any:
    """The images ``indices`` of an array or a list of images."""
    if isinstance(images, np.ndarray):
        return images[indices]
    return [images[index] for index in indices]


def _evaluation_featurizer(
    images: Any,
    pretrained: str | None,
    featurizer: str | os.PathLike[str] | None,
    epochs: int,
    device: str,
    random_state: int,
    verbose: int,
    settings: dict[str, Any],
) -> tuple[Any, str]:
    """The fitted featurizer ``run_evaluate`` embeds with, and its name in the outputs."""
    from ._joblib_file import load_fitted
    from .featurizer import DinoFeaturizer

    if featurizer is not None:
        if epochs:
            raise ValueError(
                f"epochs={epochs} with a saved featurizer: it is evaluated as it is; to train "
                "with DINO first, start from pretrained weights instead."
            )
        model = load_fitted(featurizer, DinoFeaturizer, "backbone_")
        return model.set_params(on_error=settings["on_error"]), str(featurizer)
    model = DinoFeaturizer(
        pretrained=pretrained,
        epochs=epochs,
        device=device,
        random_state=random_state,
        verbose=verbose,
        **settings,
    ).fit(images)
    return model, str(pretrained) + (f" + {epochs} DINO epochs" if epochs else "")


def _supervised_arm(
    starting_point: Any,
    source: str,
    supervised_epochs: int,
    device: str,
    random_state: int,
    settings: dict[str, Any],
) -> Any:
    """The `SupervisedClassifier` of ``run_evaluate``'s supervised arm, not yet fitted."""
    from .classifier import SupervisedClassifier

    fine_tuned = SupervisedClassifier(
        pretrained=starting_point,
        epochs=supervised_epochs,
        device=device,
        random_state=random_state,
        verbose=0,
        **settings,
    )
    print(f"\nSupervised: fine-tuned from {source}, at most {supervised_epochs} epochs")
    return fine_tuned


def _score_supervised_arm(
    evaluation: EvaluationResult,
    fine_tuned: Any,
    source: str,
    labeled_images: Any,
    labels: np.ndarray,
    draws: dict[str, Any],
    out: Path | None,
) -> EvaluationResult:
    """``evaluation`` with the supervised arm scored on the same draws, printed and saved."""
    from .model_selection import few_shot_curve

    supervised_result = few_shot_curve(fine_tuned, labeled_images, labels, **draws)
    print(supervised_result.table())
    if out is not None:
        supervised_result.to_csv(out / "few_shot_curve_supervised.csv")
    return EvaluationResult(
        evaluation.features_label,
        evaluation.features,
        f"supervised, fine-tuned from {source}",
        supervised_result,
    )


def _write_figure(evaluation: EvaluationResult, out: Path, dataset: str) -> None:
    """Draw the curves to ``out/few_shot_curve.png`` and say which files ``out`` received."""
    written = ["few_shot_curve.csv"]
    if evaluation.supervised is not None:
        written.append("few_shot_curve_supervised.csv")
    _save_few_shot_figure(evaluation.curves, out / "few_shot_curve.png", dataset)
    written.append("few_shot_curve.png")
    print(f"Wrote {', '.join(str(out / name) for name in written)}")


def _save_few_shot_figure(results_by_name: dict[str, Any], path: Path, title: str) -> None:
    """Draw every few-shot curve of ``results_by_name`` (legend label -> result) on one axis."""
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
    plot_few_shot_curve(results_by_name, ax=figure.subplots(), title=title)
    figure.savefig(path, dpi=150, bbox_inches="tight")
