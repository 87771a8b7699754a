"""Saving a backbone in timm's Hub format, beside whatever else its directory holds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
from sklearn.exceptions import NotFittedError
from torch import nn

from .._files import replace_files
from ..version import __version__
from .create import backbone_data_config
from .hub_format import (
    CARD_MARKER,
    CARD_MARKER_TEXT,
    CONFIG_MARKER,
    CONFIG_NAME,
    README_NAME,
    WEIGHTS_MARKER,
    WEIGHTS_NAME,
)
from .model_card import model_card_text


def save_backbone(
    model: Any,
    directory: str | os.PathLike[str],
    *,
    model_card: bool = True,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    datasets: Sequence[str] = (),
) -> Path:
    """Write a backbone in timm's Hugging Face Hub format.

    The directory receives ``config.json`` (``architecture``, ``num_classes=0``,
    ``num_features``, ``model_args`` that rebuild the model, ``pretrained_cfg`` with
    ``input_size``, ``mean``, ``std``, ``interpolation`` and ``crop_pct=1.0``),
    ``model.safetensors`` and, with ``model_card=True``, a ``README.md`` model card. Plain timm
    loads it: ``timm.create_model(f"local-dir:{directory}", pretrained=True)``, or
    ``"hf-hub:org/name"`` once pushed with ``push_backbone``.

    ``directory`` may exist and hold other files: only these three files are written, and
    every other file is left alone. A file of one of these names is only replaced when
    sparsam wrote it, which it recognises by a marker: a ``"sparsam"`` entry (its version and
    a save id) in ``config.json``, a ``sparsam_save_id`` entry in the safetensors metadata,
    a ``<!-- sparsam-model-card … -->`` line at the end of the model card. Delete that line
    from a card you edited, and sparsam refuses to overwrite it; pass ``model_card=False`` to
    save beside it. With ``model_card=False`` a card written by an earlier save is removed,
    since it would describe other weights.

    The files are first written completely to a hidden directory inside ``directory``, then
    each is renamed into place, ``config.json`` last. If saving raises (disk full, permission
    denied, KeyboardInterrupt), ``directory`` is left as it was. A crash or kill during the
    final renames leaves every file whole, either the new or the previous one; at worst the
    new ``model.safetensors`` beside the previous ``config.json`` and card, which a mismatch
    of their save ids reveals and saving again repairs. A crash can also leave the hidden
    ``.sparsam-save-*`` directory behind, which is safe to delete.

    Parameters
    ----------
    model : DinoFeaturizer or nn.Module
        A fitted ``DinoFeaturizer`` (its teacher ``backbone_``, ``data_config_``, parameters
        and ``history_`` are saved), or a timm model from ``create_backbone`` or
        ``load_backbone`` (normalisation from its ``pretrained_cfg``).
    directory : str or path-like
        Target directory.
    model_card : bool, default=True
        Write ``README.md``: how the model was trained (the featurizer's parameters), a
        summary of ``history_`` and how to load it with sparsam and with plain timm. Its
        metadata (``huggingface_hub.ModelCardData``) names ``library_name: timm``, the
        license, tags and, when training started from Hub weights (``"imagenet"``, a short
        name, ``"hf-hub:…"``), that repository as ``base_model``. A card is meant to be
        published: local paths (``checkpoint_dir``, ``memory``, a directory as
        ``pretrained``) are not written, neither here nor in ``config.json``.
    license : str, default="apache-2.0"
        License identifier for the card's metadata and ``pretrained_cfg``.
    repo_id : str, optional
        Hub repository the card's loading examples name; a placeholder when omitted.
    datasets : sequence of str, optional
        Hub ids of the data sets it was trained on, for the card's ``datasets`` metadata.

    Returns
    -------
    directory : Path

    Raises
    ------
    TypeError
        If ``model`` is neither a fitted featurizer nor an ``nn.Module``.
    sklearn.exceptions.NotFittedError
        If a featurizer is given before ``fit``.
    ValueError
        If the architecture or its arguments cannot be determined or are not serialisable.
    FileExistsError
        If ``directory`` is a file, or holds a ``config.json``, ``model.safetensors`` or
        ``README.md`` that sparsam did not write; the message names the files and nothing
        is written.

    Examples
    --------
    >>> from sparsam.backbones import create_backbone, save_backbone
    >>> backbone = create_backbone(
    ...     "vit_tiny_patch16_224", image_size=16,
    ...     backbone_kwargs={"patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2})
    >>> path = save_backbone(backbone, "tiny-backbone")  # doctest: +SKIP
    """
    recipe: dict[str, Any] | None = None
    history: Mapping[str, Any] | None = None
    if hasattr(model, "get_params") and not isinstance(model, nn.Module):
        if not hasattr(model, "backbone_"):
            raise NotFittedError(
                f"{type(model).__name__} is not fitted yet: call fit (epochs=0 only loads "
                "the pretrained weights) before save_backbone."
            )
        recipe = dict(model.get_params(deep=False))
        history = getattr(model, "history_", None) or {}
        data_config = dict(model.data_config_)
        backbone = model.backbone_
    elif isinstance(model, nn.Module):
        backbone = model
        data_config = backbone_data_config(backbone, _image_size_of(backbone))
    else:
        raise TypeError(
            "save_backbone expects a fitted DinoFeaturizer or a timm nn.Module, got "
            f"{type(model).__name__}."
        )
    architecture, model_args = rebuild_arguments(backbone)
    card = None
    if model_card:
        if recipe is not None:
            title = f"{architecture} trained with DINO (sparsam)"
            description = (
                f"A `{architecture}` backbone trained with DINO self-supervision "
                "([Caron et al. 2021](https://arxiv.org/abs/2104.14294)) by "
                "[sparsam](https://github.com/IPMI-ICNS-UKE/sparsam), the method of Nielsen et "
                f"al. 2023. It maps an image to a {backbone.num_features}-dimensional CLS "
                "embedding for scikit-learn classifiers that need few labels."
            )
        else:
            title = f"{architecture} backbone (sparsam)"
            description = (
                f"A `{architecture}` timm backbone without classifier, saved by sparsam. It "
                f"maps an image to a {backbone.num_features}-dimensional embedding."
            )
        card = model_card_text(
            title=title,
            description=description,
            license=license,
            architecture=architecture,
            model_args=model_args,
            data_config=data_config,
            num_features=int(backbone.num_features),
            repo_id=repo_id,
            recipe=recipe,
            history=history,
            base_model=getattr(backbone, "sparsam_base_model", None),
            datasets=datasets,
        )
    return write_model_directory(
        backbone, Path(directory), architecture, model_args, data_config, license, card
    )


def _image_size_of(model: nn.Module) -> int | None:
    size = getattr(model, "sparsam_model_args", {}).get("img_size")
    if size is None:
        size = getattr(model, "_model_args", {}).get("img_size")
    if size is None:
        return None
    return int(size if isinstance(size, int) else size[-1])


def rebuild_arguments(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """The timm architecture and the JSON arguments that rebuild ``model``."""
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    architecture = getattr(model, "sparsam_architecture", None) or pretrained_cfg.get(
        "architecture"
    )
    if not architecture or not timm.is_model(architecture):
        raise ValueError(
            f"Cannot tell which timm architecture rebuilds this {type(model).__name__} "
            f"(got {architecture!r}); create it with sparsam.backbones.create_backbone or "
            "load_backbone, or with timm.create_model."
        )
    # Recent timm (1.0.31 here) records the factory arguments itself; sparsam's own record
    # wins and keeps older timm versions working.
    runtime = {"num_classes", "pretrained", "pretrained_cfg", "pretrained_model_args"}
    runtime |= {"pretrained_cfg_overlay"}  # may name a local weights file
    runtime |= {"device", "dtype", "cache_dir", "drop_rate", "drop_path_rate"}
    model_args = {k: v for k, v in getattr(model, "_model_args", {}).items() if k not in runtime}
    model_args.update(getattr(model, "sparsam_model_args", {}))
    for key, value in model_args.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"timm argument {key}={value!r} of {architecture!r} cannot be written to "
                "config.json; only JSON values (numbers, strings, lists) rebuild a model."
            ) from error
    return architecture, model_args


def write_model_directory(
    model: nn.Module,
    directory: Path,
    architecture: str,
    model_args: dict[str, Any],
    data_config: Mapping[str, Any],
    license: str,
    card: str | None,
) -> Path:
    """Write sparsam's files into ``directory``, leaving every other file there alone.

    The new files are written completely into a hidden staging directory inside ``directory``
    and then renamed into place by `replace_files`, ``config.json`` last; see `save_backbone`
    for what an interrupted save leaves.
    """
    # timm's public save_for_hf writes the safetensors file without metadata, so sparsam
    # writes the weights itself and takes only the config from timm. Imported here so that a
    # timm that moves this private function breaks saving alone.
    from timm.models._hub import save_config_for_hf

    directory = directory.expanduser()
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(
            f"{directory} exists and is not a directory; expected a directory to save the "
            "backbone in."
        )
    names = [WEIGHTS_NAME, *([README_NAME] if card is not None else []), CONFIG_NAME]
    _refuse_foreign_files(directory, names)
    # A card from an earlier save would describe other weights; a README of the user's stays.
    stale = [README_NAME] if card is None and _written_by_sparsam(directory / README_NAME) else []
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    # Inside the target, so that the final renames never cross a file system (a mount point).
    staging = Path(tempfile.mkdtemp(prefix=".sparsam-save-", dir=directory))
    save_id = uuid.uuid4().hex
    try:
        safetensors.torch.save_file(
            model.state_dict(),
            str(staging / WEIGHTS_NAME),
            metadata={"format": "pt", WEIGHTS_MARKER: save_id},
        )
        # A Path, not a str: timm before 1.0.30 calls .open() on it (found on a GPU machine
        # with timm 1.0.29, where every `sparsam pretrain` failed at the very end).
        save_config_for_hf(model, staging / CONFIG_NAME, model_args=model_args)
        config = json.loads((staging / CONFIG_NAME).read_text(encoding="utf-8"))
        config = _normalised_config(config, model, architecture, data_config, license)
        config[CONFIG_MARKER] = {"version": __version__, "save_id": save_id}
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if card is not None:
            marker = f"{CARD_MARKER} {save_id}: {CARD_MARKER_TEXT} -->"
            (staging / README_NAME).write_text(f"{card.rstrip()}\n\n{marker}\n", encoding="utf-8")
        replace_files(directory, staging, names, remove=stale)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return directory


def _refuse_foreign_files(directory: Path, names: list[str]) -> None:
    foreign = [
        directory / name
        for name in names
        if os.path.lexists(directory / name) and not _written_by_sparsam(directory / name)
    ]
    if not foreign:
        return
    them = "the file" if len(foreign) == 1 else "the files"
    advice = f"Save into another directory, or move {them} away"
    if directory / README_NAME in foreign:
        advice += "; to keep a README.md of your own, pass model_card=False to save_backbone"
    raise FileExistsError(
        f"Refusing to overwrite {', '.join(str(path) for path in foreign)}: sparsam did not "
        f"write {them} (it marks its {CONFIG_NAME} with a {CONFIG_MARKER!r} entry, its "
        f"{WEIGHTS_NAME} with {WEIGHTS_MARKER!r} metadata and its {README_NAME} with a "
        f"{CARD_MARKER!r} line), and nothing was written. {advice}."
    )


def _written_by_sparsam(path: Path) -> bool:
    """Whether ``path`` is a file that `write_model_directory` wrote, judged by its marker."""
    # sparsam never writes symbolic links (a Hub cache snapshot is made of them).
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if path.name == CONFIG_NAME:
            config = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(config, dict) and isinstance(config.get(CONFIG_MARKER), dict)
        if path.name == WEIGHTS_NAME:
            with safetensors.safe_open(str(path), framework="pt") as weights:
                return WEIGHTS_MARKER in (weights.metadata() or {})
        return CARD_MARKER in path.read_text(encoding="utf-8")
    except Exception:  # unreadable, not JSON, not safetensors (its own SafetensorError): foreign
        return False


def _normalised_config(
    config: dict[str, Any],
    model: nn.Module,
    architecture: str,
    data_config: Mapping[str, Any],
    license: str,
) -> dict[str, Any]:
    size = int(data_config["image_size"])
    pretrained_cfg = dict(config.get("pretrained_cfg", {}))
    # Fields that describe timm's own (ImageNet) weights and their source, not these weights.
    for key in (
        "tag",
        "url",
        "file",
        "hf_hub_id",
        "hf_hub_filename",
        "source",
        "origin_url",
        "paper_ids",
        "paper_name",
        "notes",
        "state_dict",
        "label_names",
        "label_descriptions",
        "label_offset",
        "test_input_size",
        "test_crop_pct",
        "test_pool_size",
    ):
        pretrained_cfg.pop(key, None)
    pretrained_cfg.update(
        {
            "input_size": [3, size, size],
            "interpolation": str(data_config.get("interpolation", "bilinear")),
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [float(v) for v in data_config["mean"]],
            "std": [float(v) for v in data_config["std"]],
            "num_classes": 0,
            "license": license,
        }
    )
    model_args = dict(config.get("model_args", {}))
    model_args["num_classes"] = 0
    return {
        **config,
        "architecture": architecture,
        "num_classes": 0,
        "num_features": int(model.num_features),
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
    }
