"""Uploading a saved backbone to the Hugging Face Hub."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.utils import HfHubHTTPError

from .hub_format import CARD_MARKER, CONFIG_NAME, README_NAME, WEIGHTS_NAME, read_config

logger = logging.getLogger("sparsam")


def push_backbone(
    directory: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload backbone with sparsam",
    overwrite_card: bool = False,
) -> str:
    """Upload a saved backbone to the Hugging Face Hub.

    Creates the repository if needed (and the branch ``revision``), then uploads
    ``config.json``, ``model.safetensors`` and ``README.md`` in one commit; other files in
    the directory (e.g. pickle weights) are not uploaded.

    A ``README.md`` already in the repository is kept unless sparsam wrote it (its
    ``<!-- sparsam-model-card … -->`` line, see ``save_backbone``) or ``overwrite_card=True``:
    a card edited on the Hub survives a push of new weights, as a user's README survives
    ``save_backbone``. A card of sparsam's describes the previous weights, so it is replaced,
    or deleted when the directory has no card.

    Parameters
    ----------
    directory : str or path-like
        Written by ``save_backbone`` or ``convert_checkpoint``.
    repo_id : str
        ``"org/name"``.
    private : bool, default=False
        Create the repository private.
    token : str, optional
        Hub token with write access; by default ``HF_TOKEN`` or the token stored by
        ``hf auth login``.
    revision : str, optional
        Branch to commit to, created from the default branch if missing.
    commit_message : str
        Message of the commit.
    overwrite_card : bool, default=False
        Replace the repository's ``README.md`` with the directory's even when sparsam did not
        write it.

    Returns
    -------
    commit_url : str
        URL of the new commit.

    Raises
    ------
    ValueError
        If ``directory`` lacks ``config.json`` or ``model.safetensors``.
    ConnectionError
        If the Hub cannot be reached (no network, a wrong ``HF_ENDPOINT``, a timeout, or
        ``HF_HUB_OFFLINE=1``); the message names the directory, the repository and the
        endpoint.
    OSError
        If the Hub refuses the upload (e.g. a token without write access); the message gives
        the Hub's reason.
    """
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a directory; expected the output of save_backbone.")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (path / name).is_file()]
    if missing:
        raise ValueError(
            f"{path} cannot be pushed: it lacks {' and '.join(missing)}. Expected a backbone "
            "in timm's Hub format, written by save_backbone or sparsam convert."
        )
    read_config(path / CONFIG_NAME)
    try:
        commit_url = _upload(
            HfApi(token=token), path, repo_id, private, revision, commit_message, overwrite_card
        )
    except _connection_errors() as error:
        raise ConnectionError(
            f"Could not push {path} to Hugging Face Hub repository {repo_id!r}: could not "
            f"reach the Hugging Face Hub ({constants.ENDPOINT}; {_first_line(error)}): check "
            "the network, HF_ENDPOINT and the token."
        ) from error
    except HfHubHTTPError as error:
        raise OSError(
            f"Could not push {path} to Hugging Face Hub repository {repo_id!r}: the Hub "
            f"refused ({_first_line(error)}); check that the token (--token, HF_TOKEN or "
            "`hf auth login`) may write to that repository."
        ) from error
    return commit_url


def _upload(
    api: HfApi,
    path: Path,
    repo_id: str,
    private: bool,
    revision: str | None,
    commit_message: str,
    overwrite_card: bool,
) -> str:
    """Create the repository (and branch) if needed, commit the files; the commit's URL."""
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    files = [CONFIG_NAME, WEIGHTS_NAME]
    delete = []
    has_card = (path / README_NAME).is_file()
    hub_card = _hub_card_author(api, repo_id, revision)
    if has_card and (hub_card != "user" or overwrite_card):
        files.append(README_NAME)
    elif has_card:
        logger.warning(
            "Kept the %s of Hugging Face Hub repository %r: sparsam did not write it. Pass "
            "overwrite_card=True (sparsam push --overwrite-card) to replace it.",
            README_NAME,
            repo_id,
        )
    elif hub_card == "sparsam":
        delete.append(README_NAME)
    commit = api.upload_folder(
        folder_path=str(path),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=commit_message,
        allow_patterns=files,
        **({"delete_patterns": delete} if delete else {}),
    )
    return str(getattr(commit, "commit_url", commit))


def _connection_errors() -> tuple[type[BaseException], ...]:
    """The exceptions by which huggingface_hub's HTTP client says the Hub was not reached.

    huggingface_hub < 1.0 talks through requests, later versions through httpx (httpx2 in
    2.x); neither wraps a refused connection, a DNS failure or a timeout in its own error.
    Only the modules already imported can have raised, so nothing is imported here.
    """
    # Builtins; huggingface_hub's OfflineModeIsEnabled (HF_HUB_OFFLINE=1) is a ConnectionError.
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    clients = {"requests": ("ConnectionError", "Timeout"), "httpx": ("TransportError",)}
    clients["httpx2"] = clients["httpx"]
    for module_name, names in clients.items():
        module = sys.modules.get(module_name)
        for name in names:
            error = getattr(module, name, None)
            if isinstance(error, type) and issubclass(error, BaseException):
                errors.append(error)
    return tuple(errors)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _hub_card_author(api: HfApi, repo_id: str, revision: str | None) -> str | None:
    """Who wrote the repository's README.md: ``"sparsam"``, ``"user"``, or None if absent."""
    if not api.file_exists(repo_id, README_NAME, repo_type="model", revision=revision):
        return None
    card = Path(api.hf_hub_download(repo_id, README_NAME, repo_type="model", revision=revision))
    return "sparsam" if CARD_MARKER in card.read_text(encoding="utf-8") else "user"
