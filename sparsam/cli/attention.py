"""``sparsam attention``: DINO's self-attention maps of the class token, one PNG per image."""

from __future__ import annotations

import argparse
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .embed import embedding_featurizer
from .images import DATA_HELP, add_backbone_option, add_inference_options, resolve_images

__all__ = ["SOFTWARE", "add_parser", "output_names", "run", "run_attention"]

# The PNG text chunk "Software" of every map this command writes: a file that carries it may
# be replaced by a later run; any other file in the way is refused.
SOFTWARE = "sparsam attention"


def add_parser(commands: Any) -> None:
    """Add the ``attention`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
    attention = commands.add_parser(
        "attention",
        help="DINO's attention maps of the class token, one PNG per image",
        description=(
            "Draw, for every image of DATA, the attention of the class token to the image's "
            "patches in the backbone's last block (XCiT: its last class-attention block), one "
            "map per head, over the image as the backbone sees it (DINO's Figure 1), into "
            "DIR/<name>_attention.png. Files of an earlier run are replaced; any other file in "
            "the way is refused."
        ),
    )
    attention.add_argument("data", metavar="DATA", help=DATA_HELP)
    add_backbone_option(attention)
    attention.add_argument("--out", required=True, metavar="DIR", help="folder of the PNGs")
    attention.add_argument(
        "--heads",
        choices=["all", "mean"],
        default="all",
        help="one map per head, or the heads' mean (default: all)",
    )
    attention.add_argument(
        "--threshold",
        type=float,
        metavar="F",
        help="show only the largest weights holding this share of each map's mass, e.g. 0.6 "
        "as in DINO's figures (default: the whole map)",
    )
    attention.add_argument(
        "--no-overlay", action="store_true", help="draw the maps alone, not over the image"
    )
    attention.add_argument("--root", default=None, help="the download a data set name reads")
    add_inference_options(attention, batches=False)
    attention.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam attention`` as parsed into ``args``."""
    written = run_attention(
        args.data,
        args.backbone,
        args.out,
        heads=args.heads,
        threshold=args.threshold,
        overlay=not args.no_overlay,
        root=args.root,
        architecture=args.arch,
        image_size=args.image_size,
        device=args.device,
        precision=args.precision,
        verbose=0 if args.quiet else 1,
    )
    print(f"Wrote {len(written)} attention map(s) to {args.out}")


def run_attention(
    data: str | os.PathLike[str],
    backbone: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    heads: str = "all",
    threshold: float | None = None,
    overlay: bool = True,
    root: str | os.PathLike[str] | None = None,
    architecture: str | None = None,
    image_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    verbose: int = 1,
) -> list[Path]:
    """Write `sparsam.plotting.plot_attention` of every image of ``data`` to its own PNG.

    Every file is written atomically and carries ``Software: sparsam attention`` in its PNG
    text; before anything is drawn, a file in the way without it is refused, so files this
    command did not write are never replaced.

    Parameters
    ----------
    data, root : str or path-like
        The images, as `resolve_images` reads them.
    backbone, architecture, image_size, device, precision :
        As ``sparsam embed``'s (`embedding_featurizer`).
    out : str or path-like
        The folder of the PNGs (created if missing), laid out as the input folders
        (`output_names`).
    heads, threshold, overlay :
        As `sparsam.plotting.plot_attention`'s.
    verbose : int, default=1
        A progress bar over the images.

    Returns
    -------
    list of Path
        The PNGs written, in the order of the images.
    """
    from tqdm.auto import tqdm

    from .._files import check_writable_directory

    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(
            f"--threshold {threshold}: expected a share of each map's mass in (0, 1], e.g. 0.6."
        )
    Figure = _figure_class()
    images = resolve_images(data, root)
    out = Path(out)
    targets = [out / name for name in output_names(images, data)]
    _refuse_foreign_files(targets)
    check_writable_directory(out, "--out folder")
    featurizer = embedding_featurizer(
        backbone,
        images[:1],
        architecture=architecture,
        image_size=image_size,
        settings={"device": device, "precision": precision},
        verbose=0,
    )
    from ..attention import ClsAttention
    from ..plotting import plot_attention

    columns = 1 + (1 if heads == "mean" else ClsAttention(featurizer.backbone_).heads)
    for index, target in enumerate(tqdm(targets, desc="attention", disable=not verbose)):
        # A figure of its own, outside pyplot: no window, no global state, freed with it.
        figure = Figure(figsize=(1.8 * columns, 1.8), layout="constrained")
        plot_attention(
            featurizer,
            images[index : index + 1],
            heads=heads,
            threshold=threshold,
            overlay=overlay,
            axes=figure.subplots(1, columns, squeeze=False),
        )
        _save_png(figure, target)
    return targets


def output_names(images: list[Path] | np.ndarray, data: str | os.PathLike[str]) -> list[Path]:
    """Each image's PNG, relative to ``--out``: its path below the inputs' common folder.

    ``a/b.png`` of a folder becomes ``a/b_attention.png``; images that would share a name
    (``b.png`` and ``b.jpg``) keep their suffix in it (``b_png_attention.png``). Images of an
    array data set are named by their index (``demo_00042_attention.png``).
    """
    if isinstance(images, np.ndarray):
        digits = len(str(len(images) - 1))
        stem = Path(str(data)).name
        return [Path(f"{stem}_{index:0{digits}d}_attention.png") for index in range(len(images))]
    folder = Path(os.path.commonpath([path.parent for path in images]))
    relative = [path.relative_to(folder) for path in images]
    names = [path.with_name(f"{path.stem}_attention.png") for path in relative]
    shared = {name for name, count in Counter(names).items() if count > 1}
    return [
        path.with_name(f"{path.stem}_{path.suffix.lstrip('.')}_attention.png")
        if name in shared
        else name
        for path, name in zip(relative, names, strict=True)
    ]


def _refuse_foreign_files(targets: list[Path]) -> None:
    """Refuse, before anything is written, to replace a file this command did not write."""
    from PIL import Image, UnidentifiedImageError

    for target in targets:
        if not target.exists() and not target.is_symlink():
            continue
        software = None
        if target.is_file() and not target.is_symlink():
            try:
                with Image.open(target) as image:
                    software = getattr(image, "text", {}).get("Software")
            except (OSError, UnidentifiedImageError):
                software = None
        if software != SOFTWARE:
            raise ValueError(
                f"{target} exists and was not written by sparsam attention; move it away or "
                "choose another --out (sparsam replaces only the maps it wrote)."
            )


def _save_png(figure: Any, target: Path) -> None:
    """The figure as a PNG marked as this command's, written atomically."""
    from .._files import atomic_write

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": SOFTWARE})
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as file:
        file.write(buffer.getvalue())


def _figure_class() -> Any:
    """matplotlib's Figure, or an error that says how to install matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ValueError(
            "sparsam attention draws with matplotlib, which is not installed: "
            'pip install "sparsam[plot]"'
        ) from error
    return Figure
