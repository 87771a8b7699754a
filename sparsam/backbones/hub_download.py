"""Files of a Hub repository through the Hugging Face cache; errors that say how to fix them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .hub_format import CONFIG_NAME, WEIGHTS_NAME, BackboneNotFoundError


def download(
    repo_id: str,
    filename: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    hub: Mapping[str, Any],
    short_name: str | None,
) -> Path:
    """The cached path of ``filename`` in ``repo_id``, downloaded unless ``local_files_only``.

    ``hub`` holds ``token`` and ``local_files_only``. Every failure becomes a ValueError (a
    malformed id) or a BackboneNotFoundError that names the cache searched and how to fix it,
    with the paper's conversion for ``short_name``.
    """
    try:
        if hub.get("local_files_only"):
            # Not hf_hub_download(local_files_only=True): it still builds request headers,
            # and huggingface_hub 2.x fetches an agent registry from the Hub to build them.
            cached = try_to_load_from_cache(
                repo_id, filename, cache_dir=cache_dir, revision=revision, repo_type="model"
            )
            if not isinstance(cached, str):
                raise LocalEntryNotFoundError(f"{filename} of {repo_id} is not in the cache.")
            return Path(cached)
        return Path(
            hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, token=hub.get("token")
            )
        )
    except HFValidationError as error:
        raise ValueError(f"{repo_id!r} is not a valid Hub repository id: {error}") from error
    except LocalEntryNotFoundError as error:
        problem = (
            f"{filename} of Hugging Face Hub repository {repo_id!r} (revision "
            f"{revision or 'main'!r}) is not in the local cache, and the Hub "
            + (
                "may not be contacted (local_files_only=True)."
                if hub.get("local_files_only")
                else "may not be contacted (HF_HUB_OFFLINE=1)."
                if constants.HF_HUB_OFFLINE
                else "could not be reached."
            )
        )
        raise _not_found(problem, repo_id, revision, cache_dir, short_name) from error
    except RevisionNotFoundError as error:
        problem = (
            f"Revision {revision!r} does not exist in Hugging Face Hub repository {repo_id!r}."
        )
        raise _not_found(problem, repo_id, revision, cache_dir, short_name) from error
    except RepositoryNotFoundError as error:
        problem = (
            f"Hugging Face Hub repository {repo_id!r} does not exist, or it is private or "
            "gated and you are not logged in (hf auth login, or set HF_TOKEN)."
        )
        raise _not_found(problem, repo_id, revision, cache_dir, short_name) from error
    except (EntryNotFoundError, HfHubHTTPError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        problem = (
            f"Could not get {filename} of Hugging Face Hub repository {repo_id!r} (revision "
            f"{revision or 'main'!r}): {type(error).__name__}: {first_line}"
        )
        raise _not_found(problem, repo_id, revision, cache_dir, short_name) from error


def _not_found(
    problem: str,
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    short_name: str | None,
) -> BackboneNotFoundError:
    searched = Path(cache_dir).expanduser() if cache_dir is not None else constants.HF_HUB_CACHE
    revision_option = f" --revision {revision}" if revision else ""
    message = (
        f"{problem} Cache searched: {searched}. To fix: connect to the internet once so that "
        "the files are downloaded into the cache; or, on a machine with access, run "
        f"`hf download {repo_id} {CONFIG_NAME} {WEIGHTS_NAME}{revision_option}` "
        "(`huggingface-cli download` in older huggingface_hub) and point HF_HOME (or "
        "HF_HUB_CACHE, or cache_dir=) at that cache; or pass a local directory that holds "
        f"{CONFIG_NAME} and {WEIGHTS_NAME}."
    )
    if short_name is not None:
        message += (
            f" Note: {short_name!r} names the placeholder repository {repo_id!r}, which is not "
            "published yet; convert the paper's weights (Zenodo record 10391339) with "
            f"`sparsam convert pretrained_{short_name}.pt DIR --name {short_name}` and pass DIR."
        )
    return BackboneNotFoundError(message)
