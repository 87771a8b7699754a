"""What ``DATA`` of ``sparsam pretrain`` and ``sparsam embed`` stands for: folders, lists, names."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..experiments import EVALUATE_DATASETS, load_evaluation_dataset

__all__ = [
    "DATA_HELP",
    "IMAGE_SUFFIXES",
    "SKIPPED_REPORT",
    "add_on_error_option",
    "reporting_skipped",
    "resolve_images",
]

# What `sparsam pretrain` and `sparsam embed` read from a folder (compared case-insensitively):
# the formats sparsam.data decodes, PIL's and DICOM's.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
# The CSV column that holds the image paths: the first of these in the header, else the first.
_CSV_PATH_COLUMNS = ("path", "image", "file")
_DATA_EXPECTED = (
    "expected a folder of images, a .txt file with one image path per line, a .csv file with a "
    f"'path' column, or one of the data set names {', '.join(EVALUATE_DATASETS)} with --root"
)
# The report of the images a command left out with --on-error skip, in --out or beside it.
SKIPPED_REPORT = "skipped.csv"
# The help text of the DATA argument of both commands.
DATA_HELP = (
    "a folder of images (searched recursively), a .txt file with one image path per line, a "
    "CSV file with a 'path' column, or a data set name with --root: " + ", ".join(EVALUATE_DATASETS)
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
    from ..data.datasets import find_images

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


def add_backbone_option(parser: argparse.ArgumentParser) -> None:
    """Add the required ``--backbone SPEC`` of the commands that embed with a trained
    backbone."""
    parser.add_argument(
        "--backbone",
        required=True,
        metavar="SPEC",
        help="a directory written by sparsam pretrain or save_backbone, its featurizer.joblib, "
        "hf-hub:org/name, bm, endo, isic, or imagenet with --arch",
    )


def add_inference_options(parser: argparse.ArgumentParser, *, batches: bool = True) -> None:
    """Add how a backbone runs: ``--arch``, ``--image-size``, ``--device``, ``--precision``,
    and with ``batches`` also ``--batch-size`` and ``--num-workers``."""
    parser.add_argument("--arch", metavar="NAME", help="timm model name for --backbone imagenet")
    parser.add_argument(
        "--image-size", type=int, metavar="N", help="input size (default: the backbone's)"
    )
    if batches:
        parser.add_argument("--batch-size", type=int, metavar="N", help="images per forward pass")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="(default: auto)")
    if batches:
        parser.add_argument("--num-workers", type=int, metavar="N", help="DataLoader workers")


def add_on_error_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--on-error raise|skip`` (the estimators' ``on_error``) to a command that reads
    images; `reporting_skipped` writes the report of what it skipped."""
    parser.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="an image file that cannot be decoded stops the command (raise, the default) or "
        f"is left out and listed in {SKIPPED_REPORT} (skip); run sparsam check DATA first to "
        "find such files",
    )


@contextmanager
def reporting_skipped(
    report: Path | None, renumber: Callable[[Any], Any] | None = None
) -> Iterator[None]:
    """Inside, collect the images the estimators skip (their `SkippedImagesWarning`, which is
    not shown); on leaving, even by an error, write them to ``report`` as CSV and say so on
    stderr, or write nothing if none was skipped. Only the main process of a process group
    writes. With ``report=None`` the warnings are shown as they come, and nothing is written.

    ``renumber`` maps each `SkippedImage` of one estimator call to its index in DATA (e.g.
    for ``embed``, which embeds chunk by chunk); by default it is kept.
    """
    from ..data.skipping import SkippedImagesWarning, merge_skipped, write_skipped_report
    from ..training import distributed

    if report is None:
        yield
        return
    collected: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", SkippedImagesWarning)
        show = warnings.showwarning

        def collect(message, category, filename, lineno, file=None, line=None):
            if isinstance(message, SkippedImagesWarning):
                collected.extend(map(renumber or (lambda image: image), message.skipped))
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = collect
        try:
            yield
        finally:
            skipped = merge_skipped(collected)
            if skipped and distributed.is_main_process():
                write_skipped_report(report, skipped)
                print(
                    f"Skipped {len(skipped)} image(s) that could not be decoded; listed in "
                    f"{report}",
                    file=sys.stderr,
                )
