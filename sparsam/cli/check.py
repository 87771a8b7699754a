"""``sparsam check``: find the files of an archive that training would trip over, before it."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .images import DATA_HELP, resolve_images

__all__ = ["add_parser", "run", "run_check"]


def add_parser(commands: Any) -> None:
    """Add the ``check`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
    check = commands.add_parser(
        "check",
        help="find unreadable, empty, tiny, huge and duplicate image files",
        description=(
            "Decode every image of DATA once, as training would, and report the files that "
            "cannot be decoded, are empty (0 bytes), tiny (--min-size), larger than "
            "--max-pixels (decompression bombs) or byte-for-byte duplicates of an earlier "
            "file: one line per problem, then a summary. Exits with status 1 if any file has "
            "a problem, 0 if none. Train past the bad files with --on-error skip."
        ),
    )
    check.add_argument("data", metavar="DATA", help=DATA_HELP)
    check.add_argument("--root", default=None, help="the download a data set name reads")
    check.add_argument(
        "--min-size",
        type=int,
        default=8,
        metavar="N",
        help="report images narrower or lower than N pixels (default: 8)",
    )
    check.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="report (and do not decode) images of more than N pixels (default: "
        "PIL.Image.MAX_IMAGE_PIXELS, about 89 million)",
    )
    check.add_argument(
        "--num-workers", type=int, default=0, metavar="N", help="processes that decode"
    )
    check.add_argument(
        "--report", metavar="FILE.csv", help="also write the problems as CSV (path,problem,detail)"
    )
    check.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``sparsam check`` as parsed into ``args``; the exit status."""
    problems = run_check(
        args.data,
        root=args.root,
        min_size=args.min_size,
        max_pixels=args.max_pixels,
        num_workers=args.num_workers,
        report=args.report,
        verbose=0 if args.quiet else 1,
    )
    return 1 if problems else 0


def run_check(
    data: str,
    *,
    root: str | None = None,
    min_size: int = 8,
    max_pixels: int | None = None,
    num_workers: int = 0,
    report: str | None = None,
    verbose: int = 1,
) -> list[Any]:
    """Check the files of ``data``; print one line per problem and a summary.

    Returns the list of `sparsam.data.screening.FileProblem`; with ``report``, writes it as
    CSV (``path,problem,detail``), atomically, even when it is empty.
    """
    from tqdm.auto import tqdm

    from ..data.screening import PROBLEM_KINDS, screen_files

    for name, value, minimum in (
        ("--min-size", min_size, 1),
        ("--max-pixels", max_pixels, 1),
        ("--num-workers", num_workers, 0),
    ):
        if value is not None and value < minimum:
            raise ValueError(f"{name} {value}: expected an integer >= {minimum}.")
    images = resolve_images(data, root)
    if not isinstance(images, list):
        print(f"{data} is a data set of arrays, not files: there is nothing to check.")
        return []
    with tqdm(total=len(images), desc="checking", unit="file", disable=not verbose) as bar:
        problems = screen_files(
            images,
            min_size=min_size,
            max_pixels=max_pixels,
            num_workers=num_workers,
            progress=bar.update,
        )
    for problem in problems:
        print(f"{problem.path}: {problem.kind}: {problem.detail}")
    counts = Counter(problem.kind for problem in problems)
    summary = ", ".join(f"{counts[kind]} {kind}" for kind in PROBLEM_KINDS if counts[kind])
    print(
        f"Checked {len(images)} files in {data}: "
        + (f"{len(problems)} with a problem ({summary})." if problems else "no problem found.")
    )
    if report is not None:
        _write_report(Path(report), problems)
        print(f"Wrote the report to {report}", file=sys.stderr)
    return problems


def _write_report(path: Path, problems: list[Any]) -> None:
    import csv

    from .._files import atomic_write

    with atomic_write(path, "w") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["path", "problem", "detail"])
        for problem in problems:
            writer.writerow([problem.path, problem.kind, problem.detail])
