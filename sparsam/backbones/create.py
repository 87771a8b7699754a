"""Creating a timm backbone without classifier, and the preprocessing it expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from huggingface_hub.utils import EntryNotFoundError
from torch import nn

from .hub_format import BackboneNotFoundError


def create_backbone(
    name: str,
    *,
    image_size: int | None = None,
    pretrained: str | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A timm model without classifier that maps images to CLS embeddings.

    Parameters
    ----------
    name : str
        A timm model name, e.g. ``"xcit_small_12_p8_224"`` or ``"vit_small_patch16_224"``.
    image_size : int, optional
        Side of the global crops; vision transformers are built for it and with
        ``dynamic_img_size=True`` so that the smaller local crops pass too. By default
        ``backbone_kwargs["img_size"]`` when given, else the input size of timm's
        configuration for ``name`` (224 for ``"xcit_small_12_p8_224"``). The size used is
        recorded as ``model.pretrained_cfg["input_size"]``.
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
        ``model.num_features`` its width. ``model.sparsam_architecture`` (``name``) and
        ``model.sparsam_model_args`` (every ``timm.create_model`` argument except
        ``pretrained``, ``num_classes`` and ``drop_path_rate``) rebuild it; ``save_backbone``
        writes them to ``config.json``. With ``"imagenet"``, ``model.sparsam_base_model``
        names timm's Hub repository of the weights, the model card's ``base_model``.

    Raises
    ------
    BackboneNotFoundError
        When ``pretrained="imagenet"`` and timm's weights can neither be downloaded nor found
        in the Hugging Face cache.
    """
    return create_timm_backbone(name, image_size, pretrained, backbone_kwargs, drop_path_rate)


def create_timm_backbone(
    name: str,
    image_size: int | None,
    pretrained: str | None,
    backbone_kwargs: dict[str, Any] | None,
    drop_path_rate: float,
    pretrained_file: Path | None = None,
) -> nn.Module:
    """``create_backbone``, with ``pretrained_file``: a local file of timm's ImageNet weights.

    ``load_backbone("imagenet", ...)`` passes the file it fetched from the Hugging Face cache
    itself, so that timm reads it instead of downloading.
    """
    if pretrained not in (None, "imagenet"):
        raise ValueError(f"pretrained must be None or 'imagenet', got {pretrained!r}.")
    if not timm.is_model(name):
        raise ValueError(
            f"backbone {name!r} is not a timm model name; see timm.list_models() for the names."
        )
    if image_size is None:
        image_size = _default_image_size(name, backbone_kwargs or {})
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
            model = _create(
                name, pretrained == "imagenet", {**size_kwargs, **kwargs}, pretrained_file
            )
        except TypeError as error:
            last_error = error
            continue
        record_model_args(model, name, {**size_kwargs, **(backbone_kwargs or {})})
        model.pretrained_cfg = {
            **(getattr(model, "pretrained_cfg", None) or {}),
            "input_size": (3, image_size, image_size),
        }
        if pretrained == "imagenet":
            model.sparsam_base_model = imagenet_hub_id(name)
        return model
    raise ValueError(f"timm cannot build {name!r} with {kwargs}: {last_error}") from last_error


def _default_image_size(name: str, backbone_kwargs: dict[str, Any]) -> int:
    size = backbone_kwargs.get("img_size")
    if size is None:
        pretrained_cfg = timm.models.get_pretrained_cfg(name)
        size = getattr(pretrained_cfg, "input_size", None) or (3, 224, 224)
    return int(size if isinstance(size, int) else size[-1])


def imagenet_hub_id(name: str) -> str | None:
    """The Hub repository of timm's default pretrained weights for ``name``, if any."""
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    return getattr(pretrained_cfg, "hf_hub_id", None) or None


def _create(
    name: str, pretrained: bool, kwargs: dict[str, Any], pretrained_file: Path | None = None
) -> nn.Module:
    if pretrained_file is not None:
        # timm loads a local file instead of downloading when its pretrained_cfg names one.
        kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": str(pretrained_file)}}
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, EntryNotFoundError) as error:
        if not pretrained:
            raise
        raise BackboneNotFoundError(
            f"Could not load timm's ImageNet weights for {name!r} ({error}). They are "
            "downloaded from the Hugging Face Hub on first use: connect once, or set HF_HOME "
            "to a cache that holds them (HF_HUB_OFFLINE=1 only reads that cache)."
        ) from error


def record_model_args(model: nn.Module, architecture: str, model_args: dict[str, Any]) -> None:
    """Record on ``model`` the name and the timm arguments that rebuild it (``config.json``)."""
    excluded = {"pretrained", "num_classes", "drop_path_rate"}
    model.sparsam_architecture = architecture
    model.sparsam_model_args = {k: v for k, v in model_args.items() if k not in excluded}


def backbone_data_config(model: nn.Module, image_size: int | None = None) -> dict[str, Any]:
    """Normalisation and input size that ``transform`` applies for ``model``.

    Parameters
    ----------
    model : nn.Module
        A timm model; ``timm.data.resolve_model_data_config`` reads ``mean``, ``std`` and
        ``input_size`` from its ``pretrained_cfg`` (ImageNet's normalisation and 224 px when
        absent).
    image_size : int, optional
        Side of the square input; by default the ``input_size`` of ``pretrained_cfg``.

    Returns
    -------
    config : dict
        ``mean``, ``std`` (tuples of 3 floats), ``image_size`` (int) and ``interpolation``
        (always ``"bilinear"``, sparsam's resize, whatever timm's configuration names).
    """
    resolved = timm.data.resolve_model_data_config(model)
    if image_size is None:
        image_size = int(resolved["input_size"][-1])
    return {
        "mean": tuple(float(v) for v in resolved["mean"]),
        "std": tuple(float(v) for v in resolved["std"]),
        "image_size": int(image_size),
        # Not timm's (often bicubic) choice: sparsam resizes whole images on the training
        # device with bilinear interpolation, and save_backbone records it in config.json.
        "interpolation": "bilinear",
    }
