"""``sparsam pretrain``: DINO self-supervised pretraining of a backbone on your images."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..training.logs import HISTORY_FILE, CSVLogger, TensorBoardLogger
from .images import (
    DATA_HELP,
    SKIPPED_REPORT,
    add_on_error_option,
    reporting_skipped,
    resolve_images,
)
from .settings import (
    OPTION_FLAGS,
    PARAMS_FILE,
    Layer,
    Settings,
    add_settings_options,
    check_checkpoints,
    check_resume,
    config_layer,
    options_layer,
    print_dry_run,
    resolve_settings,
    seconds_per_step,
    seed_default_layer,
    write_params,
)

__all__ = ["add_parser", "pretrain_parameters", "pretrain_settings", "run", "run_pretrain"]

# `sparsam pretrain` options that are DinoFeaturizer parameters of the same name; those the
# user leaves out keep the featurizer's defaults.
_PRETRAIN_PARAMETERS = (
    "backbone",
    "backbone_kwargs",
    "pretrained",
    "image_size",
    "local_crop_size",
    "local_crops",
    "epochs",
    "batch_size",
    "lr",
    "out_dim",
    "koleo_weight",
    "device",
    "precision",
    "num_workers",
    "checkpoint_every",
    "on_error",
)
_IN_MEMORY = {"auto": "auto", "yes": True, "no": False}
_COMPILE = _IN_MEMORY


def _json_object(text: str) -> dict[str, Any]:
    """argparse type of ``--backbone-kwargs``: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({error.msg}); expected an object such as "
            '\'{"depth": 4, "embed_dim": 96}\''
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a JSON {type(value).__name__}; expected an object such as "
            '\'{"depth": 4, "embed_dim": 96}\''
        )
    return value


def _featurizer_default(name: str) -> str:
    """``"(default: ...)"`` of the ``DinoFeaturizer`` parameter ``name``, for a help text."""
    import inspect

    from ..featurizer import DinoFeaturizer

    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(DinoFeaturizer).parameters.items()
    }
    return f"(default: {defaults[name]})" if name in defaults else ""


def add_parser(commands: Any) -> None:
    """Add the ``pretrain`` sub-parser to ``commands``, the ``sparsam`` parser's sub-parsers."""
    default = _featurizer_default
    pretrain = commands.add_parser(
        "pretrain",
        help="DINO self-supervised pretraining on your unlabeled images",
        description=(
            "Train a timm backbone with DINO on the images of DATA (DINO reads no labels) "
            "and write it to --out in timm's Hub format (config.json, model.safetensors, "
            "README.md), with the fitted featurizer as featurizer.joblib. Checkpoints go to "
            "--checkpoint-dir; --resume continues an interrupted run. For several GPUs: "
            "torchrun --nproc-per-node N -m sparsam pretrain ... (--batch-size is per process)."
        ),
    )
    pretrain.add_argument("data", metavar="DATA", help=DATA_HELP)
    pretrain.add_argument("--out", required=True, metavar="DIR", help="output directory")
    pretrain.add_argument("--root", default=None, help="the download a data set name reads")
    pretrain.add_argument(
        "--labels",
        metavar="CSV",
        help="labels of some images (columns path,label): DINO never sees them; they choose "
        "the epoch whose features classify them best, and history.csv gets their kNN "
        "accuracy per epoch",
    )
    pretrain.add_argument(
        "--backbone", metavar="NAME", help=f"timm model name {default('backbone')}"
    )
    pretrain.add_argument(
        "--backbone-kwargs",
        type=_json_object,
        metavar="JSON",
        help="timm.create_model arguments as a JSON object, e.g. '{\"depth\": 4}'",
    )
    pretrain.add_argument(
        "--pretrained",
        metavar="SPEC",
        help="starting weights: imagenet, bm, endo, isic, hf-hub:org/name or a directory "
        "(default: random)",
    )
    integers = {
        "--image-size": "side of the global crops (default: the backbone's input size)",
        "--local-crop-size": f"side of the local crops {default('local_crop_size')}",
        "--local-crops": f"local crops per image {default('local_crops')}",
        "--epochs": f"DINO epochs {default('epochs')}",
        "--batch-size": f"images per step and process {default('batch_size')}",
        "--out-dim": f"prototypes of the DINO head {default('out_dim')}",
        "--num-workers": f"DataLoader workers that decode images {default('num_workers')}",
        "--checkpoint-every": f"steps between mid-epoch checkpoints {default('checkpoint_every')}",
    }
    for option, text in integers.items():
        pretrain.add_argument(option, type=int, metavar="N", help=text)
    _add_training_options(pretrain)


def _add_training_options(pretrain: argparse.ArgumentParser) -> None:
    """The options after the integers: loss, devices, data loading, checkpoints, seed."""
    default = _featurizer_default
    pretrain.add_argument(
        "--lr", type=float, help=f"base learning rate for a batch of 256 {default('lr')}"
    )
    pretrain.add_argument(
        "--koleo-weight",
        type=float,
        metavar="WEIGHT",
        help=f"weight of the KoLeo regulariser, 0 for the paper's loss {default('koleo_weight')}",
    )
    pretrain.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    pretrain.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="(default: auto)")
    pretrain.add_argument(
        "--in-memory",
        choices=sorted(_IN_MEMORY),
        help="decode all images into memory once (yes), stream them from disk each epoch "
        "(no), or decide by their size (auto, the default)",
    )
    pretrain.add_argument(
        "--compile",
        choices=sorted(_COMPILE),
        help="torch.compile the training forward: yes, no or auto (the default; compiles only "
        "where it was measured to pay, so far nowhere)",
    )
    pretrain.add_argument(
        "--checkpoint-dir", metavar="DIR", help="where checkpoints go (default: OUT/checkpoints)"
    )
    pretrain.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --checkpoint-dir (same DATA and options)",
    )
    pretrain.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="random_state; --resume needs the same (default: 0)",
    )
    add_on_error_option(pretrain)
    pretrain.add_argument(
        "--tensorboard",
        nargs="?",
        const="",
        metavar="DIR",
        help="also write TensorBoard event files, one scalar per history column and epoch, "
        "to DIR (default: OUT/tensorboard); needs pip install 'sparsam[tensorboard]'",
    )
    pretrain.add_argument(
        "--quiet", action="store_true", help="no progress bars or per-epoch progress lines"
    )
    add_settings_options(pretrain, recipes=("small", "paper"))


def pretrain_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The DinoFeaturizer parameters the user gave on the ``pretrain`` command line."""
    params = {
        name: getattr(args, name)
        for name in _PRETRAIN_PARAMETERS
        if getattr(args, name) is not None
    }
    if args.in_memory is not None:
        params["in_memory"] = _IN_MEMORY[args.in_memory]
    if args.compile is not None:
        params["compile"] = _COMPILE[args.compile]
    if args.checkpoint_dir is not None:
        params["checkpoint_dir"] = args.checkpoint_dir
    if args.seed is not None:
        params["random_state"] = args.seed
    if args.quiet:
        params["verbose"] = 0
    return params


def pretrain_settings(args: argparse.Namespace, images: Any) -> Settings:
    """The resolved DinoFeaturizer settings: the command's seed 0 < ``--recipe`` <
    ``--config`` < the options given."""
    from ..featurizer import DinoFeaturizer

    layers: list[tuple[str, Layer]] = [seed_default_layer("pretrain")]
    config = config_layer(DinoFeaturizer, args.config) if args.config else None
    options = options_layer(pretrain_parameters(args), OPTION_FLAGS)
    if args.recipe is not None:
        given = {**(config.values if config else {}), **options.values}
        recipe = _recipe(args.recipe, images, given.get("image_size"))
        layers.append(
            (f"recipe {args.recipe!r}", Layer(recipe, _recipe_where(args.recipe, recipe)))
        )
    if config is not None:
        layers.append((str(args.config), config))
    layers.append(("command line", options))
    return resolve_settings(DinoFeaturizer, layers)


def _recipe(name: str, images: Any, image_size: int | None) -> dict[str, Any]:
    """The parameters of ``--recipe name``; ``small`` is sized from the images found."""
    from ..recipes import paper_recipe, small_data_recipe

    if name == "paper":
        return paper_recipe()
    if image_size is None:
        from ..data import as_image_source

        first = as_image_source(images[:1])[0]
        image_size = int(max(first.shape[-2:]))
    return small_data_recipe(image_size=int(image_size), n_images=len(images))


def _recipe_where(name: str, recipe: dict[str, Any]) -> dict[str, str]:
    return {key: f"--recipe {name}: key {key!r}" for key in recipe}


def run(args: argparse.Namespace) -> None:
    """Run ``sparsam pretrain`` as parsed into ``args``."""
    images = resolve_images(args.data, args.root)
    labels = None
    if args.labels:
        from ..data.labels import class_indices, read_labels

        labels, _ = class_indices(read_labels(args.labels, images))
    settings = pretrain_settings(args, images)
    if args.dry_run:
        _dry_run(args, settings, images)
        return
    params = dict(settings.params)
    run_pretrain(
        args.data,
        args.out,
        root=args.root,
        params=params,
        checkpoint_dir=params.pop("checkpoint_dir"),
        resume=args.resume,
        tensorboard=args.tensorboard,
        settings=settings,
        command_line=getattr(args, "argv", sys.argv[1:]),
        images=images,
        labels=labels,
    )


def _dry_run(args: argparse.Namespace, settings: Settings, images: Any) -> None:
    """Print the resolved settings, the images, steps per epoch and a timed estimate."""
    from .._estimator import resolve_device

    params = settings.params
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    batch_size = min(int(params["batch_size"]), len(images) // processes)
    steps_per_epoch = len(images) // max(1, batch_size * processes)
    facts = [
        f"Images found: {len(images)} in {args.data}",
        f"Processes: {processes}, {batch_size} images per step and process "
        "(the last incomplete batch of an epoch is dropped, as in DINO)",
    ]
    timing = None
    if steps_per_epoch:
        estimator = settings.estimator(**params)
        # No head warm-up in the timed steps: they time the full step, backbone included.
        seconds = seconds_per_step(
            estimator, images, head_warmup_epochs=0, memory=None, batch_size=batch_size
        )
        timing = (seconds, 3, str(resolve_device(params["device"])))
    print_dry_run("pretrain", settings, facts, steps_per_epoch, timing)


def _run_description(data: Any, root: Any, images: Any) -> dict[str, Any]:
    """What ``params.json`` records of the data, besides the settings."""
    path = Path(data).expanduser()
    described = str(path.absolute()) if path.exists() else str(data)
    return {
        "data": described,
        "root": None if root is None else str(Path(root).absolute()),
        "n_images": len(images),
    }


def run_pretrain(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    params: dict[str, Any] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    tensorboard: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    command_line: Sequence[str] = (),
    images: Any = None,
    labels: np.ndarray | None = None,
) -> Any:
    """DINO pretraining of a backbone on the images of ``data``; writes the result to ``out``.

    ``out`` receives ``params.json`` before training (the resolved settings, the data, the
    versions of sparsam, torch, timm and Python, and the command line), then the teacher
    backbone in timm's Hub format (``config.json``,
    ``model.safetensors`` and a model card, written by ``save_backbone``), the fitted
    featurizer as ``featurizer.joblib`` and, rewritten after every epoch, the training
    history as ``history.csv`` (`sparsam.training.logs.CSVLogger`). Under ``torchrun`` every
    process joins the process group (``sparsam.training.distributed.init_from_environment``)
    and trains on its own device; only rank 0 writes ``out`` and prints.

    Parameters
    ----------
    data : str or path-like
        Anything `resolve_images` accepts.
    out : str or path-like
        Output directory (created if missing); sparsam's files in it are replaced, other files
        are left alone.
    root : str or path-like, optional
        The download a data set name reads.
    params : dict, optional
        ``DinoFeaturizer`` parameters; its defaults for the others. ``checkpoint_dir`` is set
        here.
    checkpoint_dir : str or path-like, optional
        Where training writes its checkpoints; ``out/checkpoints`` when omitted.
    resume : bool, default=False
        Continue from the newest checkpoint in ``checkpoint_dir``. Without it, a directory
        that already holds checkpoints is refused, so that no run continues or overwrites
        another by accident; with it, a directory without checkpoints is refused, and so are
        settings that differ from those in ``out/params.json`` in anything that identifies
        the run (`sparsam.cli.settings.check_resume`).
    tensorboard : str or path-like, optional
        Also write TensorBoard event files there (`sparsam.training.logs.TensorBoardLogger`);
        ``""`` means ``out/tensorboard``. Needs the ``tensorboard`` package.
    settings : Settings, optional
        The resolved settings (`pretrain_settings`) that ``params.json`` records with their
        sources; resolved from ``params`` when omitted.
    command_line : sequence of str, default=()
        The arguments of ``sparsam`` that ``params.json`` records.
    images : list or ndarray, optional
        ``resolve_images(data, root)``, when the caller has it already.
    labels : ndarray of int, optional
        One label per image, ``-1`` for unlabeled ones: ``DinoFeaturizer.fit``'s ``y``, which
        chooses the snapshot and adds the kNN accuracy to the history, never the DINO loss.

    Returns
    -------
    featurizer : DinoFeaturizer
        The fitted featurizer (on every rank).
    """
    import torch.distributed

    from .._files import check_writable_directory
    from ..featurizer import DinoFeaturizer
    from ..training import distributed

    out = Path(out)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out / "checkpoints"
    params = dict(params or {})
    loggers = _loggers(out, tensorboard)
    if settings is None:
        settings = resolve_settings(
            DinoFeaturizer,
            [("params", options_layer({**params, "checkpoint_dir": checkpoint_dir}))],
        )
    was_distributed = distributed.is_distributed()
    device = distributed.init_from_environment(str(params.get("device", "auto")))
    joined_here = distributed.is_distributed() and not was_distributed
    try:
        if distributed.is_distributed():
            # Each rank trains on the device torchrun's LOCAL_RANK gives it.
            params["device"] = str(device)
        if not distributed.is_main_process():
            params["verbose"] = 0  # one progress bar, not one per process
        if images is None:
            images = resolve_images(data, root)
        run_description = _run_description(data, root, images)
        if labels is not None:
            run_description["n_labeled"] = int((labels != -1).sum())
        if resume:
            distributed.on_main_process(
                lambda: check_resume(out / PARAMS_FILE, settings, run_description)
            )
        newest = distributed.on_main_process(lambda: check_checkpoints(checkpoint_dir, resume))
        # Before training, so that a read-only or misspelt --out fails now, not after hours.
        distributed.on_main_process(lambda: check_writable_directory(out, "--out"))
        distributed.on_main_process(
            lambda: write_params(
                out / PARAMS_FILE, "pretrain", settings, run_description, command_line
            )
        )
        callbacks = [*(params.pop("callbacks", None) or ()), *loggers]
        featurizer = DinoFeaturizer(**params, checkpoint_dir=checkpoint_dir, callbacks=callbacks)
        if distributed.is_main_process():
            print(
                f"DINO on {len(images)} images from {data}"
                + (f", resuming from {newest}" if newest is not None else "")
                + (f", {distributed.world_size()} processes (torchrun)" if joined_here else "")
            )
        started = time.perf_counter()
        with reporting_skipped(out / SKIPPED_REPORT):
            featurizer.fit(images, labels)
        minutes = (time.perf_counter() - started) / 60
        # The loggers name this machine's paths: not part of the recipe the saved featurizer
        # and the model card record.
        featurizer.set_params(callbacks=None)
        if distributed.is_main_process():
            _write_outputs(featurizer, out, checkpoint_dir, minutes)
    finally:
        if joined_here:
            torch.distributed.destroy_process_group()
    return featurizer


def _write_outputs(featurizer: Any, out: Path, checkpoint_dir: Path, minutes: float) -> None:
    """The backbone in timm's Hub format and the fitted featurizer in ``out``, said on stdout."""
    import joblib

    from .._files import atomic_write
    from ..backbones import save_backbone

    save_backbone(featurizer, out)
    with atomic_write(out / "featurizer.joblib") as file:
        joblib.dump(featurizer, file)
    print(f"Wrote the backbone to {out} (config.json, model.safetensors, README.md)")
    print(f"Wrote the fitted featurizer to {out / 'featurizer.joblib'}")
    print(f"Checkpoints are in {checkpoint_dir}")
    if featurizer.history_:
        print(f"Wrote the training history (a row per epoch) to {out / HISTORY_FILE}")
    print(_training_summary(featurizer, minutes))


def _loggers(out: Path, tensorboard: str | os.PathLike[str] | None) -> list[Any]:
    """``out/history.csv`` and, when asked for, TensorBoard event files: the run's loggers."""
    loggers = [CSVLogger(out / HISTORY_FILE)]
    if tensorboard is not None:
        try:
            loggers.append(TensorBoardLogger(tensorboard or out / "tensorboard"))
        except ImportError as error:
            raise ValueError(f"--tensorboard: {error}") from None
    return loggers


def _training_summary(featurizer: Any, minutes: float) -> str:
    history = featurizer.history_
    if not history.get("loss"):
        return f"No DINO training (epochs={featurizer.epochs}): weights of {featurizer.pretrained}."
    return (
        f"DINO: {len(history['loss'])} epochs in {minutes:.1f} min; final loss "
        f"{history['loss'][-1]:.3f}, teacher entropy {history['teacher_entropy'][-1]:.2f} "
        f"(ln(out_dim) = {np.log(featurizer.out_dim):.2f} means collapse); RankMe "
        f"{featurizer.initial_rankme_:.1f} untrained -> {history['rankme'][-1]:.1f} "
        f"(label-free, higher is better)"
    )
