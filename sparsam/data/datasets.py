"""Loaders that turn the public downloads of the paper's datasets into paths and labels.

Every loader returns ``(images, labels, class_names)``: ``images`` is a list of
`pathlib.Path` (a uint8 array for MedMNIST, a float array for the demo set), ``labels`` an
int64 array indexing ``class_names`` (``-1`` for unlabeled images) and ``class_names`` a sorted
list of str. Each loader checks the layout before returning and names the missing folder, file
or column together with the root it was given. Paths read from CSV files are checked to stay
inside the data root.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "find_images",
    "load_bone_marrow",
    "load_demo",
    "load_hyperkvasir",
    "load_image_folder",
    "load_isic2019",
    "load_isic2020",
    "load_medmnist",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
_JPEG_EXTENSIONS = (".jpg", ".jpeg")
# Folders that archivers add next to the data (macOS zip resource forks).
_IGNORED_FOLDERS = frozenset({"__MACOSX"})
_BONE_MARROW_FOLDER = "BM_cytomorphology_data"
_HYPERKVASIR_LABELED = "labeled-images"
_HYPERKVASIR_UNLABELED = Path("unlabeled-images", "images")
_ISIC2019_IMAGES = "ISIC_2019_Training_Input"
_ISIC2019_CSV = "ISIC_2019_Training_GroundTruth.csv"
_ISIC2019_DIAGNOSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
_ISIC2019_UNKNOWN = "UNK"
_ISIC2020_CSVS = ("train.csv", "ISIC_2020_Training_GroundTruth.csv")
_ISIC2020_CLASS_NAMES = ["benign", "malignant"]
_MEDMNIST_SPLITS = ("train", "val", "test")
_MEDMNIST_CLASS_NAMES_KEY = "class_names"
_MAX_LISTED = 5

Dataset = tuple[list[Path], np.ndarray, list[str]]


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Dataset:
    """Load an ImageFolder layout: one sub-folder per class, images at any depth below it.

    Parameters
    ----------
    root : str or os.PathLike
        Folder whose direct sub-folders are the classes. Files directly in ``root`` are ignored,
        as are hidden files and folders (names starting with ``"."``) and ``__MACOSX``.
    extensions : sequence of str, default=(".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
        Accepted file suffixes, compared case-insensitively.

    Returns
    -------
    paths : list of pathlib.Path
        Image files, ordered by class and then by path.
    labels : numpy.ndarray of shape (n_images,)
        int64 index of each image's class in ``class_names``.
    class_names : list of str
        Sorted names of the class folders.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder, has no class folders, or a class folder holds no image.
    ValueError
        If ``extensions`` is empty.

    Examples
    --------
    >>> paths, labels, class_names = load_image_folder("my_images")  # doctest: +SKIP
    """
    root = _existing_folder(root, "image folder root")
    suffixes = _normalised_extensions(extensions)
    class_folders = _subfolders(root)
    if not class_folders:
        raise FileNotFoundError(
            f"No class folders in image folder root {str(root)!r}: expected one sub-folder "
            "per class holding that class's images."
        )
    return _collect_classes(
        {folder.name: folder for folder in class_folders}, suffixes, description=str(root)
    )


def load_bone_marrow(root: str | os.PathLike[str]) -> Dataset:
    """Load the bone marrow cytomorphology set of Matek et al. 2021 (Blood).

    Expects the download "An Expert-Annotated Dataset of Bone Marrow Cytology in Hematologic
    Malignancies" (The Cancer Imaging Archive, ``BM_cytomorphology_data``): one folder per class
    named by its abbreviation (``ABE``, ``ART``, ``BAS``, ``BLA``, ``EBO``, ``EOS``, ``FGC``, ...),
    JPEG files in nested sub-folders, e.g. ``BLA/0001-1000/BLA_00001.jpg``.

    Parameters
    ----------
    root : str or os.PathLike
        The ``BM_cytomorphology_data`` folder or the folder containing it.

    Returns
    -------
    paths : list of pathlib.Path
        JPEG files, ordered by class and then by path.
    labels : numpy.ndarray of shape (n_images,)
        int64 index of each image's class in ``class_names``.
    class_names : list of str
        Sorted class abbreviations (the folder names).

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder, no class folder is found, or a class folder holds no JPEG.
    """
    given = _existing_folder(root, "bone marrow root")
    data_folder = given / _BONE_MARROW_FOLDER
    if not data_folder.is_dir():
        data_folder = given
    class_folders = _subfolders(data_folder)
    if not class_folders:
        raise FileNotFoundError(
            f"No class folders in bone marrow root {str(given)!r}: expected "
            f"{str(given / _BONE_MARROW_FOLDER)!r} or {str(given)!r} itself to hold one folder "
            "per class (ABE, ART, BAS, BLA, ...) of JPEG images."
        )
    return _collect_classes(
        {folder.name: folder for folder in class_folders},
        _JPEG_EXTENSIONS,
        description=str(data_folder),
    )


def load_hyperkvasir(root: str | os.PathLike[str], *, include_unlabeled: bool = False) -> Dataset:
    """Load the HyperKvasir gastrointestinal endoscopy images of Borgli et al. 2020.

    Expects the download ``hyper-kvasir`` (OSF / Simula) with the labeled images in
    ``labeled-images/<tract>/<category>/<class>/*.jpg``, where ``<tract>`` is ``lower-gi`` or
    ``upper-gi`` (``lower-gi-tract`` / ``upper-gi-tract`` in some copies) and ``<category>`` one
    of ``anatomical-landmarks``, ``pathological-findings``, ``quality-of-mucosal-views`` and
    ``therapeutic-interventions``. A flatter copy with the class folders directly in
    ``labeled-images`` is accepted too: it is recognised by a sub-folder of ``labeled-images``
    holding JPEG files itself. The unlabeled images lie in ``unlabeled-images/images/*.jpg``.

    Parameters
    ----------
    root : str or os.PathLike
        Folder containing ``labeled-images`` (and ``unlabeled-images`` when needed).
    include_unlabeled : bool, default=False
        Whether to append the unlabeled images with label ``-1``.

    Returns
    -------
    paths : list of pathlib.Path
        Labeled JPEG files ordered by class and then by path, followed by the unlabeled ones.
    labels : numpy.ndarray of shape (n_images,)
        int64 index of each image's class in ``class_names``; ``-1`` for unlabeled images.
    class_names : list of str
        Sorted names of the class folders (e.g. ``"polyps"``).

    Raises
    ------
    FileNotFoundError
        If a required folder is missing or a class folder holds no JPEG.
    ValueError
        If two class folders in different branches share a name.
    """
    root = _existing_folder(root, "HyperKvasir root")
    labeled = root / _HYPERKVASIR_LABELED
    if not labeled.is_dir():
        raise FileNotFoundError(
            f"Missing folder {str(labeled)!r} in HyperKvasir root {str(root)!r}: expected "
            f"'{_HYPERKVASIR_LABELED}/<tract>/<category>/<class>/*.jpg'."
        )
    children = _subfolders(labeled)
    is_flat = any(_has_direct_images(child, _JPEG_EXTENSIONS) for child in children)
    if is_flat:
        class_folders = children
    else:
        class_folders = [
            folder
            for tract in children
            for category in _subfolders(tract)
            for folder in _subfolders(category)
        ]
    if not class_folders:
        raise FileNotFoundError(
            f"No class folders in {str(labeled)!r} (HyperKvasir root {str(root)!r}): expected "
            "class folders at '<tract>/<category>/<class>' (e.g. "
            "'lower-gi/pathological-findings/polyps') or directly in it."
        )
    by_name: dict[str, Path] = {}
    for folder in class_folders:
        if folder.name in by_name:
            raise ValueError(
                f"Class folder name {folder.name!r} occurs twice in HyperKvasir root "
                f"{str(root)!r}: {str(by_name[folder.name])!r} and {str(folder)!r}; expected "
                "unique class names."
            )
        by_name[folder.name] = folder
    paths, labels, class_names = _collect_classes(
        by_name, _JPEG_EXTENSIONS, description=str(labeled)
    )
    if include_unlabeled:
        unlabeled_folder = root / _HYPERKVASIR_UNLABELED
        if not unlabeled_folder.is_dir():
            raise FileNotFoundError(
                f"Missing folder {str(unlabeled_folder)!r} in HyperKvasir root {str(root)!r}: "
                "expected the unlabeled JPEG images there (include_unlabeled=True)."
            )
        unlabeled = find_images(unlabeled_folder, _JPEG_EXTENSIONS)
        if not unlabeled:
            raise FileNotFoundError(
                f"No JPEG images in {str(unlabeled_folder)!r} (HyperKvasir root {str(root)!r})."
            )
        paths = paths + unlabeled
        labels = np.concatenate([labels, np.full(len(unlabeled), -1, dtype=np.int64)])
    return paths, labels, class_names


def load_isic2019(root: str | os.PathLike[str]) -> Dataset:
    """Load the ISIC 2019 skin lesion training set (Tschandl 2018, Codella 2017, Combalia 2019).

    Expects the ISIC challenge 2019 downloads ``ISIC_2019_Training_Input/`` (``<image>.jpg``) and
    ``ISIC_2019_Training_GroundTruth.csv`` (columns ``image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC,
    UNK``, one-hot values such as ``1.0`` and ``0.0``) side by side in ``root``.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the image folder and the ground-truth CSV file.

    Returns
    -------
    paths : list of pathlib.Path
        JPEG files in the order of the CSV rows.
    labels : numpy.ndarray of shape (n_images,)
        int64 index of each image's diagnosis in ``class_names``.
    class_names : list of str
        Sorted diagnosis columns. ``UNK`` is dropped when no image carries it, as in the
        training data, which leaves the 8 diagnoses ``AK, BCC, BKL, DF, MEL, NV, SCC, VASC``.

    Raises
    ------
    FileNotFoundError
        If the image folder, the CSV file or an image file listed in it is missing.
    ValueError
        If a column is missing, a row is not one-hot, or an image name leaves the image folder.
    """
    root = _existing_folder(root, "ISIC 2019 root")
    image_folder = root / _ISIC2019_IMAGES
    csv_path = root / _ISIC2019_CSV
    for required in (image_folder, csv_path):
        if not required.exists():
            raise FileNotFoundError(
                f"Missing {str(required)!r} in ISIC 2019 root {str(root)!r}: expected "
                f"'{_ISIC2019_IMAGES}/' and '{_ISIC2019_CSV}' side by side."
            )
    header, rows = _read_csv(csv_path, ("image", *_ISIC2019_DIAGNOSES))
    diagnoses = [name for name in header if name in (*_ISIC2019_DIAGNOSES, _ISIC2019_UNKNOWN)]
    one_hot = np.zeros((len(rows), len(diagnoses)), dtype=np.int64)
    names = []
    for index, (line, row) in enumerate(rows):
        names.append(row["image"])
        for column, diagnosis in enumerate(diagnoses):
            one_hot[index, column] = _binary_value(row[diagnosis], diagnosis, csv_path, line)
        if one_hot[index].sum() != 1:
            raise ValueError(
                f"Line {line} of {str(csv_path)!r} (image {row['image']!r}) marks "
                f"{int(one_hot[index].sum())} diagnoses: expected exactly one value 1 among "
                f"{', '.join(diagnoses)}."
            )
    if _ISIC2019_UNKNOWN in diagnoses and not one_hot[:, diagnoses.index(_ISIC2019_UNKNOWN)].any():
        keep = [column for column, name in enumerate(diagnoses) if name != _ISIC2019_UNKNOWN]
        diagnoses = [diagnoses[column] for column in keep]
        one_hot = one_hot[:, keep]
    class_names = sorted(diagnoses)
    order = np.array([diagnoses.index(name) for name in class_names], dtype=np.int64)
    labels = np.argmax(one_hot[:, order], axis=1).astype(np.int64)
    paths = [
        _path_inside(root, image_folder, name, ".jpg", csv_path, line)
        for name, (line, _) in zip(names, rows, strict=True)
    ]
    _require_files(paths, description=f"listed in {str(csv_path)!r}")
    return paths, labels, class_names


def load_isic2020(root: str | os.PathLike[str], *, image_format: str = "jpeg") -> Dataset:
    """Load the ISIC 2020 (SIIM-ISIC melanoma) training set of Rotemberg et al. 2021.

    Expects the Kaggle download "SIIM-ISIC Melanoma Classification": ``train.csv`` (columns
    ``image_name, patient_id, ..., benign_malignant, target`` with ``target`` 0 or 1), JPEG
    images in ``jpeg/train/<image_name>.jpg`` and DICOM files in ``train/<image_name>.dcm``.
    The ISIC archive download (``ISIC_2020_Training_GroundTruth.csv`` and
    ``train/<image_name>.jpg``) is accepted too.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the CSV file and the image folder.
    image_format : {"jpeg", "dicom"}, default="jpeg"
        ``"jpeg"`` reads ``jpeg/train/*.jpg``, or ``train/*.jpg`` when there is no
        ``jpeg/train`` folder; ``"dicom"`` reads ``train/*.dcm``.

    Returns
    -------
    paths : list of pathlib.Path
        Image files in the order of the CSV rows.
    labels : numpy.ndarray of shape (n_images,)
        int64 ``target``: 0 benign, 1 malignant.
    class_names : list of str
        ``["benign", "malignant"]``.

    Raises
    ------
    FileNotFoundError
        If the CSV file, the image folder or an image file listed in the CSV is missing.
    ValueError
        If ``image_format`` is unknown, a column is missing, a target is not 0 or 1, or an image
        name leaves the image folder.
    """
    if image_format not in ("jpeg", "dicom"):
        raise ValueError(f"image_format must be 'jpeg' or 'dicom', got {image_format!r}.")
    root = _existing_folder(root, "ISIC 2020 root")
    csv_path = next((root / name for name in _ISIC2020_CSVS if (root / name).is_file()), None)
    if csv_path is None:
        raise FileNotFoundError(
            f"Missing {str(root / _ISIC2020_CSVS[0])!r} in ISIC 2020 root {str(root)!r}: "
            f"expected one of {', '.join(_ISIC2020_CSVS)}."
        )
    if image_format == "jpeg":
        folders, suffix = [root / "jpeg" / "train", root / "train"], ".jpg"
    else:
        folders, suffix = [root / "train"], ".dcm"
    image_folder = next((folder for folder in folders if folder.is_dir()), None)
    if image_folder is None:
        raise FileNotFoundError(
            f"Missing image folder in ISIC 2020 root {str(root)!r}: expected "
            f"{' or '.join(repr(str(folder)) for folder in folders)} holding "
            f"'<image_name>{suffix}' files."
        )
    _, rows = _read_csv(csv_path, ("image_name", "target"))
    labels = np.array(
        [_binary_value(row["target"], "target", csv_path, line) for line, row in rows],
        dtype=np.int64,
    )
    paths = [
        _path_inside(root, image_folder, row["image_name"], suffix, csv_path, line)
        for line, row in rows
    ]
    _require_files(paths, description=f"listed in {str(csv_path)!r}")
    return paths, labels, list(_ISIC2020_CLASS_NAMES)


def load_medmnist(
    path: str | os.PathLike[str], *, split: str = "train"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load one split of a MedMNIST ``.npz`` file (Yang et al. 2023).

    Expects a file such as ``bloodmnist.npz`` from the MedMNIST v2 download (Zenodo), with the
    keys ``<split>_images`` (uint8, ``(n, H, W)`` or ``(n, H, W, 3)``) and ``<split>_labels``
    (``(n,)`` or ``(n, 1)``) for ``split`` in train, val and test.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.
    split : {"train", "val", "test"}, default="train"
        Which split to return.

    Returns
    -------
    images : numpy.ndarray
        uint8 images of the split, as stored.
    labels : numpy.ndarray of shape (n_images,)
        int64 class index of each image.
    class_names : list of str
        The file's ``class_names`` entry when it holds one (the official files do not; the
        names live in the ``medmnist`` package's ``INFO``); otherwise ``str(index)`` for every
        index from 0 to the largest label in any split of the file, so that all splits of one
        file share their class names.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If ``split`` is unknown, a key is missing, the labels are multi-label or do not match
        the images, or the images are not uint8.
    """
    if split not in _MEDMNIST_SPLITS:
        raise ValueError(f"split must be one of {', '.join(_MEDMNIST_SPLITS)}, got {split!r}.")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"MedMNIST file {str(path)!r} does not exist: expected a .npz file."
        )
    with np.load(path, allow_pickle=False) as archive:
        contents = {key: archive[key] for key in archive.files}
    for key in (f"{split}_images", f"{split}_labels"):
        if key not in contents:
            raise ValueError(
                f"MedMNIST file {str(path)!r} has no key {key!r}: found "
                f"{', '.join(sorted(contents)) or 'no keys'}."
            )
    images = contents[f"{split}_images"]
    if images.dtype != np.uint8:
        raise ValueError(
            f"Key '{split}_images' of MedMNIST file {str(path)!r} has dtype {images.dtype}: "
            "expected uint8."
        )
    all_labels = {
        name: _medmnist_labels(contents[f"{name}_labels"], f"{name}_labels", path)
        for name in _MEDMNIST_SPLITS
        if f"{name}_labels" in contents
    }
    labels = all_labels[split]
    if len(labels) != len(images):
        raise ValueError(
            f"MedMNIST file {str(path)!r} holds {len(images)} '{split}_images' but "
            f"{len(labels)} '{split}_labels': expected one label per image."
        )
    if _MEDMNIST_CLASS_NAMES_KEY in contents:
        class_names = [str(name) for name in contents[_MEDMNIST_CLASS_NAMES_KEY].ravel()]
    else:
        n_classes = max(int(values.max(initial=-1)) for values in all_labels.values()) + 1
        class_names = [str(index) for index in range(n_classes)]
    if labels.size and labels.max() >= len(class_names):
        raise ValueError(
            f"Key '{split}_labels' of MedMNIST file {str(path)!r} holds label "
            f"{int(labels.max())}: expected labels below {len(class_names)} "
            f"(the length of '{_MEDMNIST_CLASS_NAMES_KEY}')."
        )
    return images, labels, class_names


def load_demo(*, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load the handwritten digits bundled with scikit-learn as a tiny demo set.

    Needs no download: it reads `sklearn.datasets.load_digits` (1797 grayscale 8x8 images of
    the digits 0 to 9).

    Parameters
    ----------
    image_size : int or None, default=None
        Side length to upscale the images to with PIL's bicubic filter; ``None`` keeps 8x8.

    Returns
    -------
    images : numpy.ndarray of shape (1797, image_size, image_size)
        float32 images with values in [0, 1].
    labels : numpy.ndarray of shape (1797,)
        int64 digit of each image.
    class_names : list of str
        ``["0", "1", ..., "9"]``.

    Raises
    ------
    ValueError
        If ``image_size`` is not a positive int.

    Examples
    --------
    >>> images, labels, class_names = load_demo()
    >>> images.shape, class_names[:3]
    ((1797, 8, 8), ['0', '1', '2'])
    """
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}.")
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The digits hold integer grey levels 0 to 16.
    images = (digits.images / 16.0).astype(np.float32)
    if image_size is not None and image_size != images.shape[1]:
        from PIL import Image

        images = np.stack(
            [
                np.asarray(
                    Image.fromarray(image, mode="F").resize(
                        (image_size, image_size), Image.Resampling.BICUBIC
                    )
                )
                for image in images
            ]
        )
        # Bicubic interpolation overshoots at edges.
        images = np.clip(images, 0.0, 1.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    return images, labels, [str(digit) for digit in range(10)]


def _existing_folder(root: str | os.PathLike[str], description: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"The {description} {str(path)!r} {state}: expected a folder.")
    return path


def _normalised_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    suffixes = tuple(
        (extension if extension.startswith(".") else f".{extension}").lower()
        for extension in extensions
    )
    if not suffixes:
        raise ValueError("extensions is empty: expected at least one file suffix such as '.png'.")
    return suffixes


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_FOLDERS


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        child for child in folder.iterdir() if child.is_dir() and not _is_ignored(child.name)
    )


def _has_direct_images(folder: Path, suffixes: tuple[str, ...]) -> bool:
    return any(
        child.is_file() and child.suffix.lower() in suffixes and not _is_ignored(child.name)
        for child in folder.iterdir()
    )


def find_images(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Image files below ``folder`` at any depth, sorted by path.

    Files whose lower-cased suffix is one of ``suffixes`` count; hidden files and folders
    (names starting with ".") and archivers' folders such as ``__MACOSX`` are skipped.
    """
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(name for name in subdirectories if not _is_ignored(name))
        found.extend(
            Path(directory, name)
            for name in files
            if not _is_ignored(name) and Path(name).suffix.lower() in suffixes
        )
    return sorted(found)


def _collect_classes(
    class_folders: dict[str, Path], suffixes: tuple[str, ...], description: str
) -> Dataset:
    class_names = sorted(class_folders)
    images_per_class = [find_images(class_folders[name], suffixes) for name in class_names]
    empty = [
        str(class_folders[name])
        for name, images in zip(class_names, images_per_class, strict=True)
        if not images
    ]
    if empty:
        raise FileNotFoundError(
            f"{len(empty)} class folder(s) in {description!r} hold no image with suffix "
            f"{', '.join(suffixes)}: {', '.join(repr(folder) for folder in empty)}."
        )
    paths = [path for images in images_per_class for path in images]
    labels = np.repeat(
        np.arange(len(class_names), dtype=np.int64), [len(images) for images in images_per_class]
    )
    return paths, labels, class_names


def _read_csv(
    csv_path: Path, required_columns: Iterable[str]
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV file as its header and ``(line number, row)`` pairs, checking the columns."""
    with csv_path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        missing = [column for column in required_columns if column not in header]
        if missing:
            raise ValueError(
                f"CSV file {str(csv_path)!r} lacks column(s) {', '.join(missing)}: found "
                f"{', '.join(header) or 'no header'}."
            )
        rows = []
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                raise ValueError(
                    f"Line {reader.line_num} of {str(csv_path)!r} has a different number of "
                    f"fields than the header: expected {len(header)}."
                )
            rows.append((reader.line_num, {key: value.strip() for key, value in row.items()}))
    if not rows:
        raise ValueError(f"CSV file {str(csv_path)!r} has no rows: expected one row per image.")
    return header, rows


def _binary_value(value: str, column: str, csv_path: Path, line: int) -> int:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number not in (0.0, 1.0):
        raise ValueError(
            f"Line {line} of {str(csv_path)!r} has {column}={value!r}: expected 0 or 1."
        )
    return int(number)


def _path_inside(
    root: Path, folder: Path, name: str, suffix: str, csv_path: Path, line: int
) -> Path:
    if not name:
        raise ValueError(
            f"Line {line} of {str(csv_path)!r} has an empty image name: expected the name of a "
            f"file in {str(folder)!r}."
        )
    relative = Path(f"{name}{suffix}")
    # A ground-truth file must not be able to point the loader at files outside the data root.
    escapes = relative.is_absolute() or bool(relative.drive) or ".." in relative.parts
    candidate = folder / relative
    if not escapes:
        escapes = not candidate.resolve().is_relative_to(root.resolve())
    if escapes:
        raise ValueError(
            f"Line {line} of {str(csv_path)!r} names image {name!r}, which leaves the data root "
            f"{str(root)!r}: expected a plain file name inside {str(folder)!r}."
        )
    return candidate


def _require_files(paths: Sequence[Path], description: str) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        listed = ", ".join(repr(str(path)) for path in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise FileNotFoundError(
            f"{len(missing)} image file(s) {description} are missing: {listed}{more}."
        )


def _medmnist_labels(labels: np.ndarray, key: str, path: Path) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(
            f"Key {key!r} of MedMNIST file {str(path)!r} has shape {labels.shape}: it is a "
            "multi-label task (e.g. ChestMNIST); expected one label per image, shape (n,) or "
            "(n, 1)."
        )
    if labels.ndim not in (1, 2) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Key {key!r} of MedMNIST file {str(path)!r} has shape {labels.shape} and dtype "
            f"{labels.dtype}: expected integer labels of shape (n,) or (n, 1)."
        )
    labels = labels.reshape(-1).astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(
            f"Key {key!r} of MedMNIST file {str(path)!r} holds label {int(labels.min())}: "
            "expected class indices of at least 0."
        )
    return labels
