"""``sparsam push``: upload a saved backbone to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from typing import Any

from ..backbones import push_backbone

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add the ``push`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
    push = commands.add_parser(
        "push",
        help="upload a saved backbone (config.json + model.safetensors) to the Hugging Face Hub",
    )
    push.add_argument("directory", help="written by save_backbone or sparsam convert")
    push.add_argument("repo_id", help="Hub repository, org/name (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    push.add_argument(
        "--token",
        default=None,
        help="Hub token with write access (default: HF_TOKEN or the `hf auth login` token)",
    )
    push.add_argument("--message", default=None, help="commit message")
    push.add_argument(
        "--overwrite-card",
        action="store_true",
        help="replace the repository's README.md even if sparsam did not write it",
    )


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam push`` as parsed into ``args``."""
    options = {"commit_message": args.message} if args.message else {}
    url = push_backbone(
        args.directory,
        args.repo_id,
        private=args.private,
        token=args.token,
        revision=args.revision,
        overwrite_card=args.overwrite_card,
        **options,
    )
    print(f"Pushed {args.directory} to {args.repo_id}: {url}")
