"""``sparsam select``: which images to label first, as a labels CSV to fill in.

The first step of the clinician's workflow, before any label exists: embed a folder with a
backbone, choose the images whose labels help most (`sparsam.labeling.select_images_to_label`)
and write them as a labels CSV whose label column is left empty, with a contact sheet of their
thumbnails. Filled in, the same CSV is the ``--labels`` of ``sparsam classify`` and the
``--labeled`` of the next round of ``sparsam select``.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from .images import (
    DATA_HELP,
    SKIPPED_REPORT,
    add_backbone_option,
    add_inference_options,
    add_on_error_option,
    reporting_skipped,
    resolve_images,
)

__all__ = ["add_parser", "run"]

_METHOD_HELP = (
    "typiclust: the most typical image of each of N k-means clusters (the default); probcover: "
    "greedy coverage of the feature space; kmeans: the image closest to each centroid; random: "
    "the baseline"
)


def add_parser(commands: Any) -> None:
    """Add the ``select`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
    from ..labeling import METHODS

    select = commands.add_parser(
        "select",
        help="choose the images to label first and write them as a labels CSV to fill in",
        description=(
            "Embed the images of DATA with the backbone SPEC, choose the N images whose labels "
            "should help most (TypiClust by default) and write them to --out as a labels CSV "
            "(path,label) with the label column empty, in the order chosen, with a contact "
            "sheet of their thumbnails beside it. Fill in the labels and pass the file to "
            "sparsam classify --labels, or to the next round: sparsam select --labeled FILE "
            "chooses N more images, none of those labeled."
        ),
    )
    select.add_argument("data", metavar="DATA", help=DATA_HELP)
    add_backbone_option(select)
    select.add_argument("--n", required=True, type=int, metavar="N", help="images to choose")
    select.add_argument(
        "--out", required=True, metavar="FILE.csv", help="the chosen images, as a labels CSV"
    )
    select.add_argument(
        "--labeled",
        action="append",
        metavar="CSV",
        help="a labels CSV of earlier rounds (path,label): its images with a label are never "
        "chosen again, and the new ones fill the regions they leave uncovered; repeat it for "
        "several files",
    )
    select.add_argument("--method", choices=METHODS, default="typiclust", help=_METHOD_HELP)
    select.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random_state (default: 0)"
    )
    sheets = select.add_mutually_exclusive_group()
    sheets.add_argument(
        "--sheet",
        action="append",
        metavar="FILE.html|FILE.png",
        help="contact sheet of the chosen images: one web page or one image; repeat it for "
        "both (default: --out with .html)",
    )
    sheets.add_argument("--no-sheet", action="store_true", help="write no contact sheet")
    select.add_argument(
        "--memory",
        metavar="DIR",
        help="cache the embeddings there (DinoFeaturizer's memory; default: the folder of "
        "--out), so that the next round with --labeled reads them instead of embedding again",
    )
    add_inference_options(select)
    add_on_error_option(select)
    select.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out whose label column is still empty, and sheets "
        "sparsam wrote",
    )
    select.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam select`` as parsed into ``args``."""
    from .._files import check_writable_directory
    from ..data.cache import CACHE_DIRECTORY
    from ..labeling import select_images_to_label, write_contact_sheet

    out = Path(args.out)
    sheets = _checked_outputs(args, out)
    images = resolve_images(args.data)
    if isinstance(images, np.ndarray):
        raise ValueError(
            f"DATA={args.data!r} is a data set of arrays; the CSV that select writes names "
            "image files: expected a folder of images or a list of image files."
        )
    labeled = _already_labeled(args.labeled or [], images)
    _check_budget(args, len(images), int(labeled.sum()))
    _refuse_existing(out, sheets, args.overwrite)
    check_writable_directory(out.parent, "--out folder")
    memory = Path(args.memory) if args.memory is not None else out.parent
    featurizer = _featurizer(args, images, memory)
    with reporting_skipped(out.parent / SKIPPED_REPORT):
        chosen = select_images_to_label(
            featurizer,
            images,
            args.n,
            method=args.method,
            already_labeled=labeled,
            random_state=args.seed,
        )
    paths = [images[index] for index in chosen]
    # The sheets first: the CSV, the file the user works on, appears once everything is done.
    for sheet in sheets:
        write_contact_sheet(paths, sheet, captions=_captions(images, paths))
    _write_selection(out, paths)
    print(
        f"Images: {len(images)} in {args.data}, {int(labeled.sum())} already labeled"
        + (f" ({', '.join(args.labeled)})" if args.labeled else "")
        + f"; chose {len(paths)} by {args.method} (seed {args.seed})"
    )
    print(
        f"Wrote the {len(paths)} images to label to {out}: fill in its label column, then pass "
        "it to sparsam classify --labels, or to sparsam select --labeled for the next round"
    )
    for sheet in sheets:
        print(f"Wrote the contact sheet to {sheet}")
    print(f"Embeddings cached in {memory / CACHE_DIRECTORY}: the next round reads them from there")


def _checked_outputs(args: argparse.Namespace, out: Path) -> list[Path]:
    """The contact sheets to write; ``--out``, ``--n`` and ``--sheet`` checked before any
    work."""
    from ..labeling.contact_sheet import SHEET_SUFFIXES

    if out.suffix.lower() != ".csv":
        raise ValueError(f"--out {str(out)!r}: expected a file name ending in .csv.")
    if args.n < 1:
        raise ValueError(f"--n {args.n}: expected a positive number of images.")
    if args.no_sheet:
        return []
    sheets = [Path(sheet) for sheet in args.sheet] if args.sheet else [out.with_suffix(".html")]
    for sheet in sheets:
        if sheet.suffix.lower() not in SHEET_SUFFIXES:
            raise ValueError(
                f"--sheet {str(sheet)!r}: expected a file name ending in .html (one web page) "
                "or .png (one image)."
            )
    return list(dict.fromkeys(sheets))


def _already_labeled(label_files: list[str], images: list[Path]) -> np.ndarray:
    """The images that a row with a label in any of ``label_files`` names."""
    from ..data.labels import read_labels

    labeled = np.zeros(len(images), dtype=bool)
    for label_file in label_files:
        labels = read_labels(label_file, images)
        labeled |= np.array([label != -1 for label in labels], dtype=bool)
    return labeled


def _check_budget(args: argparse.Namespace, n_images: int, n_labeled: int) -> None:
    """Refuse, before embedding anything, to choose more images than are left."""
    left = n_images - n_labeled
    if args.n > left:
        labeled = f", {n_labeled} of them already labeled in {', '.join(args.labeled)}"
        raise ValueError(
            f"--n {args.n}: only {left} images are left to choose from ({n_images} in "
            f"{args.data}{labeled if args.labeled else ''}); expected --n at most {left}."
        )


def _refuse_existing(out: Path, sheets: list[Path], overwrite: bool) -> None:
    """Refuse to replace a file, unless ``overwrite``; never one that sparsam did not write:
    a CSV with a label filled in is someone's work, whatever its name."""
    from ..labeling.contact_sheet import is_contact_sheet

    for path in (out, *sheets):
        if not path.exists() and not path.is_symlink():
            continue
        if not overwrite:
            raise ValueError(
                f"{path} exists; pass --overwrite to replace it, or choose another "
                f"{'--out' if path == out else '--sheet'}."
            )
        if path == out and not _unlabeled_selection(out):
            raise ValueError(
                f"{out} exists and is not a list that sparsam select wrote with its label "
                "column still empty (it holds labels, or other columns); --overwrite never "
                "replaces labels: move it away or choose another --out."
            )
        if path != out and not is_contact_sheet(path):
            raise ValueError(
                f"{path} exists and is not a contact sheet that sparsam wrote; move it away "
                "or choose another --sheet (--overwrite replaces only sparsam's sheets)."
            )


def _unlabeled_selection(path: Path) -> bool:
    """Whether ``path`` reads as a CSV that select writes: ``path,label``, no label given."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if not rows or [name.strip().lower() for name in rows[0]] != ["path", "label"]:
        return False
    return all(len(row) <= 2 and not "".join(row[1:]).strip() for row in rows[1:])


def _featurizer(args: argparse.Namespace, images: list[Path], memory: Path) -> Any:
    """The featurizer of ``--backbone`` with the embedding cache in ``memory``."""
    from .embed import embedding_featurizer

    return embedding_featurizer(
        args.backbone,
        images[:1],
        architecture=args.arch,
        image_size=args.image_size,
        settings={
            "batch_size": args.batch_size,
            "device": args.device,
            "precision": args.precision,
            "num_workers": args.num_workers,
            "memory": str(memory),
            "on_error": args.on_error,
        },
        verbose=0 if args.quiet else 1,
    )


def _captions(images: list[Path], chosen: list[Path]) -> list[str]:
    """Each chosen image's path below the folder that holds all of DATA, so that ``a/x.png``
    and ``b/x.png`` are told apart."""
    try:
        folder = Path(os.path.commonpath([path.parent for path in images]))
    except ValueError:  # Windows: images on several drives share no folder
        return [path.name for path in chosen]
    return [str(path.relative_to(folder)) for path in chosen]


def _write_selection(out: Path, chosen: list[Path]) -> None:
    """The labels CSV of the chosen images, label column empty, written atomically.

    Absolute paths: `read_labels` maps them back to the images wherever the file is moved.
    """
    from .._files import atomic_write

    with atomic_write(out, "w") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label"])
        writer.writerows([os.fspath(path), ""] for path in chosen)
