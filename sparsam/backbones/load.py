"""Loading a backbone from a local directory, the Hub or timm's ImageNet weights."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
from torch import nn

from .create import create_timm_backbone, imagenet_hub_id, record_model_args
from .hub_download import download
from .hub_format import CONFIG_NAME, WEIGHTS_NAME, BackboneNotFoundError, read_config
from .registry import PRETRAINED_BACKBONES

# Files that can only be read by unpickling, which can run arbitrary code: never from a hub.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".tar")


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
        model = create_timm_backbone(
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
    if path.exists():
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
    if directory.is_file():
        raise BackboneNotFoundError(_file_for_directory(directory))
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
    return _build(read_config(config_path), weights_path, source, image_size, drop_path_rate)


def _file_for_directory(path: Path) -> str:
    """Why a file was refused where a backbone directory belongs, and what to pass instead."""
    if path.name in (CONFIG_NAME, WEIGHTS_NAME):
        return (
            f"{path} is a file; pass the directory that holds it, {path.parent}, with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}."
        )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return f"{path} is a pickle file, not a backbone directory." + _pickle_refusal([])
    return (
        f"{path} is a file; expected a directory with {CONFIG_NAME} and {WEIGHTS_NAME} "
        "(written by save_backbone, sparsam pretrain or sparsam convert). A featurizer.joblib "
        "is read by sparsam embed --backbone and sparsam evaluate --featurizer."
    )


def _load_from_hub(
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    image_size: int | None,
    drop_path_rate: float,
    hub: Mapping[str, Any],
    short_name: str | None = None,
) -> nn.Module:
    config_path = download(repo_id, CONFIG_NAME, revision, cache_dir, hub, short_name)
    try:
        weights_path = download(repo_id, WEIGHTS_NAME, revision, cache_dir, hub, short_name)
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
    model = _build(read_config(config_path), weights_path, source, image_size, drop_path_rate)
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
    repo_id = imagenet_hub_id(architecture)
    filename = getattr(pretrained_cfg, "hf_hub_filename", None) or WEIGHTS_NAME
    if repo_id is None or Path(filename).suffix.lower() in PICKLE_SUFFIXES:
        raise BackboneNotFoundError(
            f"timm publishes no safetensors weights of {architecture!r} on the Hugging Face "
            "Hub, so they cannot be read with local_files_only=True or token=; load them "
            "without these arguments."
        )
    return download(repo_id, filename, None, cache_dir, hub, None)


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
    try:
        model = timm.create_model(
            architecture, pretrained=False, num_classes=0, **model_args, **training_args
        )
    except TypeError as error:  # an argument this timm's model does not take
        raise ValueError(
            f"{weights_path.parent / CONFIG_NAME}: timm {timm.__version__} cannot build "
            f"{architecture!r} with its model_args ({error}); it was written by a newer timm "
            "or sparsam: update timm."
        ) from error
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
    load_state_dict_strictly(model, state_dict, str(weights_path), architecture, model_args)
    for key in ("input_size", "mean", "std"):
        if key in pretrained_cfg:
            pretrained_cfg[key] = tuple(pretrained_cfg[key])
    pretrained_cfg.update(architecture=architecture, num_classes=0, **source)
    model.pretrained_cfg = pretrained_cfg
    model.default_cfg = pretrained_cfg
    record_model_args(model, architecture, model_args)
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


def load_state_dict_strictly(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    architecture: str,
    model_args: Mapping[str, Any],
) -> None:
    """Load ``state_dict`` into ``model``; a ValueError lists every key or shape that differs."""
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
