"""The ``sparsam`` command line.

``sparsam demo`` shows the method on bundled digits; ``pretrain``, ``embed`` and ``evaluate``
run it on your images; ``select`` chooses the images to label first, ``classify`` predicts
the unlabeled images from a labels CSV, ``attention`` draws where the class token looks;
``convert`` and ``push`` publish backbones in timm's Hub format.

Each command is a module of this package with an ``add_parser`` and a ``run`` function; ``main``
assembles the parser from them. The experiments behind ``demo`` and ``evaluate`` live in
`sparsam.experiments`, which the benchmarks import too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..version import __version__
from . import attention, check, classify, convert, demo, embed, evaluate, pretrain, push, select

__all__ = ["COMMANDS", "build_parser", "main"]

# The commands in the order `sparsam --help` lists them: a run's order, then publishing.
COMMANDS = {
    "demo": demo,
    "check": check,
    "pretrain": pretrain,
    "embed": embed,
    "select": select,
    "evaluate": evaluate,
    "classify": classify,
    "attention": attention,
    "convert": convert,
    "push": push,
}

_DESCRIPTION = """\
Self-supervised DINO pretraining of timm vision transformers on unlabeled (medical) images,
and few-shot classification on their frozen embeddings (Nielsen et al. 2023).

example:
  sparsam demo
  sparsam check images/
  sparsam pretrain images/ --out my-backbone --config run.toml
  sparsam embed images/ --backbone my-backbone --out embeddings.npy
  sparsam select images/ --backbone my-backbone --n 200 --out to_label.csv
  sparsam evaluate images/ --labels labels.csv --pretrained my-backbone
  sparsam classify images/ --labels labels.csv --backbone my-backbone --out predictions.csv
  sparsam attention images/ --backbone my-backbone --out attention-maps/

Run `sparsam COMMAND --help` for a command's options.
"""

_VERBOSE_HELP = "log progress at INFO level, e.g. one 'DINO epoch ...' line per epoch"


def build_parser() -> argparse.ArgumentParser:
    """The ``sparsam`` parser, with one sub-parser per module of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="sparsam",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sparsam {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    commands = parser.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND"
    )
    for name, command in COMMANDS.items():
        command.add_parser(commands)
        # Also after the command (`sparsam pretrain DATA --out X -v`). SUPPRESS: without it
        # there, the sub-parser's default would overwrite a -v given before the command.
        commands.choices[name].add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsam`` console script."""
    args = build_parser().parse_args(argv)
    # What params.json records as the command line.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Only sparsam's own logger: INFO of other libraries (httpx, torch) stays hidden. Without
    # -v the logger keeps the level it has (the root's WARNING unless the caller set one),
    # and -v lasts for this command only.
    logger = logging.getLogger("sparsam")
    previous_level = logger.level
    if args.verbose:
        logger.setLevel(logging.INFO)
    try:
        # Bad input (ValueError, OSError) becomes exit code 1.
        # A command may return its exit status (check: 1 when it found problems).
        status = COMMANDS[args.command].run(args)
    except (ValueError, OSError) as error:
        print(f"sparsam {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Training has logged what it saved and how to resume; no traceback on top of it.
        print(f"sparsam {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        logger.setLevel(previous_level)
    return status or 0
