"""``sparsam demo``: DINO on the bundled digits against two baselines, as a few-shot table."""

from __future__ import annotations

import argparse
from typing import Any

from ..experiments import run_demo

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add the ``demo`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
    demo = commands.add_parser(
        "demo",
        help="pretrain a small ViT with DINO on the bundled digits and print a few-shot table",
    )
    demo.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    demo.add_argument("--seed", type=int, default=0, help="random_state of the featurizer")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam demo`` as parsed into ``args``."""
    run_demo(epochs=args.epochs, random_state=args.seed, verbose=0 if args.quiet else 1)
