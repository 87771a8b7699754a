"""The model card (README.md) of a saved backbone, in the Hugging Face Hub's schema."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .registry import PRETRAINED_BACKBONES


def model_card_text(
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
    """The model card, with metadata from huggingface_hub's ModelCardData (the Hub's schema).

    ``recipe`` and ``history`` (a featurizer's parameters and ``history_``) fill the training
    section, ``training_text`` opens it; ``repo_id`` is the repository the loading examples
    name (a placeholder when None).
    """
    metadata = ModelCardData(
        library_name="timm",
        license=license,
        pipeline_tag="image-feature-extraction",
        tags=["image-feature-extraction", "timm", "sparsam", "dino"],
        base_model=base_model,
        datasets=list(datasets) or None,
    )
    lines = [f"# {title}", "", description, ""]
    lines += _details_section(architecture, model_args, data_config, num_features, license)
    lines += _training_section(training_text, recipe, history)
    lines += _loading_section(repo_id or "ORG/NAME", int(data_config["image_size"]), num_features)
    if citation:
        lines += ["## Citation", "", citation, ""]
    body = "\n".join(lines)
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}"))


def _details_section(
    architecture: str,
    model_args: Mapping[str, Any],
    data_config: Mapping[str, Any],
    num_features: int,
    license: str,
) -> list[str]:
    """What the model is and what it takes: architecture, output, preprocessing, license."""
    size = int(data_config["image_size"])
    mean = tuple(round(float(v), 4) for v in data_config["mean"])
    std = tuple(round(float(v), 4) for v in data_config["std"])
    return [
        "## Model details",
        "",
        f"- **Architecture:** `{architecture}` (timm), arguments `{dict(model_args)}`",
        f"- **Output:** CLS embedding of {num_features} features (`num_classes=0`)",
        f"- **Input:** RGB images resized to {size}×{size} ({data_config.get('interpolation')}), "
        f"scaled to [0, 1], normalised with mean {mean} and std {std}",
        f"- **License:** {license}",
        "",
    ]


def _training_section(
    training_text: str | None,
    recipe: Mapping[str, Any] | None,
    history: Mapping[str, Any] | None,
) -> list[str]:
    """How the weights were trained: the given text, the featurizer's parameters and history."""
    lines = ["## Training", ""]
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
    return lines


def _loading_section(hub_id: str, size: int, num_features: int) -> list[str]:
    """How to load the backbone from ``hub_id``, with sparsam and with plain timm."""
    return [
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
