"""Saved backbones follow the Hugging Face Hub's and timm's conventions, and publish no paths."""

import copy
import json

import huggingface_hub
import joblib
import pytest
import timm
import torch

import sparsam
from sparsam.backbones import (
    backbone_data_config,
    convert_checkpoint,
    create_backbone,
    save_backbone,
)

TINY_VIT = {"patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2}


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """Nothing here may reach the Hub: HF_HUB_OFFLINE=1 and an empty cache."""
    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def tiny_vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16_224", image_size=16, backbone_kwargs=TINY_VIT)


def test_model_card_parses_with_huggingface_hub_and_carries_the_metadata(tmp_path):
    path = save_backbone(tiny_vit(), tmp_path / "saved", license="mit", datasets=["org/cells"])
    card = huggingface_hub.ModelCard.load(path / "README.md")
    assert card.data.library_name == "timm" and card.data.license == "mit"
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert {"sparsam", "dino", "image-feature-extraction", "timm"} <= set(card.data.tags)
    assert card.data.datasets == ["org/cells"]
    assert card.data.base_model is None  # random initialisation: no base model


def test_model_card_keeps_sparsams_marker_with_the_save_id_of_config_json(tmp_path):
    path = save_backbone(tiny_vit(), tmp_path / "saved")
    save_id = json.loads((path / "config.json").read_text())["sparsam"]["save_id"]
    card = huggingface_hub.ModelCard.load(path / "README.md")
    assert card.content.rstrip().splitlines()[-1].startswith(f"<!-- sparsam-model-card {save_id}")


def test_converted_papers_backbone_names_timms_distilled_imagenet_xcit_as_base_model(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(
        "xcit_small_12_p8_224", num_classes=0, img_size=32, embed_dim=48, depth=2, num_heads=4
    )
    torch.save({f"backbone.{k}": v for k, v in model.state_dict().items()}, tmp_path / "bm.pt")
    path = convert_checkpoint(
        tmp_path / "bm.pt",
        tmp_path / "bm",
        name="bm",
        image_size=32,
        model_kwargs={"embed_dim": 48, "depth": 2, "num_heads": 4},
    )
    card = huggingface_hub.ModelCard.load(path / "README.md")
    assert card.data.base_model == "timm/xcit_small_12_p8_224.fb_dist_in1k"
    assert card.data.license == "cc-by-4.0"


@pytest.fixture
def featurizer_with_local_paths(tiny_params, tiny_images, tmp_path):
    """Fitted with pretrained=a local directory, checkpoint_dir and memory under tmp_path."""
    start = save_backbone(
        create_backbone(tiny_params["backbone"], image_size=16, backbone_kwargs=TINY_VIT),
        tmp_path / "start",
    )
    params = copy.deepcopy(tiny_params)
    params.update(
        pretrained=str(start),
        checkpoint_dir=tmp_path / "checkpoints",
        memory=joblib.Memory(tmp_path / "cache", verbose=0),
    )
    return sparsam.DinoFeaturizer(**params).fit(tiny_images)


def test_no_local_path_is_published_in_the_card_or_config(featurizer_with_local_paths, tmp_path):
    path = save_backbone(featurizer_with_local_paths, tmp_path / "published")
    for name in ("README.md", "config.json"):
        text = (path / name).read_text()
        assert str(tmp_path) not in text, name
    card = (path / "README.md").read_text()
    for parameter in ("pretrained", "checkpoint_dir", "memory"):
        assert f"| `{parameter}` | *a local directory (not published)* |" in card
    assert "| `out_dim` | `64` |" in card


@pytest.mark.parametrize(
    ("architecture", "backbone_kwargs", "image_size"),
    [
        ("vit_tiny_patch16_224", TINY_VIT, 16),
        ("xcit_small_12_p8_224", {"embed_dim": 32, "depth": 1, "num_heads": 2}, 32),
        ("resnet18", {}, None),
    ],
)
def test_data_config_is_timms_resolved_config_with_sparsams_bilinear_resize(
    architecture, backbone_kwargs, image_size
):
    model = create_backbone(architecture, image_size=image_size, backbone_kwargs=backbone_kwargs)
    resolved = timm.data.resolve_model_data_config(model)
    config = backbone_data_config(model)
    assert config["mean"] == tuple(resolved["mean"]) and config["std"] == tuple(resolved["std"])
    assert config["image_size"] == resolved["input_size"][-1]
    assert config["interpolation"] == "bilinear"
