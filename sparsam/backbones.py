"""timm backbones: creation with the sizes DINO needs, and their preprocessing."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

__all__ = ["backbone_data_config", "create_backbone"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create_backbone(
    name: str,
    *,
    image_size: int,
    pretrained: str | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A timm model without classifier that maps images to CLS embeddings.

    Parameters
    ----------
    name : str
        A timm model name, e.g. ``"xcit_small_12_p8_224"`` or ``"vit_small_patch16_224"``.
    image_size : int
        Side of the global crops; vision transformers are built for it and with
        ``dynamic_img_size=True`` so that the smaller local crops pass too.
    pretrained : {None, "imagenet"}
        ``"imagenet"`` loads timm's pretrained weights for ``name``.
    backbone_kwargs : dict, optional
        Extra arguments for ``timm.create_model`` (e.g. ``depth``, ``embed_dim``,
        ``patch_size``); a model is a name plus arguments, as in timm.
    drop_path_rate : float, default=0.0
        Stochastic depth of the student (DINO uses 0.1).

    Returns
    -------
    model : nn.Module
        With ``num_classes=0`` so that ``model(images)`` is the pooled CLS embedding and
        ``model.num_features`` its width.
    """
    if pretrained not in (None, "imagenet"):
        raise ValueError(f"pretrained must be None or 'imagenet', got {pretrained!r}.")
    if not timm.is_model(name):
        raise ValueError(
            f"backbone {name!r} is not a timm model name; see timm.list_models() for the names."
        )
    kwargs = {"num_classes": 0, "drop_path_rate": drop_path_rate, **(backbone_kwargs or {})}
    # Not every architecture takes these; try the most specific first (ViT, then XCiT, then CNNs).
    size_options = [
        {"img_size": image_size, "dynamic_img_size": True},
        {"img_size": image_size},
        {},
    ]
    last_error: TypeError | None = None
    for size_kwargs in size_options:
        try:
            return _create(name, pretrained == "imagenet", {**size_kwargs, **kwargs})
        except TypeError as error:
            last_error = error
    raise ValueError(f"timm cannot build {name!r} with {kwargs}: {last_error}") from last_error


def _create(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as error:
        if not pretrained:
            raise
        raise RuntimeError(
            f"Could not load timm's ImageNet weights for {name!r} ({error}). They are "
            "downloaded from the Hugging Face Hub on first use: connect once, or set HF_HOME "
            "to a cache that holds them (HF_HUB_OFFLINE=1 only reads that cache)."
        ) from error


def backbone_data_config(model: nn.Module, image_size: int) -> dict[str, Any]:
    """Normalisation and input size that ``transform`` applies for ``model``.

    Returns
    -------
    config : dict
        ``mean``, ``std`` (tuples of 3 floats), ``image_size`` (int) and ``interpolation``.
    """
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    return {
        "mean": tuple(float(v) for v in pretrained_cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(float(v) for v in pretrained_cfg.get("std", IMAGENET_STD)),
        "image_size": int(image_size),
        "interpolation": "bilinear",
    }
