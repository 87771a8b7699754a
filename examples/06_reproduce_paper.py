"""Reproduce the paper's few-shot experiment on a downloaded data set: BM, HyperKvasir or ISIC.

The experiment of Nielsen et al. 2023: embed every labeled image once with a DINO backbone,
train each of the paper's classifiers (``sparsam.model_selection.paper_classifiers``:
PowerTransformer -> PCA -> SVC / logistic regression / kNN) on N labeled images per class over
repeated draws, and score balanced accuracy on the other images. It prints one table per
classifier; with ``--out`` it writes ``few_shot_curve_<classifier>.csv`` and one
``few_shot_curve.png`` with all classifiers. ``sparsam evaluate`` does the same for one
classifier at a time.

What to download (nothing is downloaded by this script; ``--root`` is where you unpacked it):

- ``--dataset bone-marrow``: "An Expert-Annotated Dataset of Bone Marrow Cytology in
  Hematologic Malignancies" (Matek et al. 2021), The Cancer Imaging Archive,
  https://doi.org/10.7937/TCIA.AXH3-T579. ``--root``: the ``BM_cytomorphology_data`` folder
  (one folder per class, ``ABE``, ``ART``, ``BAS``, ``BLA``, ..., JPEG files below) or its
  parent. Paper backbone: ``bm``.
- ``--dataset hyperkvasir``: HyperKvasir (Borgli et al. 2020), ``hyper-kvasir`` from
  https://osf.io/mh9sj/ or https://datasets.simula.no/hyper-kvasir/. ``--root``: the folder
  holding ``labeled-images/<tract>/<category>/<class>/*.jpg``. Paper backbone: ``endo``.
- ``--dataset isic2019``: ISIC 2019 challenge training data,
  https://challenge.isic-archive.com/data/#2019: ``ISIC_2019_Training_Input/*.jpg`` and
  ``ISIC_2019_Training_GroundTruth.csv`` side by side in ``--root``. Paper backbone: ``isic``.
- ``--dataset isic2020``: SIIM-ISIC Melanoma Classification (Rotemberg et al. 2021), Kaggle
  https://www.kaggle.com/c/siim-isic-melanoma-classification/data (or the ISIC archive,
  https://challenge.isic-archive.com/data/#2020): ``train.csv`` with ``jpeg/train/*.jpg``
  (or ``train/*.jpg``) in ``--root``. Paper backbone: ``isic``.

The backbone (``--pretrained``): by default the paper's backbone for the data set. The short
names ``bm``, ``endo`` and ``isic`` are not published on the Hugging Face Hub yet; download
``pretrained_bm.pt``, ``pretrained_endo.pt`` or ``pretrained_isic.pt`` from Zenodo
(https://zenodo.org/records/10391339), convert it with
``sparsam convert pretrained_bm.pt backbones/bm --name bm`` and pass
``--pretrained backbones/bm``. ``--pretrained imagenet`` uses timm's ImageNet XCiT-S12/8, the
paper's starting point, and ``--epochs N`` trains it further with DINO on all images first
(a GPU's job).

Run it from the repository root::

    python examples/06_reproduce_paper.py                 # prints what to download, exits 0
    python examples/06_reproduce_paper.py --dataset bone-marrow --root /data/bm \\
        --pretrained backbones/bm --out results/bm

Without ``--root`` it prints the download instructions and returns 0 at once; a ``--root``
that does not hold the data set returns 1 with the loader's message naming what is missing.
With the data: embedding 170,000 bone marrow images at 256 px takes hours on 2 CPU cores and
minutes on a GPU; the few-shot curves then take minutes.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparsam import DinoFeaturizer, datasets, few_shot_curve
from sparsam.backbones import BackboneNotFoundError
from sparsam.model_selection import paper_classifiers

DOWNLOADS = {
    "bone-marrow": (
        "Bone marrow cytomorphology (Matek et al. 2021): download 'An Expert-Annotated Dataset "
        "of Bone Marrow Cytology in Hematologic Malignancies' from The Cancer Imaging Archive, "
        "https://doi.org/10.7937/TCIA.AXH3-T579, and pass as --root the "
        "BM_cytomorphology_data folder (one folder per class: ABE, ART, BAS, BLA, ...) or its "
        "parent."
    ),
    "hyperkvasir": (
        "HyperKvasir (Borgli et al. 2020): download hyper-kvasir from https://osf.io/mh9sj/ "
        "or https://datasets.simula.no/hyper-kvasir/ and pass as --root the folder holding "
        "labeled-images/<tract>/<category>/<class>/*.jpg."
    ),
    "isic2019": (
        "ISIC 2019: download the training input and ground truth from "
        "https://challenge.isic-archive.com/data/#2019 and pass as --root the folder holding "
        "ISIC_2019_Training_Input/ and ISIC_2019_Training_GroundTruth.csv side by side."
    ),
    "isic2020": (
        "ISIC 2020 (Rotemberg et al. 2021): download 'SIIM-ISIC Melanoma Classification' from "
        "https://www.kaggle.com/c/siim-isic-melanoma-classification/data (or the ISIC archive, "
        "https://challenge.isic-archive.com/data/#2020) and pass as --root the folder holding "
        "train.csv and jpeg/train/*.jpg (or train/*.jpg)."
    ),
}
LOADERS = {
    "bone-marrow": datasets.load_bone_marrow,
    "hyperkvasir": datasets.load_hyperkvasir,
    "isic2019": datasets.load_isic2019,
    "isic2020": datasets.load_isic2020,
}
PAPER_BACKBONES = {
    "bone-marrow": "bm",
    "hyperkvasir": "endo",
    "isic2019": "isic",
    "isic2020": "isic",
}
BACKBONE_NOTE = (
    "Backbone: the paper's (bm, endo, isic) by default. They are not on the Hugging Face Hub "
    "yet: download pretrained_bm.pt, pretrained_endo.pt or pretrained_isic.pt from "
    "https://zenodo.org/records/10391339 and convert it, e.g."
)
CONVERT_COMMAND = "    sparsam convert pretrained_bm.pt backbones/bm --name bm"
BACKBONE_CHOICES = (
    "then pass --pretrained backbones/bm. --pretrained imagenet takes timm's ImageNet "
    "XCiT-S12/8 instead."
)


def download_instructions(dataset: str | None = None) -> str:
    """What to download for ``dataset`` (all four data sets when None), and the backbone."""
    names = [dataset] if dataset is not None else list(DOWNLOADS)
    paragraphs = [DOWNLOADS[name] for name in names] + [BACKBONE_NOTE]
    # no line breaks inside URLs, so they can be copied
    text = "\n\n".join(
        textwrap.fill(paragraph, width=88, break_on_hyphens=False, break_long_words=False)
        for paragraph in paragraphs
    )
    return f"{text}\n{CONVERT_COMMAND}\n{textwrap.fill(BACKBONE_CHOICES, width=88)}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=textwrap.fill(
            "The paper's few-shot experiment on a downloaded data set: a DINO backbone's "
            "features, the paper's classifiers, balanced accuracy per labels per class. "
            "Without --root: print what to download and exit.",
            width=88,
        ),
        epilog=download_instructions(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", choices=sorted(LOADERS), help="which data set")
    parser.add_argument("--root", type=Path, help="where the download was unpacked")
    parser.add_argument(
        "--pretrained",
        default=None,
        help="bm, endo, isic, imagenet, hf-hub:org/name or a directory written by "
        "save_backbone / sparsam convert (default: the paper's backbone of the data set)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="DINO epochs on all images before evaluating (default: 0, the backbone as it is)",
    )
    parser.add_argument(
        "--classifier",
        nargs="+",
        choices=sorted(paper_classifiers()),
        default=list(paper_classifiers()),
        help="the paper's classifiers to evaluate (default: all three)",
    )
    parser.add_argument(
        "--n-per-class",
        type=int,
        nargs="+",
        default=[1, 5, 10, 25, 50, 100, 250],
        help="labeled images per class (default: 1 5 10 25 50 100 250)",
    )
    parser.add_argument("--n-repeats", type=int, default=5, help="random draws per N (default: 5)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="default: the backbone's (256 px)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="default: 64")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    parser.add_argument(
        "--memory", type=Path, default=None, help="embedding cache directory (default: none)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write CSV and PNG files here")
    parser.add_argument("--seed", type=int, default=0, help="random state (default: 0)")
    parser.add_argument("--verbose", type=int, default=1, help="0 hides progress bars")
    args = parser.parse_args(argv)
    if args.root is not None and args.dataset is None:
        parser.error("--root needs --dataset: which data set the folder holds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.root is None:
        print("No data given (--root). To reproduce the paper, download a data set:\n")
        print(download_instructions(args.dataset))
        return 0
    try:
        images, labels, class_names = LOADERS[args.dataset](args.root)
    except (FileNotFoundError, ValueError) as error:
        print(f"Cannot load {args.dataset} from {args.root}: {error}", file=sys.stderr)
        print(f"\n{download_instructions(args.dataset)}", file=sys.stderr)
        return 1
    pretrained = args.pretrained or PAPER_BACKBONES[args.dataset]
    featurizer = DinoFeaturizer(
        pretrained=pretrained,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        memory=args.memory,
        random_state=args.seed,
        verbose=args.verbose,
        **({"image_size": args.image_size} if args.image_size is not None else {}),
    )
    try:
        featurizer.fit(images)  # labels unused: with --epochs > 0, DINO sees every image
    except BackboneNotFoundError as error:
        print(f"Cannot load the backbone {pretrained!r}: {error}", file=sys.stderr)
        return 1

    labeled = np.flatnonzero(labels != -1)
    # The featurizer is frozen: embed each image once, then only the classifiers are fitted.
    features = featurizer.transform([images[index] for index in labeled])
    labels = labels[labeled]
    counts = np.bincount(labels, minlength=len(class_names))
    source = pretrained + (f" + {args.epochs} DINO epochs" if args.epochs else "")
    print(
        f"{args.dataset}: {len(labeled)} labeled images in {len(class_names)} classes "
        f"({counts.min()} to {counts.max()} per class); features: {source}, "
        f"{features.shape[1]} dimensions"
    )
    classifiers = paper_classifiers(random_state=args.seed)
    curves = {}
    for name in args.classifier:
        curves[name] = few_shot_curve(
            classifiers[name],
            features,
            labels,
            n_per_class=args.n_per_class,
            n_repeats=args.n_repeats,
            random_state=args.seed,
        )
        print(f"\n{name}\n{curves[name].table()}")

    if args.out is not None:
        from matplotlib.figure import Figure

        from sparsam.plotting import plot_few_shot_curve

        args.out.mkdir(parents=True, exist_ok=True)
        for name, curve in curves.items():
            curve.to_csv(args.out / f"few_shot_curve_{name}.csv")
        figure = Figure(figsize=(6.4, 4.4), layout="constrained")
        plot_few_shot_curve(
            {f"{source} + {name}": curve for name, curve in curves.items()},
            ax=figure.subplots(),
            title=args.dataset,
        )
        figure.savefig(args.out / "few_shot_curve.png", dpi=100)
        print(f"\nWrote few_shot_curve_*.csv and few_shot_curve.png to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
