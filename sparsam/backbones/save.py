"""timm backbones: creation, preprocessing, and the Hugging Face Hub format.

A backbone on disk or on the Hub is a directory in timm's Hub format: ``config.json`` (the
architecture, the arguments that rebuild it and the preprocessing), ``model.safetensors`` and
a ``README.md`` model card. ``timm.create_model("hf-hub:org/name", pretrained=True)`` and
``timm.create_model("local-dir:/path", pretrained=True)`` load it without sparsam.

Weights are only ever read from safetensors. The one exception is ``convert_checkpoint``, which
reads the paper's original ``.pt`` state dicts with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from huggingface_hub import (
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    hf_hub_download,
    try_to_load_from_cache,
)
from huggingface_hub.utils import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from sklearn.exceptions import NotFittedError
from torch import nn

from .._files import replace_files

__all__ = [
    "PRETRAINED_BACKBONES",
    "BackboneNotFoundError",
    "PretrainedBackbone",
    "backbone_data_config",
    "convert_checkpoint",
    "create_backbone",
    "load_backbone",
    "push_backbone",
    "save_backbone",
]

logger = logging.getLogger("sparsam")

IMAGENET_MEAN = timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = timm.data.IMAGENET_DEFAULT_STD
# The paper scaled every image to [0, 1] and then to [-1, 1] (sparsam's min_max_normalize_tensor).
PAPER_MEAN = (0.5, 0.5, 0.5)
PAPER_STD = (0.5, 0.5, 0.5)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"
# Markers of the files sparsam writes: saving again replaces a file only when it carries its
# marker, so that a directory can hold other files (a thesis, notes, a model of another tool)
# and sparsam never overwrites what it did not write. config.json and model.safetensors of one
# save share its save id, which tells a mix of two saves (see save_backbone) apart.
_CONFIG_MARKER = "sparsam"
_WEIGHTS_MARKER = "sparsam_save_id"
_CARD_MARKER = "<!-- sparsam-model-card"
_CARD_MARKER_TEXT = (
    "written by sparsam, which replaces this file when it saves a backbone here again; "
    "delete this line to keep your edits (sparsam then refuses to overwrite the file)"
)
# Files that can only be read by unpickling, which can run arbitrary code: never from a hub.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".tar")

PAPER_CITATION = (
    "Nielsen M, Wenderoth L, Sentker T, Werner R. Self-Supervision for Medical Image "
    "Classification: State-of-the-Art Performance with ~100 Labeled Training Samples per Class. "
    "Bioengineering 2023;10(8):895. https://doi.org/10.3390/bioengineering10080895"
)
PAPER_WEIGHTS_URL = "https://zenodo.org/records/10391339"
PAPER_CODE_URL = "https://github.com/IPMI-ICNS-UKE/sparsam"


class BackboneNotFoundError(OSError):
    """Pretrained backbone weights could not be found or may not be read.

    Raised by ``load_backbone`` when a Hub repository, revision or file is missing, the Hub is
    unreachable (or ``HF_HUB_OFFLINE=1``) and the cache lacks the files, a local directory
    lacks ``config.json`` or ``model.safetensors``, or only pickle weights exist. The message
    names the repository or directory, the revision, the cache searched and how to fix it.
    """


@dataclass(frozen=True)
class PretrainedBackbone:
    """A published backbone that ``load_backbone`` knows by a short name.

    Attributes
    ----------
    repo_id : str
        Hugging Face Hub repository, ``"org/name"``.
    revision : str
        Git revision that is loaded: a branch, tag or, once published, a commit hash.
    checkpoint : str
        File name of the original weights (Zenodo record 10391339) it was converted from.
    images : str
        Kind of images, for titles ("bone marrow cell", "endoscopy", "dermoscopy").
    training_data : str
        The unlabeled images DINO was trained on.
    description : str
        One sentence for humans.
    architecture : str
        timm model name.
    image_size : int
        Side of the square images it was trained on.
    mean, std : tuple of float
        Normalisation of images scaled to [0, 1].
    """

    repo_id: str
    revision: str
    checkpoint: str
    images: str
    training_data: str
    description: str
    architecture: str = "xcit_small_12_p8_224"
    image_size: int = 256
    mean: tuple[float, float, float] = PAPER_MEAN
    std: tuple[float, float, float] = PAPER_STD


# The repositories below are NOT published yet: they are the names that
# `sparsam convert pretrained_<name>.pt DIR --name <name>` followed by
# `sparsam push DIR <repo_id>` would create. Until they exist, loading a short name fails with
# a BackboneNotFoundError; pass the converted directory instead. Pin `revision` to the commit
# hash of the upload once it is published.
PRETRAINED_BACKBONES: dict[str, PretrainedBackbone] = {
    "bm": PretrainedBackbone(
        repo_id="sparsam/xcit_small_12_p8_256.dino_bm",
        revision="main",
        checkpoint="pretrained_bm.pt",
        images="bone marrow cell",
        training_data=(
            "bone marrow cytomorphology: single-cell images of bone marrow smears "
            "(Matek et al., Blood 2021)"
        ),
        description="XCiT-S12/8 trained with DINO on bone marrow cells (Nielsen et al. 2023).",
    ),
    "endo": PretrainedBackbone(
        repo_id="sparsam/xcit_small_12_p8_256.dino_endo",
        revision="main",
        checkpoint="pretrained_endo.pt",
        images="endoscopy",
        training_data=(
            "HyperKvasir: gastrointestinal endoscopy images (Borgli et al., Scientific Data 2020)"
        ),
        description="XCiT-S12/8 trained with DINO on endoscopy images (Nielsen et al. 2023).",
    ),
    "isic": PretrainedBackbone(
        repo_id="sparsam/xcit_small_12_p8_256.dino_isic",
        revision="main",
        checkpoint="pretrained_isic.pt",
        images="dermoscopy",
        training_data="ISIC 2019 and ISIC 2020 challenges: dermoscopy images of skin lesions",
        description="XCiT-S12/8 trained with DINO on dermoscopy images (Nielsen et al. 2023).",
    ),
}


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
    return _create_backbone(name, image_size, pretrained, backbone_kwargs, drop_path_rate)


def _create_backbone(
    name: str,
    image_size: int | None,
    pretrained: str | None,
    backbone_kwargs: dict[str, Any] | None,
    drop_path_rate: float,
    pretrained_file: Path | None = None,
) -> nn.Module:
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
        _record_model_args(model, name, {**size_kwargs, **(backbone_kwargs or {})})
        model.pretrained_cfg = {
            **(getattr(model, "pretrained_cfg", None) or {}),
            "input_size": (3, image_size, image_size),
        }
        if pretrained == "imagenet":
            model.sparsam_base_model = _imagenet_hub_id(name)
        return model
    raise ValueError(f"timm cannot build {name!r} with {kwargs}: {last_error}") from last_error


def _default_image_size(name: str, backbone_kwargs: dict[str, Any]) -> int:
    size = backbone_kwargs.get("img_size")
    if size is None:
        pretrained_cfg = timm.models.get_pretrained_cfg(name)
        size = getattr(pretrained_cfg, "input_size", None) or (3, 224, 224)
    return int(size if isinstance(size, int) else size[-1])


def _imagenet_hub_id(name: str) -> str | None:
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


def _record_model_args(model: nn.Module, architecture: str, model_args: dict[str, Any]) -> None:
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


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


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
    architecture, model_args = _rebuild_arguments(backbone)
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
        card = _model_card(
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
    return _write_model_directory(
        backbone, Path(directory), architecture, model_args, data_config, license, card
    )


def _image_size_of(model: nn.Module) -> int | None:
    size = getattr(model, "sparsam_model_args", {}).get("img_size")
    if size is None:
        size = getattr(model, "_model_args", {}).get("img_size")
    if size is None:
        return None
    return int(size if isinstance(size, int) else size[-1])


def _rebuild_arguments(model: nn.Module) -> tuple[str, dict[str, Any]]:
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


def _write_model_directory(
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
            metadata={"format": "pt", _WEIGHTS_MARKER: save_id},
        )
        # A Path, not a str: timm before 1.0.30 calls .open() on it (found on a GPU machine
        # with timm 1.0.29, where every `sparsam pretrain` failed at the very end).
        save_config_for_hf(model, staging / CONFIG_NAME, model_args=model_args)
        config = json.loads((staging / CONFIG_NAME).read_text(encoding="utf-8"))
        config = _normalised_config(config, model, architecture, data_config, license)
        config[_CONFIG_MARKER] = {"version": _sparsam_version(), "save_id": save_id}
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if card is not None:
            marker = f"{_CARD_MARKER} {save_id}: {_CARD_MARKER_TEXT} -->"
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
        f"write {them} (it marks its {CONFIG_NAME} with a {_CONFIG_MARKER!r} entry, its "
        f"{WEIGHTS_NAME} with {_WEIGHTS_MARKER!r} metadata and its {README_NAME} with a "
        f"{_CARD_MARKER!r} line), and nothing was written. {advice}."
    )


def _written_by_sparsam(path: Path) -> bool:
    """Whether ``path`` is a file that `_write_model_directory` wrote, judged by its marker."""
    # sparsam never writes symbolic links (a Hub cache snapshot is made of them).
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if path.name == CONFIG_NAME:
            config = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(config, dict) and isinstance(config.get(_CONFIG_MARKER), dict)
        if path.name == WEIGHTS_NAME:
            with safetensors.safe_open(str(path), framework="pt") as weights:
                return _WEIGHTS_MARKER in (weights.metadata() or {})
        return _CARD_MARKER in path.read_text(encoding="utf-8")
    except Exception:  # unreadable, not JSON, not safetensors (its own SafetensorError): foreign
        return False


def _sparsam_version() -> str:
    from sparsam import __version__

    return __version__


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


def _model_card(
    *,
    title: str,
    description: str,
    license: str,
    architecture: str,
    model_args: Mapping[str, Any],
    data_config: Mapping[str, Any],
    num_features: int,
    repo_id: str | None,
    recipe: Mapping[str, Any] | None = None,
    history: Mapping[str, Any] | None = None,
    training_text: str | None = None,
    citation: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
) -> str:
    """The model card, with metadata from huggingface_hub's ModelCardData (the Hub's schema)."""
    hub_id = repo_id or "ORG/NAME"
    size = int(data_config["image_size"])
    mean = tuple(round(float(v), 4) for v in data_config["mean"])
    std = tuple(round(float(v), 4) for v in data_config["std"])
    metadata = ModelCardData(
        library_name="timm",
        license=license,
        pipeline_tag="image-feature-extraction",
        tags=["image-feature-extraction", "timm", "sparsam", "dino"],
        base_model=base_model,
        datasets=list(datasets) or None,
    )
    lines: list[str] = []
    lines += [f"# {title}", "", description, "", "## Model details", ""]
    lines += [
        f"- **Architecture:** `{architecture}` (timm), arguments `{dict(model_args)}`",
        f"- **Output:** CLS embedding of {num_features} features (`num_classes=0`)",
        f"- **Input:** RGB images resized to {size}×{size} ({data_config.get('interpolation')}), "
        f"scaled to [0, 1], normalised with mean {mean} and std {std}",
        f"- **License:** {license}",
        "",
        "## Training",
        "",
    ]
    if training_text:
        lines += [training_text, ""]
    if recipe is not None:
        lines += [
            "Trained with `sparsam.DinoFeaturizer` and these parameters:",
            "",
            "| parameter | value |",
            "| --- | --- |",
            *(
                f"| `{name}` | {value} |"
                for name, value in sorted(_published_parameters(recipe).items())
            ),
            "",
            _history_summary(history or {}, recipe),
            "",
        ]
    if recipe is None and not training_text:
        lines += ["Not recorded: this backbone was saved as a plain timm model.", ""]
    lines += [
        "## How to load",
        "",
        "With sparsam (reads only `config.json` and `model.safetensors`):",
        "",
        "```python",
        "from sparsam import DinoFeaturizer, load_backbone",
        "",
        f'backbone = load_backbone("hf-hub:{hub_id}")  # or the path of a local copy',
        f'featurizer = DinoFeaturizer(pretrained="hf-hub:{hub_id}", epochs=0)  # at {size} px',
        "```",
        "",
        "With plain timm:",
        "",
        "```python",
        "import timm",
        "import torch",
        "",
        f'model = timm.create_model("hf-hub:{hub_id}", pretrained=True).eval()',
        "config = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**config)",
        "with torch.no_grad():",
        f"    embeddings = model(transform(image).unsqueeze(0))  # (1, {num_features})",
        "```",
        "",
        f"sparsam resizes the whole image to {size}×{size}; timm's transform resizes the shorter "
        "side and crops the centre, which differs for images that are not square.",
        "",
    ]
    if citation:
        lines += ["## Citation", "", citation, ""]
    body = "\n".join(lines)
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}"))


# The featurizer's parameters that hold local paths; a card is meant to be published.
_LOCAL_PARAMETERS = ("checkpoint_dir", "memory")
_LOCAL_VALUE = "*a local directory (not published)*"


def _published_parameters(recipe: Mapping[str, Any]) -> dict[str, str]:
    """The featurizer's parameters as table cells, with local paths left out."""
    cells = {}
    for name, value in recipe.items():
        local = isinstance(value, os.PathLike) or (value is not None and name in _LOCAL_PARAMETERS)
        if name == "pretrained" and isinstance(value, str):
            local = not (
                value == "imagenet" or value in PRETRAINED_BACKBONES or value.startswith("hf-hub:")
            )
        cells[name] = _LOCAL_VALUE if local else "`{}`".format(repr(value).replace("|", "\\|"))
    return cells


def _history_summary(history: Mapping[str, Any], recipe: Mapping[str, Any]) -> str:
    losses = list(history.get("loss", []))
    if not losses:
        return "No DINO epochs were run (`epochs=0`): these are the starting weights."
    text = f"DINO ran {len(losses)} epochs; final loss {float(losses[-1]):.4f}"
    entropies = list(history.get("teacher_entropy", []))
    if entropies:
        text += f", final teacher entropy {float(entropies[-1]):.3f}"
        out_dim = recipe.get("out_dim")
        if isinstance(out_dim, int) and out_dim > 1:
            text += f" (uniform collapse would be ln(out_dim) = {math.log(out_dim):.3f})"
    ranks = [float(value) for value in history.get("rankme", [])]
    if ranks and math.isfinite(ranks[-1]):
        text += f", final RankMe {ranks[-1]:.1f} (best {max(ranks):.1f})"
    return text + "."


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_backbone(
    spec: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    architecture: str | None = None,
    drop_path_rate: float = 0.0,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> nn.Module:
    """A pretrained timm backbone from the Hub, a local directory or timm's ImageNet weights.

    Only ``config.json`` and ``model.safetensors`` are read (downloaded through the Hugging
    Face cache, which honours ``HF_HOME``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1``); the
    model is built by timm from the config and the weights are loaded strictly. Pickle
    weights (``pytorch_model.bin``, ``*.pt``, ``*.pth``) are refused; no remote code runs.

    Parameters
    ----------
    spec : str or path-like
        One of

        - a short name of ``PRETRAINED_BACKBONES``: ``"bm"``, ``"endo"``, ``"isic"``, the
          paper's backbones. Their repositories are placeholders under the ``sparsam``
          organisation that ``sparsam push`` would create; they are not published yet, so
          loading them fails with ``BackboneNotFoundError`` until they are. Convert the
          original weights with ``sparsam convert`` and pass the directory meanwhile;
        - ``"hf-hub:org/name"`` or ``"hf-hub:org/name@revision"``;
        - a local directory holding ``config.json`` and ``model.safetensors`` (also
          ``"local-dir:/path"``);
        - ``"imagenet"`` with ``architecture``: timm's ImageNet weights.
    revision : str, optional
        Branch, tag or commit of a Hub repository; overrides a short name's pinned revision
        and must agree with an ``@revision`` in ``spec``.
    cache_dir : str or path-like, optional
        Hugging Face cache; by default ``HF_HUB_CACHE`` (``$HF_HOME/hub``).
    image_size : int, optional
        Intended input size. Models built with ``dynamic_img_size`` (sparsam's ViTs) and
        XCiT take any size as saved; a fixed-size ViT gets its position embedding resampled
        (``set_input_size``). With ``"imagenet"`` it is the size the model is built for
        (default 224).
    architecture : str, optional
        timm model name; required for ``"imagenet"`` and ignored otherwise.
    drop_path_rate : float, default=0.0
        Stochastic depth, for a backbone that is trained further (DINO's student uses 0.1);
        it does not change the weights or the embeddings in eval mode.
    token : str or bool, optional
        Hub token for private or gated repositories; by default ``HF_TOKEN`` or the token
        stored by ``hf auth login`` (``False``: none).
    local_files_only : bool, default=False
        Read only the Hugging Face cache (``cache_dir``) and never contact the Hub, also
        without ``HF_HUB_OFFLINE=1``; missing files raise ``BackboneNotFoundError``. With
        ``"imagenet"`` and either this or ``token``, sparsam fetches timm's weights file
        itself (through ``cache_dir``) and hands it to timm.

    Returns
    -------
    model : nn.Module
        In eval mode, ``num_classes=0``; ``model(images)`` is the CLS embedding and
        ``model.pretrained_cfg`` carries ``mean``, ``std`` and ``input_size`` (see
        ``backbone_data_config``). ``sparsam_architecture`` and ``sparsam_model_args`` are
        recorded as by ``create_backbone``, so ``save_backbone`` can write it again; from
        the Hub (or ``"imagenet"``), ``sparsam_base_model`` names the repository, which a
        model card of the backbone trained further lists as ``base_model``.

    Raises
    ------
    BackboneNotFoundError
        Repository, revision, directory or file not found; Hub unreachable and not cached;
        only pickle weights available.
    ValueError
        Malformed ``spec``, conflicting revisions, or weights that do not fit the config.

    Examples
    --------
    >>> from sparsam import load_backbone
    >>> backbone = load_backbone("hf-hub:sparsam/xcit_small_12_p8_256.dino_bm")  # doctest: +SKIP
    >>> backbone = load_backbone("converted/bm")  # doctest: +SKIP
    """
    if isinstance(spec, os.PathLike):
        return _load_from_directory(Path(spec), image_size, drop_path_rate)
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string or a path, got {type(spec).__name__}.")
    hub = {"token": token, "local_files_only": local_files_only}
    if spec == "imagenet":
        if architecture is None:
            raise ValueError(
                "load_backbone('imagenet') needs the timm architecture, e.g. "
                "load_backbone('imagenet', architecture='xcit_small_12_p8_224')."
            )
        pretrained_file = None
        if local_files_only or token is not None:
            pretrained_file = _imagenet_weights_file(architecture, cache_dir, hub)
        model = _create_backbone(
            architecture, image_size or 224, "imagenet", None, drop_path_rate, pretrained_file
        )
        return model.eval()
    if spec in PRETRAINED_BACKBONES:
        entry = PRETRAINED_BACKBONES[spec]
        return _load_from_hub(
            entry.repo_id,
            revision or entry.revision,
            cache_dir,
            image_size,
            drop_path_rate,
            hub,
            short_name=spec,
        )
    if spec.startswith("hf-hub:"):
        repo_id, _, spec_revision = spec[len("hf-hub:") :].partition("@")
        if spec_revision and revision is not None and spec_revision != revision:
            raise ValueError(
                f"Conflicting revisions: {spec!r} names {spec_revision!r} but "
                f"revision={revision!r}; give the revision once."
            )
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(
                f"{spec!r} is not a Hub model id; expected 'hf-hub:org/name' or "
                "'hf-hub:org/name@revision'."
            )
        return _load_from_hub(
            repo_id, revision or spec_revision or None, cache_dir, image_size, drop_path_rate, hub
        )
    if spec.startswith("local-dir:"):
        return _load_from_directory(Path(spec[len("local-dir:") :]), image_size, drop_path_rate)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_from_directory(path, image_size, drop_path_rate)
    names = ", ".join(repr(name) for name in PRETRAINED_BACKBONES)
    if "/" in spec or os.sep in spec or spec.startswith((".", "~")):
        raise BackboneNotFoundError(
            f"There is no directory {spec!r}. Pass an existing directory with {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}; for a Hugging Face Hub repository write 'hf-hub:{spec}'."
        )
    raise ValueError(
        f"Unknown pretrained backbone {spec!r}; expected one of {names}, 'imagenet' (with "
        "architecture=...), 'hf-hub:org/name[@revision]' or a local directory."
    )


def _load_from_directory(
    directory: Path, image_size: int | None, drop_path_rate: float
) -> nn.Module:
    directory = directory.expanduser()
    if not directory.is_dir():
        raise BackboneNotFoundError(
            f"There is no directory {str(directory)!r}; expected a directory with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME} (written by save_backbone or sparsam convert)."
        )
    config_path = directory / CONFIG_NAME
    weights_path = directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise BackboneNotFoundError(
            f"{directory} holds no {CONFIG_NAME}; expected a backbone in timm's Hub format "
            f"({CONFIG_NAME} + {WEIGHTS_NAME}, written by save_backbone or sparsam convert)."
        )
    if not weights_path.is_file():
        raise BackboneNotFoundError(
            f"{directory} holds no {WEIGHTS_NAME}." + _pickle_refusal(_pickle_files(directory))
        )
    source = {"source": "local-dir", "file": str(directory)}
    return _build(_read_config(config_path), weights_path, source, image_size, drop_path_rate)


def _load_from_hub(
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    image_size: int | None,
    drop_path_rate: float,
    hub: Mapping[str, Any],
    short_name: str | None = None,
) -> nn.Module:
    config_path = _download(repo_id, CONFIG_NAME, revision, cache_dir, hub, short_name)
    try:
        weights_path = _download(repo_id, WEIGHTS_NAME, revision, cache_dir, hub, short_name)
    except BackboneNotFoundError as error:
        cause = error.__cause__
        pickles = _pickle_files(config_path.parent)
        absent_on_hub = isinstance(cause, EntryNotFoundError) and not isinstance(
            cause, LocalEntryNotFoundError
        )
        if not (pickles or absent_on_hub):
            raise
        raise BackboneNotFoundError(
            f"Hugging Face Hub repository {repo_id!r} (revision {revision or 'main'!r}) "
            f"has no {WEIGHTS_NAME}." + _pickle_refusal(pickles)
        ) from cause
    hub_id = f"{repo_id}@{revision}" if revision else repo_id
    source = {"source": "hf-hub", "hf_hub_id": hub_id, "file": str(weights_path)}
    model = _build(_read_config(config_path), weights_path, source, image_size, drop_path_rate)
    model.sparsam_base_model = repo_id
    return model


def _imagenet_weights_file(
    architecture: str, cache_dir: str | os.PathLike[str] | None, hub: Mapping[str, Any]
) -> Path:
    if not timm.is_model(architecture):
        raise ValueError(
            f"backbone {architecture!r} is not a timm model name; see timm.list_models() for "
            "the names."
        )
    pretrained_cfg = timm.models.get_pretrained_cfg(architecture)
    repo_id = _imagenet_hub_id(architecture)
    filename = getattr(pretrained_cfg, "hf_hub_filename", None) or WEIGHTS_NAME
    if repo_id is None or Path(filename).suffix.lower() in PICKLE_SUFFIXES:
        raise BackboneNotFoundError(
            f"timm publishes no safetensors weights of {architecture!r} on the Hugging Face "
            "Hub, so they cannot be read with local_files_only=True or token=; load them "
            "without these arguments."
        )
    return _download(repo_id, filename, None, cache_dir, hub, None)


def _pickle_files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)


def _pickle_refusal(pickles: list[str]) -> str:
    found = f" It holds {', '.join(pickles)}, but" if pickles else ""
    return (
        f"{found} sparsam reads weights only from safetensors: pickle files "
        "(pytorch_model.bin, *.pt, *.pth) can run arbitrary code when loaded, so they are "
        f"refused. If you trust the file, load it yourself and write {WEIGHTS_NAME} with "
        "sparsam.save_backbone (the paper's checkpoints: `sparsam convert`)."
    )


def _download(
    repo_id: str,
    filename: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    hub: Mapping[str, Any],
    short_name: str | None,
) -> Path:
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


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable JSON config: {error}") from error
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise ValueError(f"{path} has no 'architecture'; expected timm's Hub config format.")
    return config


def _build(
    config: dict[str, Any],
    weights_path: Path,
    source: dict[str, str],
    image_size: int | None,
    drop_path_rate: float,
) -> nn.Module:
    architecture = config["architecture"]
    if not timm.is_model(architecture):
        raise ValueError(
            f"{weights_path.parent / CONFIG_NAME} names architecture {architecture!r}, which "
            f"timm {timm.__version__} does not know; update timm."
        )
    excluded = {"num_classes", "drop_path_rate"}
    model_args = {k: v for k, v in config.get("model_args", {}).items() if k not in excluded}
    training_args = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    model = timm.create_model(
        architecture, pretrained=False, num_classes=0, **model_args, **training_args
    )
    try:
        state_dict = safetensors.torch.load_file(str(weights_path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError
        raise ValueError(f"{weights_path} is not a readable safetensors file: {error}") from error
    pretrained_cfg = dict(config.get("pretrained_cfg", {}))
    if config.get("num_classes", pretrained_cfg.get("num_classes", 0)):
        # A classifier's weights (e.g. timm's own ImageNet repositories): drop its head only.
        classifier = pretrained_cfg.get("classifier") or "head"
        names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
        state_dict = {
            k: v for k, v in state_dict.items() if not any(k.startswith(f"{n}.") for n in names)
        }
    _load_state_dict_strictly(model, state_dict, str(weights_path), architecture, model_args)
    for key in ("input_size", "mean", "std"):
        if key in pretrained_cfg:
            pretrained_cfg[key] = tuple(pretrained_cfg[key])
    pretrained_cfg.update(architecture=architecture, num_classes=0, **source)
    model.pretrained_cfg = pretrained_cfg
    model.default_cfg = pretrained_cfg
    _record_model_args(model, architecture, model_args)
    current_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if (
        image_size is not None
        and not model_args.get("dynamic_img_size", False)
        and hasattr(model, "set_input_size")
        and current_size is not None
        and tuple(current_size) != (image_size, image_size)
    ):
        # A fixed-size ViT: resample its position embedding, as timm does for new sizes.
        model.set_input_size(img_size=(image_size, image_size))
        model.sparsam_model_args["img_size"] = image_size
        model.pretrained_cfg["input_size"] = (3, image_size, image_size)
    return model.eval()


def _load_state_dict_strictly(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    architecture: str,
    model_args: Mapping[str, Any],
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"The weights in {source} do not fit timm's {architecture!r} with arguments "
            f"{dict(model_args)}: {_listing('missing key', missing)}; "
            f"{_listing('unexpected key', unexpected)}; "
            f"{_listing('shape mismatch (file vs model)', mismatched)}."
        )
    model.load_state_dict(dict(state_dict), strict=True)


def _listing(what: str, items: list[str], shown: int = 10) -> str:
    if not items:
        return f"0 {what}s"
    more = f", … {len(items) - shown} more" if len(items) > shown else ""
    return f"{len(items)} {what}s ({', '.join(items[:shown])}{more})"


# --------------------------------------------------------------------------------------------
# The paper's checkpoints and the Hub
# --------------------------------------------------------------------------------------------


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
        If the file holds no ``backbone.`` keys, or its backbone keys or shapes do not fit
        ``architecture``; the message lists them and names the file.
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
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ValueError(
            f"{path} cannot be read as a torch state dict with torch.load(weights_only=True): "
            f"{error}"
        ) from error
    state_dict = _backbone_state_dict(raw, path)
    model = create_backbone(architecture, image_size=image_size, backbone_kwargs=model_kwargs)
    _load_state_dict_strictly(
        model, state_dict, str(path), architecture, getattr(model, "sparsam_model_args", {})
    )
    model.eval()
    data_config = {
        "mean": PAPER_MEAN,
        "std": PAPER_STD,
        "image_size": image_size,
        "interpolation": "bilinear",
    }
    architecture, model_args = _rebuild_arguments(model)
    training_data = entry.training_data if entry else "medical images (converted without --name)"
    start = "ImageNet weights"
    if architecture == "xcit_small_12_p8_224":
        start += " (timm's xcit_small_12_p8_224_dist, as in the original code)"
    card = _model_card(
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
            _imagenet_hub_id(f"{architecture}.fb_dist_in1k")
            if architecture == "xcit_small_12_p8_224"
            else None
        ),
    )
    return _write_model_directory(
        model, Path(directory), architecture, model_args, data_config, "cc-by-4.0", card
    )


def _backbone_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    found = _find_backbone_dict(raw, depth=3)
    if found is None:
        keys = list(raw) if isinstance(raw, Mapping) else []
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
    _read_config(path / CONFIG_NAME)
    api = HfApi(token=token)
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


def _hub_card_author(api: HfApi, repo_id: str, revision: str | None) -> str | None:
    """Who wrote the repository's README.md: ``"sparsam"``, ``"user"``, or None if absent."""
    if not api.file_exists(repo_id, README_NAME, repo_type="model", revision=revision):
        return None
    card = Path(api.hf_hub_download(repo_id, README_NAME, repo_type="model", revision=revision))
    return "sparsam" if _CARD_MARKER in card.read_text(encoding="utf-8") else "user"
