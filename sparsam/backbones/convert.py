"""Converting the paper's original checkpoints to timm's Hub format."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._torch_file import UnreadableTorchFileError, load_weights_only
from .create import create_backbone, imagenet_hub_id
from .load import load_state_dict_strictly
from .model_card import model_card_text
from .registry import (
    PAPER_CITATION,
    PAPER_CODE_URL,
    PAPER_MEAN,
    PAPER_STD,
    PAPER_WEIGHTS_URL,
    PRETRAINED_BACKBONES,
)
from .save import rebuild_arguments, write_model_directory


def convert_checkpoint(
    checkpoint: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    name: str | None = None,
    architecture: str = "xcit_small_12_p8_224",
    image_size: int = 256,
    model_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Convert one of the paper's original checkpoints to timm's Hub format.

    The published weights (``pretrained_bm.pt``, ``pretrained_endo.pt``,
    ``pretrained_isic.pt``; Zenodo record 10391339) are torch state dicts of the DINO model:
    backbone keys prefixed ``backbone.`` and head keys (``head.mlp…``). The file is read with
    ``torch.load(weights_only=True)``; the ``backbone.`` entries (also inside a nested dict
    such as ``{"teacher": {...}}`` and behind ``module.`` prefixes) are loaded strictly into
    ``timm.create_model(architecture, num_classes=0, **model_kwargs)`` and saved with
    ``save_backbone``'s format: normalisation mean = std = 0.5 at ``image_size`` (the paper
    resized images to 256 px and scaled them to [-1, 1]) and a model card that credits the
    authors, under CC BY 4.0.

    Parameters
    ----------
    checkpoint : str or path-like
        The ``.pt`` file. Only convert files you trust: ``weights_only=True`` restricts what
        unpickling may build, but the file is still a pickle.
    directory : str or path-like
        Output directory. Only sparsam's files in it are replaced, other files are left
        alone, and a foreign ``config.json``, ``model.safetensors`` or ``README.md`` is
        refused with ``FileExistsError`` (see ``save_backbone``).
    name : {"bm", "endo", "isic"}, optional
        Which of the paper's backbones it is; names the training data in the model card and
        the repository in its examples.
    architecture : str, default="xcit_small_12_p8_224"
        timm model name; the paper used XCiT-S12/8.
    image_size : int, default=256
        Training image size, recorded as ``img_size`` and ``input_size``.
    model_kwargs : dict, optional
        Further ``timm.create_model`` arguments (for small test models).

    Returns
    -------
    directory : Path

    Raises
    ------
    ValueError
        If the file is not a torch state dict (empty, not written by ``torch.save``,
        truncated, or holding objects other than tensors), holds no ``backbone.`` keys, or
        its backbone keys or shapes do not fit ``architecture``; the message names the file
        and what is wrong with it.
    FileExistsError
        If ``directory`` holds a ``config.json``, ``model.safetensors`` or ``README.md`` that
        sparsam did not write.
    """
    path = Path(checkpoint).expanduser()
    entry = None
    if name is not None:
        if name not in PRETRAINED_BACKBONES:
            raise ValueError(
                f"name must be one of {sorted(PRETRAINED_BACKBONES)} or None, got {name!r}."
            )
        entry = PRETRAINED_BACKBONES[name]
    state_dict = _backbone_state_dict(_read_checkpoint(path), path)
    model = create_backbone(architecture, image_size=image_size, backbone_kwargs=model_kwargs)
    load_state_dict_strictly(
        model, state_dict, str(path), architecture, getattr(model, "sparsam_model_args", {})
    )
    model.eval()
    data_config = {
        "mean": PAPER_MEAN,
        "std": PAPER_STD,
        "image_size": image_size,
        "interpolation": "bilinear",
    }
    architecture, model_args = rebuild_arguments(model)
    training_data = entry.training_data if entry else "medical images (converted without --name)"
    start = "ImageNet weights"
    if architecture == "xcit_small_12_p8_224":
        start += " (timm's xcit_small_12_p8_224_dist, as in the original code)"
    card = model_card_text(
        title=(
            f"{architecture} trained with DINO on {entry.images if entry else 'medical'} images "
            "(Nielsen et al. 2023)"
        ),
        description=(
            "The self-supervised backbone published with Nielsen M, Wenderoth L, Sentker T, "
            "Werner R. *Self-Supervision for Medical Image Classification: State-of-the-Art "
            "Performance with ~100 Labeled Training Samples per Class*. Bioengineering 2023; "
            f"10(8):895. Weights by the authors ([Zenodo record 10391339]({PAPER_WEIGHTS_URL}), "
            f"file `{path.name}`; code: {PAPER_CODE_URL}), converted unchanged to timm's Hub "
            "format by `sparsam convert`."
        ),
        license="cc-by-4.0",
        architecture=architecture,
        model_args=model_args,
        data_config=data_config,
        num_features=int(model.num_features),
        repo_id=entry.repo_id if entry else None,
        training_text=(
            f"DINO (Caron et al. 2021) starting from {start}, on {training_data}; "
            "images resized to 256×256 (nearest neighbour in the original code) and scaled to "
            "[-1, 1]. The paper's frozen CLS embeddings with an SVM, logistic regression or kNN "
            "reached state-of-the-art accuracy with about 100 labels per class."
        ),
        citation=f"{PAPER_CITATION}\n\nWeights: {PAPER_WEIGHTS_URL} (CC BY 4.0).",
        # The original code started from timm's distilled ImageNet XCiT.
        base_model=(
            imagenet_hub_id(f"{architecture}.fb_dist_in1k")
            if architecture == "xcit_small_12_p8_224"
            else None
        ),
    )
    return write_model_directory(
        model, Path(directory), architecture, model_args, data_config, "cc-by-4.0", card
    )


def _read_checkpoint(path: Path) -> Any:
    """What the ``.pt`` file holds, read with ``weights_only=True``; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {str(path)!r} "
            + ("is a directory" if path.is_dir() else "does not exist")
            + "; expected one of the paper's .pt files (e.g. pretrained_bm.pt)."
        )
    try:
        return load_weights_only(path)
    except UnreadableTorchFileError as error:
        # Not torch's message: it advises weights_only=False, which would run the file's code.
        raise ValueError(
            f"{path} is not one of the paper's DINO checkpoints (a torch state dict): "
            f"{error.reason}."
        ) from None


def _backbone_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    found = _find_backbone_dict(raw, depth=3)
    if found is None and not isinstance(raw, Mapping):
        raise ValueError(
            f"{path} holds a {type(raw).__name__}, not a dict of tensors; expected one of the "
            "paper's DINO checkpoints (a state dict with 'backbone.' keys)."
        )
    if found is None:
        keys = list(raw)
        shown = ", ".join(str(k) for k in keys[:10]) + (", …" if len(keys) > 10 else "")
        raise ValueError(
            f"{path} holds no 'backbone.' keys (also not in a nested 'teacher', 'student', "
            f"'state_dict' or 'model' dict); found {len(keys)} top-level keys: {shown or '—'}. "
            "Expected one of the paper's DINO checkpoints."
        )
    state_dict = {}
    for key, value in found.items():
        stripped = _strip_prefixes(str(key))
        if not stripped.startswith("backbone."):
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor.")
        state_dict[_strip_prefixes(stripped[len("backbone.") :])] = value
    return state_dict


def _find_backbone_dict(raw: Any, depth: int) -> Mapping[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    if any(_strip_prefixes(str(key)).startswith("backbone.") for key in raw):
        return raw
    if depth == 0:
        return None
    preferred = ["teacher", "state_dict", "model", "student"]
    keys = [k for k in preferred if k in raw] + [k for k in raw if k not in preferred]
    for key in keys:
        found = _find_backbone_dict(raw[key], depth - 1)
        if found is not None:
            return found
    return None


def _strip_prefixes(key: str) -> str:
    # DistributedDataParallel adds "module.", torch.compile "_orig_mod.".
    while key.startswith(("module.", "_orig_mod.")):
        key = key.split(".", 1)[1]
    return key
