"""``sparsam convert``: one of the paper's original ``.pt`` checkpoints to timm's Hub format."""

from __future__ import annotations

import argparse
from typing import Any

from ..backbones import PRETRAINED_BACKBONES, convert_checkpoint

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add the ``convert`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
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


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam convert`` as parsed into ``args``."""
    path = convert_checkpoint(
        args.checkpoint,
        args.outdir,
        name=args.name,
        architecture=args.architecture,
        image_size=args.image_size,
    )
    print(f"Converted {args.checkpoint} to {path}")
