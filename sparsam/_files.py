"""Writing files without losing data: atomic replacement, the user's umask, early checks."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "check_writable_directory", "replace_files"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` when the block ends.

    An exception, a crash or a kill inside the block leaves ``path`` as it was (the old file
    or none) and removes the temporary file where it can. The new file gets the permission
    bits of the current umask, like a file created with ``open``.

    Parameters
    ----------
    path : path-like
        The file to write; its directory must exist.
    mode : {"wb", "w"}, default="wb"
        Binary, or UTF-8 text without newline translation (as the csv module expects).

    Yields
    ------
    file : file object
        The open temporary file.
    """
    path = Path(path)
    descriptor, temporary = _create_beside(path)
    try:
        text_options = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(descriptor, mode, **text_options) as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _create_beside(path: Path) -> tuple[int, Path]:
    """Create a new, empty hidden file next to ``path``; return its descriptor and path.

    Created with mode 0o666 so that the kernel applies the umask (and any default ACL) as for
    ``open``. ``tempfile.mkstemp`` would give 0600, and reading the umask means setting it,
    which races with other threads creating files.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def replace_files(
    directory: Path, staging: Path, names: Sequence[str], remove: Iterable[str] = ()
) -> None:
    """Rename ``staging / name`` onto ``directory / name`` for each name; undo all on failure.

    Each file is replaced atomically, in the order of ``names``; then the files ``remove``
    are deleted. Every file replaced or deleted is first kept in ``staging`` (as a hard
    link, or a copy where the file system has none), so that an exception part-way (a rename
    refused, KeyboardInterrupt) puts the previous files back. Only a crash between two renames
    can leave some files new and others old: rename last the file that readers open first.

    Parameters
    ----------
    directory : Path
        Where the files go.
    staging : Path
        A directory on the same file system that holds the complete new files.
    names : sequence of str
        File names, in the order they are renamed.
    remove : iterable of str, default=()
        Names of files in ``directory`` to delete together with the replacement.
    """
    backups: dict[str, Path | None] = {}
    try:
        for name in names:
            backups[name] = _keep_previous(directory / name, staging / f"{name}.previous")
            os.replace(staging / name, directory / name)
        for name in remove:
            if (directory / name).exists():
                backups[name] = staging / f"{name}.previous"
                os.replace(directory / name, backups[name])
    except BaseException:
        for name, backup in reversed(backups.items()):
            with contextlib.suppress(OSError):
                if backup is None:
                    (directory / name).unlink(missing_ok=True)
                else:
                    os.replace(backup, directory / name)
        raise


def _keep_previous(target: Path, backup: Path) -> Path | None:
    if not target.exists():
        return None
    try:
        os.link(target, backup)
    except OSError:
        shutil.copy2(target, backup)
    return backup


def check_writable_directory(path: str | os.PathLike, parameter: str) -> Path:
    """Create ``path`` if needed and prove that a file can be written there.

    Called before long work (training, embedding) so that a read-only or misspelt location
    fails at once rather than after hours.

    Parameters
    ----------
    path : path-like
        The directory.
    parameter : str
        The name the user gave it (e.g. ``"checkpoint_dir"``), used in the error message.

    Returns
    -------
    path : Path

    Raises
    ------
    ValueError
        When the directory cannot be created or written to, naming it and the reason.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=path, prefix=".sparsam-write-test.")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        # A file where a directory belongs: name it, it may be a parent the user never typed.
        files = [p for p in (*reversed(path.parents), path) if p.is_file()]
        if files:
            reason = f"{files[0]} is a file"
        raise ValueError(
            f"{parameter}={str(path)!r} is not a writable directory ({reason}); "
            "choose a directory you can write to."
        ) from error
    return path
