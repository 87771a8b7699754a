"""The settings of a training command: recipe, config file and options, params.json, --dry-run.

``sparsam pretrain`` (a `DinoFeaturizer`) and ``sparsam classify --classifier finetune`` (a
`SupervisedClassifier`) resolve their estimator's parameters the same way: the estimator's
defaults, then a recipe (``--recipe``), then a config file (``--config run.toml``), then the
options given on the command line, each layer overriding the one before. `resolve_settings`
merges the layers and validates the result with the estimator's own checks; every error names
the file and key (or the option) that set the offending value. `write_params` records the
resolved settings in ``params.json`` before training, `check_resume` compares a resumed run
with it, and `print_dry_run` times a few real training steps to estimate the run.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import os
import platform
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIG_SUFFIXES",
    "NOT_IDENTIFYING",
    "OPTION_FLAGS",
    "PARAMS_FILE",
    "Layer",
    "Settings",
    "add_settings_options",
    "check_checkpoints",
    "check_resume",
    "config_layer",
    "options_layer",
    "print_dry_run",
    "read_config",
    "resolve_settings",
    "seconds_per_step",
    "seed_default_layer",
    "write_params",
]

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
PARAMS_FILE = "params.json"
# Settings that change where and how fast a run goes, not what it learns: a resumed run may
# change them (the checkpoints' run identity does not hold them either).
NOT_IDENTIFYING = frozenset(
    {
        "verbose",
        "num_workers",
        "in_memory",
        "device",
        "compile",
        "checkpoint_dir",
        "checkpoint_every",
        "memory",
        "callbacks",
    }
)
# Parameters a file cannot set, and why.
_NOT_IN_FILES = {
    "callbacks": "it takes Python objects; pass callbacks to the estimator from Python",
}
_SKLEARN_MESSAGE = re.compile(
    r"^The '(?P<name>\w+)' parameter of \w+ must be (?P<expected>.*)\. Got (?P<got>.*) instead\.$",
    re.DOTALL,
)


@dataclass(frozen=True)
class Layer:
    """Parameter values from one place, and for each the words that name that place.

    Attributes
    ----------
    values : dict
        Parameter name to value.
    where : dict
        Parameter name to how an error names its origin, e.g. ``"run.toml: key 'epochs'"``
        or ``"option --epochs"``.
    """

    values: dict[str, Any]
    where: dict[str, str]


@dataclass
class Settings:
    """The resolved parameters of an estimator and where each came from.

    Attributes
    ----------
    estimator : type
        `DinoFeaturizer` or `SupervisedClassifier`.
    params : dict
        Every parameter of ``estimator``'s signature, resolved.
    sources : dict
        Parameter name to its origin (``"default"``, ``"recipe 'small'"``, a config file, an
        option).
    """

    estimator: type
    params: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The parameters as ``params.json`` holds them: tuples as lists, paths as strings."""
        return {name: _json_value(value) for name, value in self.params.items()}


def add_settings_options(parser: argparse.ArgumentParser, recipes: Sequence[str] = ()) -> None:
    """Add ``--config``, ``--recipe`` (when there are ``recipes``) and ``--dry-run``."""
    name = parser.prog.split()[-1]
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="estimator parameters as top-level keys of a .toml, .yaml or .yml file; options "
        "given here override it" + (", and it overrides --recipe" if recipes else ""),
    )
    if recipes:
        parser.add_argument(
            "--recipe",
            choices=list(recipes),
            help="start from a preset: small (sparsam.recipes.small_data_recipe, sized from the "
            "images found) or paper (the paper's settings, sparsam.recipes.paper_recipe)",
        )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"print the resolved settings, the images found, steps per epoch and a time "
        f"estimate from a few timed training steps, and exit without writing anything "
        f"(sparsam {name})",
    )


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level keys of a TOML or YAML config file.

    Parameters
    ----------
    path : str or path-like
        A ``.toml`` file (read with `tomllib`) or a ``.yaml``/``.yml`` file (needs PyYAML).

    Returns
    -------
    dict
        Key to value, as the file states them.

    Raises
    ------
    ValueError
        If the file does not exist, has another suffix, cannot be parsed (naming the line
        where the parser says), or its top level is not a table of keys.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(
            f"--config {str(path)!r}: expected a file ending in {', '.join(CONFIG_SUFFIXES)} "
            "(TOML or YAML), with estimator parameters as top-level keys."
        )
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise ValueError(f"--config {str(path)!r} {state}; expected a {suffix} config file.")
    text = path.read_text(encoding="utf-8")
    if suffix == ".toml":
        toml = _toml_reader(path)
        try:
            values = toml.loads(text)
        except toml.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML: {error}.") from None
    else:
        values = _read_yaml(path, text)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(
            f"{path}: the top level is a {type(values).__name__}; expected keys such as "
            "'epochs: 100' (parameter names of the estimator)."
        )
    return values


def _toml_reader(path: Path) -> Any:
    """The standard library's `tomllib` (Python 3.11+), or its backport ``tomli``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ValueError(
                f"{path}: reading TOML on Python {platform.python_version()} needs tomli "
                "(pip install tomli; Python 3.11 and later read TOML without it), or write the "
                "config as YAML."
            ) from None
    return tomllib


def _read_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ValueError(
            f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the config as "
            "TOML (.toml), which Python reads without it."
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None


def config_layer(estimator: type, path: str | os.PathLike[str]) -> Layer:
    """The parameters of ``estimator`` that the config file ``path`` sets.

    Lists become tuples (TOML and YAML have no tuples; the crop scales and colour jitter are
    tuples), and the string ``"none"`` becomes None for a parameter whose default is None
    or that accepts None (TOML has no null).

    Raises
    ------
    ValueError
        For a key that is no parameter of ``estimator`` (with the closest name, if any), or
        one that a file cannot set, naming the file and the key.
    """
    values = read_config(path)
    names = _parameter_names(estimator)
    for key in values:
        where = f"{path}: key {key!r}"
        if key in _NOT_IN_FILES:
            raise ValueError(f"{where}: cannot be set in a config file: {_NOT_IN_FILES[key]}.")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{where}: not a parameter of {estimator.__name__}{hint} (expected one of its "
                "parameters, e.g. epochs, batch_size, image_size, lr)"
            )
    accepts_none = _accepts_none(estimator)
    converted = {key: _from_file(value, key in accepts_none) for key, value in values.items()}
    return Layer(converted, {key: f"{path}: key {key!r}" for key in converted})


# The options of the training commands whose name is not ``--`` plus the parameter's (errors
# name the option the user typed).
OPTION_FLAGS = {"random_state": "--seed", "verbose": "--quiet"}


def seed_default_layer(command: str) -> tuple[str, Layer]:
    """The first layer of a training command's settings: ``random_state`` 0, as ``--seed``."""
    return f"default of sparsam {command}", options_layer({"random_state": 0}, OPTION_FLAGS)


def options_layer(values: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> Layer:
    """The parameters given as options; ``flags`` names the option of a parameter whose
    option is not ``--`` plus its name with dashes (``random_state``: ``--seed``)."""
    flags = flags or {}
    return Layer(
        dict(values),
        {name: "option " + flags.get(name, "--" + name.replace("_", "-")) for name in values},
    )


def resolve_settings(estimator: type, layers: Sequence[tuple[str, Layer]]) -> Settings:
    """``estimator``'s defaults overridden by ``layers`` in order, validated.

    Parameters
    ----------
    estimator : type
        The estimator class.
    layers : sequence of (str, Layer)
        Each layer's name for ``Settings.sources`` (``"recipe 'small'"``, ``"run.toml"``,
        ``"command line"``) and its values, the last one winning.

    Returns
    -------
    Settings

    Raises
    ------
    ValueError
        If a value fails the estimator's checks (``_validate_params`` with its declared
        constraints, then its tuple and ``backbone_kwargs`` checks), naming where the value
        was set: ``"run.toml: key 'epochs': must be an int in the range [0, inf), got
        'ten'"``.
    """
    params = {
        name: parameter.default
        for name, parameter in inspect.signature(estimator).parameters.items()
    }
    sources = dict.fromkeys(params, "default")
    where = {name: f"default {name}" for name in params}
    for source, layer in layers:
        for name, value in layer.values.items():
            params[name] = value
            sources[name] = source
            where[name] = layer.where[name]
    settings = Settings(estimator, params, sources)
    _validate(settings, where)
    return settings


def _validate(settings: Settings, where: dict[str, str]) -> None:
    from .._estimator import validate_backbone_kwargs

    instance = settings.estimator(**settings.params)
    try:
        instance._validate_params()
        instance._validate_tuples()
        validate_backbone_kwargs(instance.backbone_kwargs)
    except ValueError as error:
        raise ValueError(_located(str(error), where)) from None


def _located(message: str, where: dict[str, str]) -> str:
    """An estimator's error message, prefixed with the file and key of the value it names."""
    match = _SKLEARN_MESSAGE.match(message)
    if match and match["name"] in where:
        return f"{where[match['name']]}: must be {match['expected']}, got {match['got']}."
    named = [name for name in where if re.match(rf"{name}\b", message)]
    if not named:
        return message
    name = max(named, key=len)
    return f"{where[name]}: {message[len(name) :].lstrip(': ')}"


def check_checkpoints(checkpoint_dir: Path, resume: bool, prefix: str = "dino") -> Path | None:
    """The checkpoint ``--resume`` continues from; refuse to mix runs either way."""
    from ..training.checkpoints import list_checkpoints

    checkpoints = list_checkpoints(checkpoint_dir, prefix)
    if resume and not checkpoints:
        raise ValueError(
            f"--resume but no sparsam checkpoint in --checkpoint-dir {str(checkpoint_dir)!r}: "
            "expected the checkpoint directory of an earlier run (drop --resume to start one)."
        )
    if not resume and checkpoints:
        raise ValueError(
            f"--checkpoint-dir {str(checkpoint_dir)!r} already holds {len(checkpoints)} sparsam "
            f"checkpoint(s), newest {checkpoints[0].name}: pass --resume to continue that run, "
            "or choose another --checkpoint-dir (or --out) to start a new one."
        )
    return checkpoints[0] if checkpoints else None


def write_params(
    path: Path,
    command: str,
    settings: Settings,
    run: Mapping[str, Any],
    command_line: Sequence[str],
) -> None:
    """Write ``params.json``: the resolved settings, the run, versions and the command line.

    Written atomically (a crash leaves the previous file or none). An existing file that
    sparsam did not write is refused, never replaced.
    """
    from .._files import atomic_write

    if path.exists() and _read_params(path) is None:
        raise ValueError(
            f"{path} exists and was not written by sparsam; move it away or choose another "
            "output location."
        )
    record = {
        "written_by": "sparsam",
        "command": command,
        "command_line": ["sparsam", *command_line],
        "run": {name: _json_value(value) for name, value in run.items()},
        "estimator": settings.estimator.__name__,
        "settings": settings.as_json(),
        "sources": {
            name: source for name, source in settings.sources.items() if source != "default"
        },
        "versions": _versions(),
    }
    with atomic_write(path, "w") as file:
        json.dump(record, file, indent=2)
        file.write("\n")


def check_resume(path: Path, settings: Settings, run: Mapping[str, Any]) -> bool:
    """Refuse to resume when the run in ``path`` (``params.json``) was another one.

    Compares the run description (data, number of images) and every setting but those of
    `NOT_IDENTIFYING`. Returns False when there is no ``params.json`` to compare with (a
    run of an older sparsam); the checkpoints' own run identity still guards the resume.

    Raises
    ------
    ValueError
        Naming each differing key with its old and new value.
    """
    if not path.is_file():
        return False
    saved = _read_params(path)
    if saved is None:
        raise ValueError(f"{path} was not written by sparsam; cannot check --resume against it.")
    old = {**saved.get("run", {}), **saved.get("settings", {})}
    new = {
        **{name: _json_value(value) for name, value in run.items()},
        **settings.as_json(),
    }
    missing = object()
    changes = [
        f"{name}: {_shown(old.get(name, missing), missing)} → "
        f"{_shown(new.get(name, missing), missing)}"
        for name in sorted(old.keys() | new.keys())
        if name not in NOT_IDENTIFYING and old.get(name, missing) != new.get(name, missing)
    ]
    if changes:
        raise ValueError(
            f"--resume: the settings differ from those of the run recorded in {path}: "
            + "; ".join(changes)
            + ". Resume with that run's settings, or start a new run with another --out."
        )
    return True


def seconds_per_step(
    estimator: Any, images: Any, y: np.ndarray | None = None, *, steps: int = 3, **overrides: Any
) -> float:
    """Seconds per training step of ``estimator``, timed on a few of the real images.

    Fits a copy of ``estimator`` for 2 epochs of ``steps`` steps on ``steps × batch_size``
    images (the first ones, repeated if there are fewer; with labels ``y``, taken class by
    class in turn so that every class is present), nothing written, and divides the second
    epoch's time by ``steps``: the first pays the warm-up (memory allocation, kernel choice).

    Parameters
    ----------
    estimator : DinoFeaturizer or SupervisedClassifier
        Unfitted, with the resolved settings.
    images : list or ndarray
        The run's images.
    y : ndarray, optional
        Class labels of ``images`` (a supervised run): only labeled images are used.
    steps : int, default=3
        Steps per timed epoch.
    **overrides
        Further parameters of the copy (e.g. ``head_warmup_epochs=0``).

    Returns
    -------
    float
    """
    from sklearn.base import clone

    batch = int(estimator.batch_size)
    positions = np.arange(len(images)) if y is None else _class_by_class(y)
    picks = positions[np.arange(steps * batch) % len(positions)]
    sample = images[picks] if isinstance(images, np.ndarray) else [images[i] for i in picks]
    probe = clone(estimator).set_params(
        epochs=2, verbose=0, checkpoint_dir=None, callbacks=None, **overrides
    )
    with warnings.catch_warnings():
        # A few steps on a few images are no training: collapse warnings would mislead.
        warnings.simplefilter("ignore")
        if y is None:
            probe.fit(sample)
        else:
            probe.fit(sample, y[picks])
    return float(probe.history_["seconds"][-1]) / steps


def print_dry_run(
    command: str,
    settings: Settings,
    facts: Sequence[str],
    steps_per_epoch: int | None,
    timing: tuple[float, int, str] | None,
) -> None:
    """Print what ``--dry-run`` reports: settings with their source, facts, the estimate.

    ``steps_per_epoch`` is None for a run without training steps; ``timing`` is (seconds per
    step, steps timed, device), or None when nothing was timed.
    """
    print(f"sparsam {command} --dry-run: nothing is trained or written.")
    print(f"Resolved settings of {settings.estimator.__name__} (where each came from):")
    width = max(len(name) for name in settings.params)
    for name, value in settings.as_json().items():
        print(f"  {name:<{width}} = {json.dumps(value)}  [{settings.sources[name]}]")
    for fact in facts:
        print(fact)
    if steps_per_epoch is None:
        return
    epochs = int(settings.params["epochs"])
    print(f"Steps per epoch: {steps_per_epoch}")
    if timing is None:
        return
    seconds, steps, device = timing
    per_epoch = seconds * steps_per_epoch
    print(
        f"Estimated time (an estimate, from {steps} timed training steps of this model on "
        f"{device}; data loading of a streamed run and the per-epoch measurements add to it): "
        f"{seconds:.3g} s per step, {_duration(per_epoch)} per epoch, "
        f"{_duration(per_epoch * epochs)} for {epochs} epochs."
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _class_by_class(y: np.ndarray) -> np.ndarray:
    """Positions of the labeled entries of ``y``, the first of every class, then the second…"""
    labeled = np.array([label != -1 for label in y], dtype=bool)
    by_class: dict[Any, list[int]] = {}
    for position in np.flatnonzero(labeled):
        by_class.setdefault(y[position], []).append(int(position))
    rounds = max(len(members) for members in by_class.values())
    return np.array(
        [members[k] for k in range(rounds) for members in by_class.values() if k < len(members)]
    )


def _parameter_names(estimator: type) -> list[str]:
    return list(inspect.signature(estimator).parameters)


def _accepts_none(estimator: type) -> set[str]:
    constraints = getattr(estimator, "_parameter_constraints", {})
    return {
        name
        for name, parameter in inspect.signature(estimator).parameters.items()
        if parameter.default is None or None in constraints.get(name, [])
    }


def _from_file(value: Any, accepts_none: bool) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if accepts_none and isinstance(value, str) and value.strip().lower() == "none":
        return None
    return value


def _json_value(value: Any) -> Any:
    """``value`` as JSON holds it (tuples as lists, paths and devices as strings)."""
    if isinstance(value, (tuple, list)):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _shown(value: Any, missing: object) -> str:
    return "(not set)" if value is missing else json.dumps(value)


def _read_params(path: Path) -> dict[str, Any] | None:
    """The record in a ``params.json`` that sparsam wrote; None for any other file."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("written_by") != "sparsam":
        return None
    return record


def _versions() -> dict[str, str]:
    import timm
    import torch

    from ..version import __version__

    return {
        "sparsam": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": f"{sys.platform} {platform.machine()}",
    }
