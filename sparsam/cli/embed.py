"""``sparsam embed``: embeddings of many images, chunk by chunk, into a ``.npy`` file."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
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

__all__ = ["add_parser", "embedding_featurizer", "run", "run_embed"]


def add_parser(commands: Any) -> None:
    """Add the ``embed`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
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
    embed.add_argument("data", metavar="DATA", help=DATA_HELP)
    add_backbone_option(embed)
    embed.add_argument("--out", required=True, metavar="FILE.npy", help="the embeddings file")
    embed.add_argument("--root", default=None, help="the download a data set name reads")
    add_inference_options(embed)
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
    add_on_error_option(embed)
    embed.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam embed`` as parsed into ``args``."""
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
        on_error=args.on_error,
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
    on_error: str = "raise",
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
    on_error : {"raise", "skip"}, default="raise"
        ``"skip"`` gives an image that cannot be decoded a row of NaN and lists it in
        ``skipped.csv`` beside ``out`` (index, path, reason); ``"raise"`` stops at it.

    Returns
    -------
    out : Path
    """
    import torch.distributed

    from .._embedding_file import write_embeddings
    from .._files import check_writable_directory
    from ..training import distributed

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
        featurizer = embedding_featurizer(
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
                "on_error": on_error,
            },
            verbose=verbose,
        )
        # transform numbers the images of each chunk from 0; the paths name them in DATA.
        rows = {name: index for index, name in enumerate(names)}
        with reporting_skipped(
            out.parent / SKIPPED_REPORT,
            lambda image: image._replace(index=rows.get(image.path, image.index)),
        ):
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


def embedding_featurizer(
    backbone: str | os.PathLike[str],
    first_image: Any,
    *,
    architecture: str | None,
    image_size: int | None,
    settings: dict[str, Any],
    verbose: int,
) -> Any:
    """A fitted featurizer from a joblib file, or one that loads ``backbone`` as pretrained."""
    from .._joblib_file import load_fitted
    from ..featurizer import DinoFeaturizer

    settings = {name: value for name, value in settings.items() if value is not None}
    settings["verbose"] = verbose
    if Path(backbone).is_file():
        if image_size is not None or architecture is not None:
            raise ValueError(
                f"--backbone {backbone} is a saved featurizer, which embeds at the image size "
                "and with the architecture it was fitted with: drop --image-size and --arch."
            )
        featurizer = load_fitted(backbone, DinoFeaturizer, "backbone_")
        return featurizer.set_params(**settings)
    if architecture is not None:
        settings["backbone"] = architecture
    if image_size is not None:
        settings["image_size"] = image_size
    # epochs=0: fit only loads the weights; the one image passes fit's input checks.
    return DinoFeaturizer(pretrained=str(backbone), epochs=0, **settings).fit(first_image)


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
