"""The ``sparsam`` command line.

``sparsam demo`` shows the method on bundled digits; ``pretrain``, ``embed`` and ``evaluate``
run it on your images; ``convert`` and ``push`` publish backbones in timm's Hub format.
"""

from __future__ import annotations

import argparse
import csv
import json
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
from .recipes import DIGITS_RECIPE

__all__ = [
    "DIGITS_RECIPE",
    "EVALUATE_DATASETS",
    "IMAGE_SUFFIXES",
    "compare_on_digits",
    "load_evaluation_dataset",
    "main",
    "resolve_images",
    "run_demo",
    "run_embed",
    "run_evaluate",
    "run_pretrain",
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
) -> Any:
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

    Returns
    -------
    FewShotCurveResult or dict of str to FewShotCurveResult
        The frozen-features arm's result without ``supervised``. With it, a dict of both arms:
        the frozen-features arm under its legend label (``"<features> + <classifier>"``, e.g.
        ``"bm + svm"``), then the supervised arm under ``"supervised"``.
    """
    import joblib

    from .featurizer import DinoFeaturizer
    from .model_selection import few_shot_curve, paper_classifiers

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
    features_label = f"{source} + {classifier}"
    if supervised:
        print(f"\nFrozen features: {features_label}")
    print(result.table())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        # Written before the supervised arm, which may train for hours, so that it survives
        # an interrupted run.
        result.to_csv(out / "few_shot_curve.csv")
    curves = {features_label: result}
    written = ["few_shot_curve.csv"]
    if supervised:
        from .classifier import SupervisedClassifier

        # The weights it fine-tunes: the featurizer's own when DINO trained it or it came from
        # a file ("DINO, then fine-tune"); otherwise the same SPEC, which it loads itself.
        starting_point = model if featurizer is not None or epochs else pretrained
        settings = {"image_size": image_size, "batch_size": batch_size}
        fine_tuned = SupervisedClassifier(
            pretrained=starting_point,
            epochs=supervised_epochs,
            device=device,
            random_state=random_state,
            verbose=0,
            **{name: value for name, value in settings.items() if value is not None},
        )
        supervised_label = f"supervised, fine-tuned from {source}"
        print(f"\nSupervised: fine-tuned from {source}, at most {supervised_epochs} epochs")
        # Same labels, n_per_class, n_repeats and integer random_state as the frozen-features
        # arm: few_shot_curve draws from nothing else, so both arms see the same draws.
        supervised_result = few_shot_curve(
            fine_tuned,
            labeled_images,
            labels[labeled],
            n_per_class=n_per_class,
            n_repeats=n_repeats,
            random_state=random_state,
        )
        print(supervised_result.table())
        curves[supervised_label] = supervised_result
        if out is not None:
            supervised_result.to_csv(out / "few_shot_curve_supervised.csv")
            written.append("few_shot_curve_supervised.csv")
    if out is not None:
        _save_few_shot_figure(curves, out / "few_shot_curve.png", dataset)
        written.append("few_shot_curve.png")
        print(f"Wrote {', '.join(str(out / name) for name in written)}")
    if supervised:
        return {features_label: result, "supervised": supervised_result}
    return result


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


# What `sparsam pretrain` and `sparsam embed` read from a folder (compared case-insensitively):
# the formats sparsam.data decodes, PIL's and DICOM's.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
# The CSV column that holds the image paths: the first of these in the header, else the first.
_CSV_PATH_COLUMNS = ("path", "image", "file")
_DATA_EXPECTED = (
    "expected a folder of images, a .txt file with one image path per line, a .csv file with a "
    f"'path' column, or one of the data set names {', '.join(EVALUATE_DATASETS)} with --root"
)


def resolve_images(
    data: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> list[Path] | np.ndarray:
    """The images that ``DATA`` of ``sparsam pretrain`` and ``sparsam embed`` stands for.

    Parameters
    ----------
    data : str or path-like
        One of

        - a folder: every file below it (at any depth) whose suffix is one of
          ``IMAGE_SUFFIXES``, case-insensitively; hidden files and folders (names starting
          with ``"."``) are skipped; sorted by path, so the order is the same on every run;
        - a ``.txt`` file: one image path per line; blank lines and lines starting with ``#``
          are ignored, surrounding whitespace is stripped;
        - a ``.csv`` file with a header row: the paths are in the column ``path``, else
          ``image``, else ``file`` (names compared case-insensitively), else the first column;
        - a name of ``EVALUATE_DATASETS``, loaded by ``load_evaluation_dataset(data, root)``
          (labels are dropped).

        Relative paths in a list are relative to the folder of the list file.
    root : str or path-like, optional
        The download a data set name reads; only with a name (``"demo"`` needs none).

    Returns
    -------
    images : list of pathlib.Path or numpy.ndarray
        Absolute paths of existing files, in a stable order; an array of images for the data
        sets that come as arrays (``"demo"``, ``"medmnist"``).

    Raises
    ------
    ValueError
        If ``data`` does not exist and is no data set name, is a file of another kind, holds
        no image, or lists a path that is not an existing file (naming the list file and its
        line); if ``root`` is given with a path.
    """
    path = Path(data).expanduser()
    if root is not None:
        if str(data) not in EVALUATE_DATASETS:
            raise ValueError(
                f"--root goes with a data set name ({', '.join(EVALUATE_DATASETS)}), not with "
                f"DATA={str(data)!r}: a folder or list of images needs no --root."
            )
        return _images_of_dataset(str(data), root)
    if path.is_dir():
        return _images_in_folder(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return _images_in_text_list(path)
        if suffix == ".csv":
            return _images_in_csv_list(path)
        raise ValueError(
            f"DATA={str(data)!r} is a {suffix or 'suffix-less'} file; {_DATA_EXPECTED}."
        )
    if str(data) in EVALUATE_DATASETS:
        return _images_of_dataset(str(data), None)
    raise ValueError(f"DATA={str(data)!r} does not exist; {_DATA_EXPECTED}.")


def _images_of_dataset(name: str, root: str | os.PathLike[str] | None) -> list[Path] | np.ndarray:
    images, _, _ = load_evaluation_dataset(name, root)
    if isinstance(images, np.ndarray):
        return images
    return [Path(image).absolute() for image in images]


def _images_in_folder(folder: Path) -> list[Path]:
    from .data.datasets import find_images

    found = find_images(folder.absolute(), IMAGE_SUFFIXES)
    if not found:
        raise ValueError(
            f"The folder {str(folder)!r} holds no image: expected files with a suffix among "
            f"{', '.join(IMAGE_SUFFIXES)} (at any depth; hidden files and folders are skipped)."
        )
    return found


def _listed_image(entry: str, list_file: Path, line: int) -> Path:
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = list_file.parent / path
    path = path.absolute()
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise ValueError(
            f"{list_file}, line {line}: the image {str(path)!r} {state}; expected a path to an "
            "image file (relative paths are relative to the list's folder)."
        )
    return path


def _images_in_text_list(list_file: Path) -> list[Path]:
    images = []
    with open(list_file, encoding="utf-8") as file:
        for line, text in enumerate(file, start=1):
            entry = text.strip()
            if entry and not entry.startswith("#"):
                images.append(_listed_image(entry, list_file, line))
    if not images:
        raise ValueError(
            f"The list {str(list_file)!r} names no image: expected one image path per line "
            "(blank lines and lines starting with # are ignored)."
        )
    return images


def _images_in_csv_list(list_file: Path) -> list[Path]:
    images = []
    with open(list_file, encoding="utf-8", newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if not header:
            raise ValueError(
                f"The CSV file {str(list_file)!r} is empty: expected a header row and one row "
                "per image, with the paths in a column named path, image or file."
            )
        names = [name.strip().lower() for name in header]
        column = next((names.index(name) for name in _CSV_PATH_COLUMNS if name in names), 0)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            entry = row[column].strip() if column < len(row) else ""
            if not entry:
                raise ValueError(
                    f"{list_file}, line {reader.line_num}: no path in column "
                    f"{header[column]!r}; expected an image path in every row."
                )
            images.append(_listed_image(entry, list_file, reader.line_num))
    if not images:
        raise ValueError(
            f"The CSV file {str(list_file)!r} names no image: expected one row per image below "
            "the header."
        )
    return images


def _input_names(images: list[Path] | np.ndarray, data: str | os.PathLike[str]) -> list[str]:
    """One line per image for ``FILE.txt``: its path, or ``DATA[index]`` for array data sets."""
    if isinstance(images, np.ndarray):
        return [f"{data}[{index}]" for index in range(len(images))]
    names = [str(path) for path in images]
    for index, name in enumerate(names):
        if "\n" in name or "\r" in name:
            raise ValueError(
                f"Image {index} has a line break in its path {name!r}, which the one-path-per-"
                "line list beside the embeddings cannot hold; rename the file."
            )
    return names


def _check_checkpoints(checkpoint_dir: Path, resume: bool) -> Path | None:
    """The checkpoint ``--resume`` continues from; refuse to mix runs either way."""
    from .training.checkpoints import list_checkpoints

    checkpoints = list_checkpoints(checkpoint_dir)
    if resume and not checkpoints:
        raise ValueError(
            f"--resume but no sparsam checkpoint in --checkpoint-dir {str(checkpoint_dir)!r}: "
            "expected the checkpoint directory of an earlier run (drop --resume to start one)."
        )
    if not resume and checkpoints:
        raise ValueError(
            f"--checkpoint-dir {str(checkpoint_dir)!r} already holds {len(checkpoints)} sparsam "
            f"checkpoint(s), newest {checkpoints[0].name}: pass --resume to continue that run, "
            "or choose another --checkpoint-dir (or --out) to start a new one."
        )
    return checkpoints[0] if checkpoints else None


def run_pretrain(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    params: dict[str, Any] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> Any:
    """DINO pretraining of a backbone on the images of ``data``; writes the result to ``out``.

    ``out`` receives the teacher backbone in timm's Hub format (``config.json``,
    ``model.safetensors`` and a model card, written by ``save_backbone``) and the fitted
    featurizer as ``featurizer.joblib``. Under ``torchrun`` every process joins the process
    group (``sparsam.training.distributed.init_from_environment``) and trains on its own device;
    only rank 0 writes ``out`` and prints.

    Parameters
    ----------
    data : str or path-like
        Anything `resolve_images` accepts.
    out : str or path-like
        Output directory (created if missing); sparsam's files in it are replaced, other files
        are left alone.
    root : str or path-like, optional
        The download a data set name reads.
    params : dict, optional
        ``DinoFeaturizer`` parameters; its defaults for the others. ``checkpoint_dir`` is set
        here.
    checkpoint_dir : str or path-like, optional
        Where training writes its checkpoints; ``out/checkpoints`` when omitted.
    resume : bool, default=False
        Continue from the newest checkpoint in ``checkpoint_dir``. Without it, a directory
        that already holds checkpoints is refused, so that no run continues or overwrites
        another by accident; with it, a directory without checkpoints is refused.

    Returns
    -------
    featurizer : DinoFeaturizer
        The fitted featurizer (on every rank).
    """
    import joblib
    import torch.distributed

    from ._files import atomic_write, check_writable_directory
    from .backbones import save_backbone
    from .featurizer import DinoFeaturizer
    from .training import distributed

    out = Path(out)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out / "checkpoints"
    params = dict(params or {})
    was_distributed = distributed.is_distributed()
    device = distributed.init_from_environment(str(params.get("device", "auto")))
    joined_here = distributed.is_distributed() and not was_distributed
    try:
        if distributed.is_distributed():
            # Each rank trains on the device torchrun's LOCAL_RANK gives it.
            params["device"] = str(device)
        if not distributed.is_main_process():
            params["verbose"] = 0  # one progress bar, not one per process
        newest = distributed.on_main_process(lambda: _check_checkpoints(checkpoint_dir, resume))
        images = resolve_images(data, root)
        # Before training, so that a read-only or misspelt --out fails now, not after hours.
        distributed.on_main_process(lambda: check_writable_directory(out, "--out"))
        featurizer = DinoFeaturizer(**params, checkpoint_dir=checkpoint_dir)
        if distributed.is_main_process():
            print(
                f"DINO on {len(images)} images from {data}"
                + (f", resuming from {newest}" if newest is not None else "")
                + (f", {distributed.world_size()} processes (torchrun)" if joined_here else "")
            )
        started = time.perf_counter()
        featurizer.fit(images)
        minutes = (time.perf_counter() - started) / 60
        if distributed.is_main_process():
            save_backbone(featurizer, out)
            with atomic_write(out / "featurizer.joblib") as file:
                joblib.dump(featurizer, file)
            print(f"Wrote the backbone to {out} (config.json, model.safetensors, README.md)")
            print(f"Wrote the fitted featurizer to {out / 'featurizer.joblib'}")
            print(f"Checkpoints are in {checkpoint_dir}")
            print(_training_summary(featurizer, minutes))
    finally:
        if joined_here:
            torch.distributed.destroy_process_group()
    return featurizer


def _training_summary(featurizer: Any, minutes: float) -> str:
    history = featurizer.history_
    if not history.get("loss"):
        return f"No DINO training (epochs={featurizer.epochs}): weights of {featurizer.pretrained}."
    return (
        f"DINO: {len(history['loss'])} epochs in {minutes:.1f} min; final loss "
        f"{history['loss'][-1]:.3f}, teacher entropy {history['teacher_entropy'][-1]:.2f} "
        f"(ln(out_dim) = {np.log(featurizer.out_dim):.2f} means collapse); RankMe "
        f"{featurizer.initial_rankme_:.1f} untrained -> {history['rankme'][-1]:.1f} "
        f"(label-free, higher is better)"
    )


def run_embed(
    data: str | os.PathLike[str],
    backbone: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    architecture: str | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    num_workers: int | None = None,
    pooling: str | None = None,
    n_last_blocks: int | None = None,
    chunk_size: int = 4096,
    overwrite: bool = False,
    verbose: int = 1,
) -> Path:
    """Embeddings of the images of ``data``, written chunk by chunk to a ``.npy`` file.

    The embeddings go into a memory-mapped ``.npy`` file beside ``out``, ``chunk_size``
    images at a time, so the embeddings of millions of images need no memory; it is renamed
    to ``out`` once complete, together with ``out`` with suffix ``.txt``, which lists the
    inputs one per line in row order (``DATA[index]`` for data sets of arrays). If embedding
    fails, neither file is written or changed.

    Under ``torchrun`` every process joins the process group
    (``sparsam.training.distributed.init_from_environment``), embeds one contiguous block of the
    images, chunk by chunk, on its own device and writes its rows into the file that rank 0
    created; rank 0 renames it into place once every process has written its rows, and only
    rank 0 prints. A failure on any process stops all of them and leaves no output. ``out``
    must lie on a file system that every process sees.

    Parameters
    ----------
    data : str or path-like
        Anything `resolve_images` accepts.
    backbone : str or path-like
        A ``featurizer.joblib`` file (a fitted ``DinoFeaturizer``, as ``sparsam pretrain``
        writes), or anything ``DinoFeaturizer(pretrained=...)`` loads: a directory written by
        ``save_backbone`` or ``sparsam pretrain``, ``"hf-hub:org/name"``, ``"bm"``, ``"endo"``,
        ``"isic"`` or ``"imagenet"`` (with ``architecture``).
    out : str or path-like
        The ``.npy`` file; its folder is created if missing.
    root : str or path-like, optional
        The download a data set name reads.
    architecture : str, optional
        timm model name for ``"imagenet"``; the featurizer's default when omitted.
    image_size, batch_size, num_workers : int, optional
        Featurizer settings; its defaults (or the saved featurizer's) when omitted.
        ``image_size`` cannot change a saved featurizer.
    pooling, n_last_blocks : str and int, optional
        The read-out (``DinoFeaturizer``'s parameters of these names); the featurizer's
        (the last block's CLS token by default) when omitted.
    device, precision : str, optional
        Featurizer device and precision (``"auto"``, ``"fp32"``, ``"bf16"``). Under torchrun
        each process takes the GPU of its ``LOCAL_RANK``, or the CPU with ``"cpu"`` or
        without CUDA.
    chunk_size : int, default=4096
        Images embedded per ``transform`` call (per process under torchrun).
    overwrite : bool, default=False
        Replace existing output files instead of refusing.
    verbose : int, default=1
        Featurizer verbosity.

    Returns
    -------
    out : Path
    """
    import torch.distributed

    from ._embedding_file import write_embeddings
    from ._files import check_writable_directory
    from .training import distributed

    out = Path(out)
    if out.suffix != ".npy":
        raise ValueError(f"--out {str(out)!r}: expected a file name ending in .npy.")
    if chunk_size < 1:
        raise ValueError(f"--chunk-size {chunk_size}: expected a positive number of images.")
    listing = out.with_suffix(".txt")
    was_distributed = distributed.is_distributed()
    rank_device = distributed.init_from_environment(device or "auto")
    joined_here = distributed.is_distributed() and not was_distributed
    try:
        if distributed.is_distributed():
            # Each rank embeds on the device torchrun's LOCAL_RANK gives it.
            device = str(rank_device)
        if not distributed.is_main_process():
            verbose = 0  # one progress bar, not one per process
        distributed.on_main_process(lambda: _refuse_existing((out, listing), overwrite))
        images = resolve_images(data, root)
        names = _input_names(images, data)
        distributed.on_main_process(lambda: check_writable_directory(out.parent, "--out folder"))
        featurizer = _embedding_featurizer(
            backbone,
            images[:1],
            architecture=architecture,
            image_size=image_size,
            settings={
                "batch_size": batch_size,
                "device": device,
                "precision": precision,
                "num_workers": num_workers,
                "pooling": pooling,
                "n_last_blocks": n_last_blocks,
            },
            verbose=verbose,
        )
        shape = write_embeddings(
            featurizer, images, names, out, chunk_size=chunk_size, verbose=verbose
        )
        if distributed.is_main_process():
            print(
                f"Wrote {shape[0]} embeddings of {shape[1]} features to {out}; inputs in "
                f"{listing}"
                + (f"; {distributed.world_size()} processes (torchrun)" if joined_here else "")
            )
    finally:
        if joined_here:
            torch.distributed.destroy_process_group()
    return out


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse to replace output files, unless ``--overwrite``."""
    for path in paths:
        if path.exists() and not overwrite:
            raise ValueError(
                f"{path} exists; pass --overwrite to replace it, or choose another --out."
            )


def _embedding_featurizer(
    backbone: str | os.PathLike[str],
    first_image: Any,
    *,
    architecture: str | None,
    image_size: int | None,
    settings: dict[str, Any],
    verbose: int,
) -> Any:
    """A fitted featurizer from a joblib file, or one that loads ``backbone`` as pretrained."""
    import joblib

    from .featurizer import DinoFeaturizer

    settings = {name: value for name, value in settings.items() if value is not None}
    settings["verbose"] = verbose
    if Path(backbone).is_file():
        if image_size is not None or architecture is not None:
            raise ValueError(
                f"--backbone {backbone} is a saved featurizer, which embeds at the image size "
                "and with the architecture it was fitted with: drop --image-size and --arch."
            )
        featurizer = joblib.load(backbone)
        if not isinstance(featurizer, DinoFeaturizer) or not hasattr(featurizer, "backbone_"):
            raise ValueError(
                f"--backbone {backbone} does not hold a fitted DinoFeaturizer: expected a "
                "featurizer.joblib written by sparsam pretrain, or a backbone directory."
            )
        return featurizer.set_params(**settings)
    if architecture is not None:
        settings["backbone"] = architecture
    if image_size is not None:
        settings["image_size"] = image_size
    # epochs=0: fit only loads the weights; the one image passes fit's input checks.
    return DinoFeaturizer(pretrained=str(backbone), epochs=0, **settings).fit(first_image)


def _json_object(text: str) -> dict[str, Any]:
    """argparse type of ``--backbone-kwargs``: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({error.msg}); expected an object such as "
            '\'{"depth": 4, "embed_dim": 96}\''
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a JSON {type(value).__name__}; expected an object such as "
            '\'{"depth": 4, "embed_dim": 96}\''
        )
    return value


_DATA_HELP = (
    "a folder of images (searched recursively), a .txt file with one image path per line, a "
    "CSV file with a 'path' column, or a data set name with --root: " + ", ".join(EVALUATE_DATASETS)
)
# `sparsam pretrain` options that are DinoFeaturizer parameters of the same name; those the
# user leaves out keep the featurizer's defaults.
_PRETRAIN_PARAMETERS = (
    "backbone",
    "backbone_kwargs",
    "pretrained",
    "image_size",
    "local_crop_size",
    "local_crops",
    "epochs",
    "batch_size",
    "lr",
    "out_dim",
    "koleo_weight",
    "device",
    "precision",
    "num_workers",
    "checkpoint_every",
)
_IN_MEMORY = {"auto": "auto", "yes": True, "no": False}
_COMPILE = _IN_MEMORY


def _add_pretrain_parser(commands: Any) -> None:
    import inspect

    from .featurizer import DinoFeaturizer

    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(DinoFeaturizer).parameters.items()
    }

    def default(name: str) -> str:
        return f"(default: {defaults[name]})" if name in defaults else ""

    pretrain = commands.add_parser(
        "pretrain",
        help="DINO self-supervised pretraining on your unlabeled images",
        description=(
            "Train a timm backbone with DINO on the images of DATA (labels are never read) "
            "and write it to --out in timm's Hub format (config.json, model.safetensors, "
            "README.md), with the fitted featurizer as featurizer.joblib. Checkpoints go to "
            "--checkpoint-dir; --resume continues an interrupted run. For several GPUs: "
            "torchrun --nproc-per-node N -m sparsam pretrain ... (--batch-size is per process)."
        ),
    )
    pretrain.add_argument("data", metavar="DATA", help=_DATA_HELP)
    pretrain.add_argument("--out", required=True, metavar="DIR", help="output directory")
    pretrain.add_argument("--root", default=None, help="the download a data set name reads")
    pretrain.add_argument(
        "--backbone", metavar="NAME", help=f"timm model name {default('backbone')}"
    )
    pretrain.add_argument(
        "--backbone-kwargs",
        type=_json_object,
        metavar="JSON",
        help="timm.create_model arguments as a JSON object, e.g. '{\"depth\": 4}'",
    )
    pretrain.add_argument(
        "--pretrained",
        metavar="SPEC",
        help="starting weights: imagenet, bm, endo, isic, hf-hub:org/name or a directory "
        "(default: random)",
    )
    integers = {
        "--image-size": "side of the global crops (default: the backbone's input size)",
        "--local-crop-size": f"side of the local crops {default('local_crop_size')}",
        "--local-crops": f"local crops per image {default('local_crops')}",
        "--epochs": f"DINO epochs {default('epochs')}",
        "--batch-size": f"images per step and process {default('batch_size')}",
        "--out-dim": f"prototypes of the DINO head {default('out_dim')}",
        "--num-workers": f"DataLoader workers that decode images {default('num_workers')}",
        "--checkpoint-every": f"steps between mid-epoch checkpoints {default('checkpoint_every')}",
    }
    for option, text in integers.items():
        pretrain.add_argument(option, type=int, metavar="N", help=text)
    pretrain.add_argument(
        "--lr", type=float, help=f"base learning rate for a batch of 256 {default('lr')}"
    )
    pretrain.add_argument(
        "--koleo-weight",
        type=float,
        metavar="WEIGHT",
        help=f"weight of the KoLeo regulariser, 0 for the paper's loss {default('koleo_weight')}",
    )
    pretrain.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    pretrain.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="(default: auto)")
    pretrain.add_argument(
        "--in-memory",
        choices=sorted(_IN_MEMORY),
        help="decode all images into memory once (yes), stream them from disk each epoch "
        "(no), or decide by their size (auto, the default)",
    )
    pretrain.add_argument(
        "--compile",
        choices=sorted(_COMPILE),
        help="torch.compile the training forward: yes, no or auto (the default; compiles only "
        "where it was measured to pay, so far nowhere)",
    )
    pretrain.add_argument(
        "--checkpoint-dir", metavar="DIR", help="where checkpoints go (default: OUT/checkpoints)"
    )
    pretrain.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --checkpoint-dir (same DATA and options)",
    )
    pretrain.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="random_state; --resume needs the same (default: 0)",
    )
    pretrain.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_embed_parser(commands: Any) -> None:
    embed = commands.add_parser(
        "embed",
        help="CLS embeddings of many images into a .npy file",
        description=(
            "Embed the images of DATA with a pretrained backbone and write the embeddings, one "
            "row per image, to FILE.npy (memory-mapped, chunk by chunk, so millions of images "
            "need no memory), and the inputs in row order to FILE.txt. Load them with "
            "numpy.load(FILE, mmap_mode='r'). For several GPUs: torchrun --nproc-per-node N "
            "-m sparsam embed ... (each process embeds one block of the images into the same "
            "file)."
        ),
    )
    embed.add_argument("data", metavar="DATA", help=_DATA_HELP)
    embed.add_argument(
        "--backbone",
        required=True,
        metavar="SPEC",
        help="a directory written by sparsam pretrain or save_backbone, its featurizer.joblib, "
        "hf-hub:org/name, bm, endo, isic, or imagenet with --arch",
    )
    embed.add_argument("--out", required=True, metavar="FILE.npy", help="the embeddings file")
    embed.add_argument("--root", default=None, help="the download a data set name reads")
    embed.add_argument("--arch", metavar="NAME", help="timm model name for --backbone imagenet")
    embed.add_argument(
        "--image-size", type=int, metavar="N", help="input size (default: the backbone's)"
    )
    embed.add_argument("--batch-size", type=int, metavar="N", help="images per forward pass")
    embed.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    embed.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="(default: auto)")
    embed.add_argument("--num-workers", type=int, metavar="N", help="DataLoader workers")
    embed.add_argument(
        "--pooling",
        choices=["cls", "mean", "cls+mean"],
        help="tokens per block: class token, mean of the patch tokens, or both (default: cls)",
    )
    embed.add_argument(
        "--n-last-blocks",
        type=int,
        metavar="N",
        help="read the last N blocks, concatenated (default: 1; DINO evaluates ViT-S with 4)",
    )
    embed.add_argument(
        "--chunk-size",
        type=int,
        default=4096,
        metavar="N",
        help="images per transform call and process, written to the file at once (default: 4096)",
    )
    embed.add_argument(
        "--overwrite", action="store_true", help="replace existing FILE.npy and FILE.txt"
    )
    embed.add_argument("--quiet", action="store_true", help="no progress bars")


def _pretrain_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The DinoFeaturizer parameters the user gave on the ``pretrain`` command line."""
    params = {
        name: getattr(args, name)
        for name in _PRETRAIN_PARAMETERS
        if getattr(args, name) is not None
    }
    if args.in_memory is not None:
        params["in_memory"] = _IN_MEMORY[args.in_memory]
    if args.compile is not None:
        params["compile"] = _COMPILE[args.compile]
    params["random_state"] = args.seed
    params["verbose"] = 0 if args.quiet else 1
    return params


_DESCRIPTION = """\
Self-supervised DINO pretraining of timm vision transformers on unlabeled (medical) images,
and few-shot classification on their frozen embeddings (Nielsen et al. 2023).

example:
  sparsam demo
  sparsam pretrain images/ --out my-backbone --pretrained imagenet --epochs 100
  sparsam embed images/ --backbone my-backbone --out embeddings.npy

Run `sparsam COMMAND --help` for a command's options.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsam`` console script."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sparsam",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sparsam {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log progress at INFO level, e.g. one 'DINO epoch ...' line per epoch",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND"
    )
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
            "few_shot_curve.csv and few_shot_curve.png to --out. With --supervised, a network "
            "fine-tuned end to end from the same starting point is scored on the same draws "
            "too: a second table, few_shot_curve_supervised.csv, and both curves in the PNG."
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
    evaluate.add_argument("--out", default=None, help="directory for the CSVs and PNG")
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
    push.add_argument(
        "--overwrite-card",
        action="store_true",
        help="replace the repository's README.md even if sparsam did not write it",
    )
    _add_pretrain_parser(commands)
    _add_embed_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Only sparsam's own logger: INFO of other libraries (httpx, torch) stays hidden. Without
    # -v the logger keeps the level it has (the root's WARNING unless the caller set one),
    # and -v lasts for this command only.
    logger = logging.getLogger("sparsam")
    previous_level = logger.level
    if args.verbose:
        logger.setLevel(logging.INFO)
    try:
        _run_command(args)
    except (ValueError, OSError) as error:
        print(f"sparsam {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Training has logged what it saved and how to resume; no traceback on top of it.
        print(f"sparsam {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        logger.setLevel(previous_level)
    return 0


def _run_command(args: argparse.Namespace) -> None:
    """Dispatch a parsed command line; ``main`` turns bad input into exit code 1."""
    if args.command == "demo":
        run_demo(epochs=args.epochs, random_state=args.seed, verbose=0 if args.quiet else 1)
    elif args.command == "evaluate":
        if args.supervised_epochs is not None and not args.supervised:
            raise ValueError(
                f"--supervised-epochs {args.supervised_epochs} without --supervised: add "
                "--supervised to fine-tune, or drop --supervised-epochs."
            )
        # Without --supervised-epochs, run_evaluate's default: one place states it.
        supervised_options = (
            {} if args.supervised_epochs is None else {"supervised_epochs": args.supervised_epochs}
        )
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
            supervised=args.supervised,
            **supervised_options,
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
            overwrite_card=args.overwrite_card,
            **options,
        )
        print(f"Pushed {args.directory} to {args.repo_id}: {url}")
    elif args.command == "pretrain":
        run_pretrain(
            args.data,
            args.out,
            root=args.root,
            params=_pretrain_parameters(args),
            checkpoint_dir=args.checkpoint_dir,
            resume=args.resume,
        )
    elif args.command == "embed":
        run_embed(
            args.data,
            args.backbone,
            args.out,
            root=args.root,
            architecture=args.arch,
            image_size=args.image_size,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            num_workers=args.num_workers,
            pooling=args.pooling,
            n_last_blocks=args.n_last_blocks,
            chunk_size=args.chunk_size,
            overwrite=args.overwrite,
            verbose=0 if args.quiet else 1,
        )


if __name__ == "__main__":
    sys.exit(main())
