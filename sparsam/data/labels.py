"""Class labels of some images from a spreadsheet: a CSV file with the columns ``path,label``.

The file a clinician keeps beside a folder of images: one row per labeled image, the label
empty where an image was looked at but not labeled. Every image not in the file is unlabeled
too. `read_labels` pairs the rows with a list of image paths and returns one label per image,
``-1`` (scikit-learn's and sparsam's mark of an unlabeled sample) where there is none.

Examples
--------
>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> images = [folder / "a.png", folder / "b.png", folder / "c.png"]
>>> for image in images:
...     image.touch()
>>> _ = (folder / "labels.csv").write_text("path,label\\na.png,tumour\\nb.png,\\n")
>>> read_labels(folder / "labels.csv", images).tolist()
['tumour', -1, -1]
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["LABEL_COLUMNS", "class_indices", "read_labels"]

# The header a labels CSV must have (names compared case-insensitively, other columns ignored).
LABEL_COLUMNS = ("path", "label")


def read_labels(
    csv_file: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]]
) -> np.ndarray:
    """One label per image of ``images``, read from the labels CSV ``csv_file``.

    Parameters
    ----------
    csv_file : str or path-like
        A CSV file (UTF-8, a BOM allowed) with a header row that holds the columns ``path``
        and ``label`` (names compared case-insensitively; other columns are ignored). A path
        is absolute or relative to the folder of ``csv_file``, and must be one of ``images``
        (compared after making both absolute and normalising ``..``). A row with an empty
        label marks its image unlabeled; blank rows are skipped.
    images : sequence of str or path-like
        The images the labels belong to, e.g. the files of a folder (relative paths are
        relative to the working directory).

    Returns
    -------
    labels : ndarray of object, shape (len(images),)
        The label of each image as a string (surrounding whitespace stripped), ``-1`` for the
        images without one (not in the file, or with an empty label).

    Raises
    ------
    ValueError
        If the file is empty or its header lacks a column, or a row names no path, a file
        that does not exist, a file that is not among ``images``, or the same image as an
        earlier row; the message names the file and the row (numbered as a spreadsheet shows
        it: the header is row 1).
    """
    csv_file = Path(csv_file)
    positions = {_normalised(Path(image)): index for index, image in enumerate(images)}
    labels = np.full(len(images), -1, dtype=object)
    first_row: dict[int, int] = {}
    with open(csv_file, encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        path_column, label_column = _columns(next(reader, None), csv_file)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{csv_file}, row {reader.line_num}"
            index = _image_index(row, path_column, where, csv_file.parent, positions)
            if index in first_row:
                raise ValueError(
                    f"{where}: {str(images[index])!r} is listed again (first on row "
                    f"{first_row[index]}); expected each image at most once."
                )
            first_row[index] = reader.line_num
            label = row[label_column].strip() if label_column < len(row) else ""
            if label:
                labels[index] = label
    return labels


def class_indices(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer class indices of ``labels`` (``-1`` kept for unlabeled) and the class names.

    Parameters
    ----------
    labels : ndarray of object
        As `read_labels` returns them.

    Returns
    -------
    indices : ndarray of int, shape (len(labels),)
        Position of each label in ``class_names``; ``-1`` for the unlabeled images.
    class_names : list of str
        The distinct labels, sorted.
    """
    labeled = np.array([label != -1 for label in labels], dtype=bool)
    class_names = sorted({str(label) for label in labels[labeled]})
    lookup = {name: index for index, name in enumerate(class_names)}
    indices = np.full(len(labels), -1, dtype=np.int64)
    indices[labeled] = [lookup[str(label)] for label in labels[labeled]]
    return indices, class_names


def _normalised(path: Path) -> Path:
    return Path(os.path.normpath(path.expanduser().absolute()))


def _columns(header: list[str] | None, csv_file: Path) -> tuple[int, int]:
    """Positions of the ``path`` and ``label`` columns in ``header``."""
    expected = f"expected a header row with the columns {','.join(LABEL_COLUMNS)}"
    if not header:
        raise ValueError(f"The labels file {str(csv_file)!r} is empty; {expected}.")
    names = [name.strip().lower() for name in header]
    missing = [name for name in LABEL_COLUMNS if name not in names]
    if missing:
        raise ValueError(
            f"{csv_file}, row 1: no column {' or '.join(map(repr, missing))} in the header "
            f"{','.join(header)!r}; {expected} (e.g. 'path,label')."
        )
    return names.index("path"), names.index("label")


def _image_index(
    row: list[str], column: int, where: str, folder: Path, positions: dict[Path, int]
) -> int:
    """The position among the images of the path in ``row``; refuses paths that are not."""
    entry = row[column].strip() if column < len(row) else ""
    if not entry:
        raise ValueError(f"{where}: no path in the 'path' column; expected an image path.")
    path = Path(entry).expanduser()
    path = _normalised(path if path.is_absolute() else folder / path)
    if path in positions:
        return positions[path]
    if not path.exists():
        raise ValueError(
            f"{where}: the image {entry!r} does not exist (looked for {str(path)!r}); paths "
            f"are absolute or relative to the folder of the labels file, {str(folder)!r}."
        )
    raise ValueError(
        f"{where}: {str(path)!r} is not among the {len(positions)} images of DATA; expected "
        "the path of one of them (a file with an image suffix below the DATA folder, or listed "
        "in the DATA list)."
    )
