"""timm's Hub format as sparsam reads and writes it.

A backbone is a directory (or a Hub repository) with ``config.json``, ``model.safetensors`` and
a ``README.md`` model card. This module names the files, the markers by which sparsam knows the
files it wrote, and the error raised when a backbone cannot be found or read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"
# Markers of the files sparsam writes: saving again replaces a file only when it carries its
# marker, so that a directory can hold other files (a thesis, notes, a model of another tool)
# and sparsam never overwrites what it did not write. config.json and model.safetensors of one
# save share its save id, which tells a mix of two saves (see save_backbone) apart.
CONFIG_MARKER = "sparsam"
WEIGHTS_MARKER = "sparsam_save_id"
CARD_MARKER = "<!-- sparsam-model-card"
CARD_MARKER_TEXT = (
    "written by sparsam, which replaces this file when it saves a backbone here again; "
    "delete this line to keep your edits (sparsam then refuses to overwrite the file)"
)


class BackboneNotFoundError(OSError):
    """Pretrained backbone weights could not be found or may not be read.

    Raised by ``load_backbone`` when a Hub repository, revision or file is missing, the Hub is
    unreachable (or ``HF_HUB_OFFLINE=1``) and the cache lacks the files, a local directory
    lacks ``config.json`` or ``model.safetensors``, or only pickle weights exist. The message
    names the repository or directory, the revision, the cache searched and how to fix it.
    """


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` at ``path``; a ValueError when it is unreadable or names no architecture."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable JSON config: {error}") from error
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise ValueError(f"{path} has no 'architecture'; expected timm's Hub config format.")
    return config
