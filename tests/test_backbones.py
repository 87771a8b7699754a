"""Backbones in timm's Hub format: save, load (local directory and offline Hub cache), convert
the paper's checkpoints, push. Nothing here touches the network: every test runs with
HF_HUB_OFFLINE=1 against a Hub cache it builds itself."""

import hashlib
import json
import os
import re
import socket
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub.utils import RepositoryNotFoundError, RevisionNotFoundError
from sklearn.exceptions import NotFittedError

import sparsam
import sparsam.backbones.hub_download
import sparsam.backbones.push
from sparsam.backbones import (
    PRETRAINED_BACKBONES,
    BackboneNotFoundError,
    backbone_data_config,
    convert_checkpoint,
    create_backbone,
    load_backbone,
    push_backbone,
    save_backbone,
)
from sparsam.cli import main

TINY_VIT = {"patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2}
# Two XCiT blocks 48 wide: the paper's architecture family, built in milliseconds.
SMALL_XCIT = {"embed_dim": 48, "depth": 2, "num_heads": 4}
REPO_ID = "someone/tiny-dino"


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty default cache under tmp_path; yields that cache."""
    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads the environment once, at import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def build_hub_cache(cache, repo_id, files, *, refs=("main",), symlinks=True):
    """Lay out ``files`` ({name: bytes}) as huggingface_hub's cache does; returns the commit.

    ``models--org--name/blobs/<sha256>``, ``snapshots/<commit>/<name>`` (relative symlinks to
    the blobs, or plain copies) and ``refs/<ref>`` holding the commit hash.
    """
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + files[name])
    commit = digest.hexdigest()
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        if symlinks:
            (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
        else:
            (snapshot / name).write_bytes(content)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return commit


def directory_files(directory):
    return {path.name: path.read_bytes() for path in Path(directory).iterdir()}


def tiny_vit(seed=0):
    torch.manual_seed(seed)
    return create_backbone("vit_tiny_patch16_224", image_size=16, backbone_kwargs=TINY_VIT).eval()


def embed(model, images):
    with torch.no_grad():
        return model.eval()(images)


@pytest.fixture
def images():
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def backbone():
    return tiny_vit()


@pytest.fixture
def saved(backbone, tmp_path):
    return save_backbone(backbone, tmp_path / "saved")


def small_xcit_checkpoint(path, *, wrap=lambda state: state, model_kwargs=SMALL_XCIT):
    """A checkpoint laid out like the paper's: backbone.* keys plus DINO head keys."""
    torch.manual_seed(0)
    model = timm.create_model("xcit_nano_12_p8_224", num_classes=0, img_size=32, **model_kwargs)
    state = {f"backbone.{key}": value for key, value in model.state_dict().items()}
    state["head.mlp.0.weight"] = torch.randn(16, 48)
    state["head.last_layer.weight_g"] = torch.ones(64, 1)
    torch.save(wrap(state), path)
    return model.eval()


# ---------------------------------------------------------------------------- creation


def test_create_backbone_records_architecture_and_rebuild_arguments(backbone):
    assert backbone.sparsam_architecture == "vit_tiny_patch16_224"
    assert backbone.sparsam_model_args == {"img_size": 16, "dynamic_img_size": True, **TINY_VIT}


def test_package_exports_the_backbone_functions():
    for name in ("load_backbone", "save_backbone", "push_backbone", "DinoFeaturizer"):
        assert name in sparsam.__all__ and hasattr(sparsam, name)


def test_registry_names_the_papers_three_backbones():
    assert set(PRETRAINED_BACKBONES) == {"bm", "endo", "isic"}
    assert len({entry.repo_id for entry in PRETRAINED_BACKBONES.values()}) == 3
    for entry in PRETRAINED_BACKBONES.values():
        assert entry.architecture == "xcit_small_12_p8_224" and entry.image_size == 256
        assert entry.mean == entry.std == (0.5, 0.5, 0.5)
        assert entry.revision and entry.training_data


# ---------------------------------------------------------------------------- saving


def test_saving_works_with_timms_before_1_0_30_which_open_the_config_path(
    backbone, tmp_path, monkeypatch
):
    # timm 1.0.29 (a GPU machine's) did `config_path.open("w")`: a str path failed there.
    import timm.models._hub as hub

    original = hub.save_config_for_hf

    def old_timm_save_config(model, config_path, **kwargs):
        with config_path.open("w") as file:
            file.write("{}")
        return original(model, config_path, **kwargs)

    monkeypatch.setattr(hub, "save_config_for_hf", old_timm_save_config)
    saved = save_backbone(backbone, tmp_path / "saved")
    assert json.loads((saved / "config.json").read_text())["architecture"]


def test_saved_config_is_timm_hub_format_with_rebuild_arguments_and_preprocessing(saved):
    config = json.loads((saved / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert config["num_classes"] == 0 and config["num_features"] == 32
    args = config["model_args"]
    assert args["patch_size"] == 4 and args["depth"] == 1 and args["embed_dim"] == 32
    assert args["dynamic_img_size"] is True and args["img_size"] in (16, [16, 16])
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 16, 16] and cfg["crop_pct"] == 1.0
    assert cfg["interpolation"] == "bilinear" and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert "tag" not in cfg  # timm's ImageNet tag would misdescribe these weights
    assert sorted(p.name for p in saved.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]


def test_model_card_front_matter_names_library_tags_and_license(saved):
    card = (saved / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert "library_name: timm" in front_matter and "license: apache-2.0" in front_matter
    for tag in ("image-feature-extraction", "timm", "sparsam", "dino"):
        assert f"- {tag}\n" in front_matter
    assert "load_backbone(" in card and "timm.create_model(" in card


def test_save_without_model_card_writes_no_readme(backbone, tmp_path):
    path = save_backbone(backbone, tmp_path / "plain", model_card=False)
    assert not (path / "README.md").exists()


def test_saved_featurizer_card_records_recipe_and_history(fitted_featurizer, tmp_path, images):
    path = save_backbone(fitted_featurizer, tmp_path / "featurizer", repo_id=REPO_ID)
    card = (path / "README.md").read_text()
    history = fitted_featurizer.history_
    assert "| `out_dim` | `64` |" in card and "| `image_size` | `16` |" in card
    assert f"DINO ran {len(history['loss'])} epochs" in card
    assert f"final loss {history['loss'][-1]:.4f}" in card
    assert f"final teacher entropy {history['teacher_entropy'][-1]:.3f}" in card
    assert f"final RankMe {history['rankme'][-1]:.1f} (best {max(history['rankme']):.1f})" in card
    assert f'"hf-hub:{REPO_ID}"' in card
    loaded = load_backbone(path)
    assert torch.equal(embed(loaded, images), embed(fitted_featurizer.backbone_, images))
    assert backbone_data_config(loaded) == fitted_featurizer.data_config_


def test_save_rejects_objects_that_are_not_models(tmp_path):
    with pytest.raises(TypeError, match=r"DinoFeaturizer or a timm nn.Module"):
        save_backbone({"weights": 1}, tmp_path / "x")


def test_saving_an_unfitted_featurizer_raises_not_fitted(tiny_params, tmp_path):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        save_backbone(sparsam.DinoFeaturizer(**tiny_params), tmp_path / "x")


def test_save_replaces_an_existing_saved_model(tmp_path, images):
    target = save_backbone(tiny_vit(seed=0), tmp_path / "model")
    replacement = tiny_vit(seed=1)
    save_backbone(replacement, target)
    assert torch.equal(embed(load_backbone(target), images), embed(replacement, images))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home", "model"]


def test_failed_weight_write_leaves_no_directory(backbone, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match=r"No space left"):
        save_backbone(backbone, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home"]


def test_failed_weight_write_keeps_the_previous_model_intact(tmp_path, monkeypatch, images):
    original = tiny_vit(seed=0)
    target = save_backbone(original, tmp_path / "model")
    before = directory_files(target)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError):
        save_backbone(tiny_vit(seed=1), target)
    assert directory_files(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home", "model"]


def test_saving_again_leaves_the_users_files_beside_the_model_alone(tmp_path, images):
    target = save_backbone(tiny_vit(seed=0), tmp_path / "model")
    (target / "thesis.tex").write_text("\\chapter{Results}")
    (target / "figures").mkdir()
    (target / "figures" / "curve.png").write_bytes(b"png")
    replacement = tiny_vit(seed=1)

    save_backbone(replacement, target)

    assert (target / "thesis.tex").read_text() == "\\chapter{Results}"
    assert (target / "figures" / "curve.png").read_bytes() == b"png"
    assert torch.equal(embed(load_backbone(target), images), embed(replacement, images))


def test_save_into_a_directory_of_other_files_adds_the_model_beside_them(backbone, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"...")

    save_backbone(backbone, photos)

    assert sorted(p.name for p in photos.iterdir()) == [
        "README.md",
        "config.json",
        "holiday.jpg",
        "model.safetensors",
    ]
    assert (photos / "holiday.jpg").read_bytes() == b"..."


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "README.md"])
def test_save_refuses_to_overwrite_a_model_file_it_did_not_write(backbone, tmp_path, name):
    target = tmp_path / "other-tool"
    target.mkdir()
    foreign = {
        "config.json": b'{"architecture": "resnet18", "num_classes": 1000}',
        "model.safetensors": safetensors.torch.save({"weight": torch.zeros(2)}),
        "README.md": b"# My notes\n",
    }[name]
    (target / name).write_bytes(foreign)

    with pytest.raises(FileExistsError, match=re.escape(str(target / name))):
        save_backbone(backbone, target)

    assert directory_files(target) == {name: foreign}


def test_save_refuses_a_model_card_whose_sparsam_marker_the_user_deleted(backbone, tmp_path):
    target = save_backbone(backbone, tmp_path / "model")
    card = target / "README.md"
    card.write_text(card.read_text().replace("<!-- sparsam-model-card", "<!-- my edits"))
    before = directory_files(target)

    with pytest.raises(FileExistsError, match=r"README\.md.*model_card=False"):
        save_backbone(backbone, target)

    assert directory_files(target) == before


def test_save_without_model_card_keeps_a_readme_of_the_users(backbone, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "README.md").write_text("# My own card\n")

    save_backbone(backbone, target, model_card=False)

    assert (target / "README.md").read_text() == "# My own card\n"
    assert (target / "model.safetensors").is_file()


def test_save_without_model_card_removes_the_card_of_an_earlier_save(backbone, tmp_path):
    target = save_backbone(backbone, tmp_path / "model")

    save_backbone(backbone, target, model_card=False)

    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]


def test_saved_files_carry_sparsam_markers_with_one_save_id(saved):
    config = json.loads((saved / "config.json").read_text())
    with safetensors.safe_open(str(saved / "model.safetensors"), framework="pt") as weights:
        metadata = weights.metadata()
    card_lines = (saved / "README.md").read_text().splitlines()

    save_id = config["sparsam"]["save_id"]
    assert config["sparsam"]["version"] == sparsam.__version__
    assert metadata == {"format": "pt", "sparsam_save_id": save_id}
    assert card_lines[-1].startswith(f"<!-- sparsam-model-card {save_id}:")


def test_failed_rename_of_the_config_puts_the_previous_model_back(tmp_path, monkeypatch):
    target = save_backbone(tiny_vit(seed=0), tmp_path / "model")
    (target / "notes.txt").write_text("keep")
    before = directory_files(target)
    rename = os.replace

    def refuse_config(source, destination):
        if Path(destination) == target / "config.json":
            raise PermissionError("config.json is read-only")
        rename(source, destination)

    monkeypatch.setattr(os, "replace", refuse_config)
    with pytest.raises(PermissionError):
        save_backbone(tiny_vit(seed=1), target)

    assert directory_files(target) == before


# ---------------------------------------------------------------------------- plain timm


def test_plain_timm_loads_the_local_directory_with_identical_embeddings(backbone, saved, images):
    model = timm.create_model(f"local-dir:{saved}", pretrained=True)
    assert torch.equal(embed(model, images), embed(backbone, images))


def test_plain_timm_loads_from_an_offline_hub_cache_with_identical_embeddings(
    backbone, saved, images, offline_hub
):
    build_hub_cache(offline_hub, REPO_ID, directory_files(saved))
    model = timm.create_model(f"hf-hub:{REPO_ID}", pretrained=True)
    assert torch.equal(embed(model, images), embed(backbone, images))


# ---------------------------------------------------------------------------- load_backbone


def test_load_backbone_from_directory_is_identical_and_in_eval_mode(backbone, saved, images):
    loaded = load_backbone(str(saved))
    assert not loaded.training and loaded.num_classes == 0
    assert torch.equal(embed(loaded, images), embed(backbone, images))
    assert loaded.sparsam_architecture == "vit_tiny_patch16_224"


def test_loaded_backbone_carries_its_preprocessing(saved):
    config = backbone_data_config(load_backbone(saved))
    assert config["image_size"] == 16 and config["mean"] == (0.5, 0.5, 0.5)


def test_load_backbone_from_hub_cache_directory_is_identical(backbone, saved, images, tmp_path):
    cache = tmp_path / "elsewhere"
    build_hub_cache(cache, REPO_ID, directory_files(saved), symlinks=False)
    loaded = load_backbone(f"hf-hub:{REPO_ID}", cache_dir=cache)
    assert torch.equal(embed(loaded, images), embed(backbone, images))
    assert loaded.pretrained_cfg["hf_hub_id"] == REPO_ID


def test_load_backbone_reads_the_default_cache_under_hf_home(backbone, saved, images, offline_hub):
    build_hub_cache(offline_hub, REPO_ID, directory_files(saved))
    assert torch.equal(embed(load_backbone(f"hf-hub:{REPO_ID}"), images), embed(backbone, images))


def test_load_backbone_follows_revisions_from_spec_keyword_or_commit(offline_hub, tmp_path, images):
    first, second = tiny_vit(seed=0), tiny_vit(seed=1)
    build_hub_cache(offline_hub, REPO_ID, directory_files(save_backbone(first, tmp_path / "a")))
    commit = build_hub_cache(
        offline_hub, REPO_ID, directory_files(save_backbone(second, tmp_path / "b")), refs=["v2"]
    )
    expected_first, expected_second = embed(first, images), embed(second, images)
    assert torch.equal(embed(load_backbone(f"hf-hub:{REPO_ID}"), images), expected_first)
    assert torch.equal(embed(load_backbone(f"hf-hub:{REPO_ID}@v2"), images), expected_second)
    loaded = load_backbone(f"hf-hub:{REPO_ID}", revision="v2")
    assert torch.equal(embed(loaded, images), expected_second)
    loaded = load_backbone(f"hf-hub:{REPO_ID}@{commit}")
    assert torch.equal(embed(loaded, images), expected_second)


def test_conflicting_revisions_are_rejected():
    with pytest.raises(ValueError, match=r"Conflicting revisions.*'v1'.*'v2'"):
        load_backbone(f"hf-hub:{REPO_ID}@v1", revision="v2")


def test_offline_and_not_cached_names_repository_revision_cache_and_fixes(offline_hub):
    with pytest.raises(BackboneNotFoundError) as error:
        load_backbone(f"hf-hub:{REPO_ID}@v3")
    message = str(error.value)
    assert REPO_ID in message and "'v3'" in message and str(offline_hub) in message
    assert "HF_HUB_OFFLINE=1" in message and "hf download" in message
    assert "HF_HOME" in message and "local directory" in message
    assert isinstance(error.value, OSError)


def test_unknown_revision_of_a_cached_repository_is_not_found(saved, offline_hub):
    build_hub_cache(offline_hub, REPO_ID, directory_files(saved))
    with pytest.raises(BackboneNotFoundError, match=r"revision 'nope'"):
        load_backbone(f"hf-hub:{REPO_ID}", revision="nope")


@pytest.mark.parametrize(
    ("hub_error", "expected"),
    [
        (RepositoryNotFoundError, "does not exist, or it is private"),
        (RevisionNotFoundError, "Revision 'v9' does not exist"),
    ],
)
def test_hub_errors_become_backbone_not_found_errors(monkeypatch, hub_error, expected):
    def answer(*args, **kwargs):
        raise hub_error("404 Client Error", response=SimpleNamespace(headers={}, request=None))

    monkeypatch.setattr(sparsam.backbones.hub_download, "hf_hub_download", answer)
    with pytest.raises(BackboneNotFoundError, match=expected) as error:
        load_backbone(f"hf-hub:{REPO_ID}@v9")
    assert REPO_ID in str(error.value) and "Cache searched" in str(error.value)


def test_short_name_loads_its_registry_repository(backbone, saved, images, offline_hub):
    entry = PRETRAINED_BACKBONES["endo"]
    build_hub_cache(offline_hub, entry.repo_id, directory_files(saved), refs=[entry.revision])
    assert torch.equal(embed(load_backbone("endo"), images), embed(backbone, images))


def test_unpublished_short_name_says_how_to_convert_the_papers_weights():
    with pytest.raises(BackboneNotFoundError, match=r"not published yet.*sparsam convert"):
        load_backbone("bm")


def test_directory_with_only_pickle_weights_is_refused(saved, monkeypatch):
    (saved / "model.safetensors").rename(saved / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", pytest.fail)
    with pytest.raises(BackboneNotFoundError, match=r"pytorch_model.bin.*pickle.*refused"):
        load_backbone(saved)


def test_hub_repository_with_only_pickle_weights_is_refused(saved, offline_hub, monkeypatch):
    files = directory_files(saved)
    files["pytorch_model.bin"] = files.pop("model.safetensors")
    build_hub_cache(offline_hub, REPO_ID, files)
    monkeypatch.setattr(torch, "load", pytest.fail)
    with pytest.raises(BackboneNotFoundError, match=rf"{REPO_ID}.*no model.safetensors.*refused"):
        load_backbone(f"hf-hub:{REPO_ID}")


def test_missing_directory_is_not_found_and_suggests_the_hub_prefix():
    with pytest.raises(BackboneNotFoundError, match=r"no directory 'org/nothing'.*hf-hub:org/"):
        load_backbone("org/nothing")


def test_unknown_short_name_lists_the_accepted_forms():
    with pytest.raises(ValueError, match=r"'bm', 'endo', 'isic'.*'imagenet'.*hf-hub"):
        load_backbone("bonemarrow")


def test_imagenet_needs_an_architecture():
    with pytest.raises(ValueError, match=r"architecture="):
        load_backbone("imagenet")


def test_weights_that_do_not_fit_the_config_are_listed(saved):
    config = json.loads((saved / "config.json").read_text())
    config["model_args"]["depth"] = 2
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model.safetensors.*missing keys \(blocks\.1\."):
        load_backbone(saved)


def test_corrupt_weights_file_is_named(saved):
    (saved / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors"):
        load_backbone(saved)


def test_classifier_weights_lose_only_their_head(tmp_path, images):
    torch.manual_seed(0)
    classifier = timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=16, **TINY_VIT)
    timm.models.save_for_hf(classifier.eval(), str(tmp_path / "clf"), safe_serialization=True)
    loaded = load_backbone(tmp_path / "clf")
    with torch.no_grad():
        expected = classifier.forward_head(classifier.forward_features(images), pre_logits=True)
    assert loaded.num_classes == 0 and torch.equal(embed(loaded, images), expected)


def test_drop_path_rate_applies_to_training_only(tmp_path, images):
    two_blocks = {**TINY_VIT, "depth": 2}  # timm's stochastic depth grows from 0 at block 0
    backbone = create_backbone("vit_tiny_patch16_224", image_size=16, backbone_kwargs=two_blocks)
    loaded = load_backbone(save_backbone(backbone, tmp_path / "two"), drop_path_rate=0.1)
    assert loaded.blocks[1].drop_path1.drop_prob == pytest.approx(0.1)
    assert torch.equal(embed(loaded, images), embed(backbone, images))


def test_imagenet_weights_offline_and_uncached_are_not_found():
    with pytest.raises(BackboneNotFoundError, match=r"ImageNet weights.*HF_HOME"):
        load_backbone("imagenet", architecture="vit_tiny_patch16_224", image_size=16)


def test_dynamic_vit_keeps_its_saved_size_and_takes_other_sizes(saved):
    loaded = load_backbone(saved, image_size=32)
    assert loaded.sparsam_model_args["img_size"] in (16, [16, 16])
    assert embed(loaded, torch.zeros(1, 3, 32, 32)).shape == (1, 32)


def test_fixed_size_vit_is_resampled_to_the_requested_image_size(tmp_path):
    torch.manual_seed(0)
    fixed = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=16, **TINY_VIT)
    loaded = load_backbone(save_backbone(fixed, tmp_path / "fixed"), image_size=32)
    assert embed(loaded, torch.zeros(1, 3, 32, 32)).shape == (1, 32)
    assert backbone_data_config(loaded)["image_size"] == 32


# ---------------------------------------------------------------------------- convert


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: state,
        lambda state: {"teacher": state, "epoch": 3},
        lambda state: {"state_dict": {f"module.{k}": v for k, v in state.items()}},
    ],
    ids=["flat", "teacher", "ddp-state-dict"],
)
def test_converted_checkpoint_gives_identical_cls_embeddings(tmp_path, wrap):
    original = small_xcit_checkpoint(tmp_path / "pretrained_bm.pt", wrap=wrap)
    path = convert_checkpoint(
        tmp_path / "pretrained_bm.pt",
        tmp_path / "bm",
        architecture="xcit_nano_12_p8_224",
        image_size=32,
        model_kwargs=SMALL_XCIT,
    )
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = embed(original, images)
    assert torch.equal(embed(load_backbone(path), images), expected)
    assert torch.equal(
        embed(timm.create_model(f"local-dir:{path}", pretrained=True), images), expected
    )


def test_converted_model_card_credits_the_paper_and_its_data(tmp_path):
    small_xcit_checkpoint(tmp_path / "pretrained_bm.pt")
    path = convert_checkpoint(
        tmp_path / "pretrained_bm.pt",
        tmp_path / "bm",
        name="bm",
        architecture="xcit_nano_12_p8_224",
        image_size=32,
        model_kwargs=SMALL_XCIT,
    )
    card = (path / "README.md").read_text()
    assert "license: cc-by-4.0" in card
    for credit in (
        "Nielsen M, Wenderoth L, Sentker T, Werner R",
        "Bioengineering 2023",
        "10391339",
    ):
        assert credit in card
    assert "Matek et al." in card and PRETRAINED_BACKBONES["bm"].repo_id in card
    cfg = json.loads((path / "config.json").read_text())["pretrained_cfg"]
    assert cfg["mean"] == cfg["std"] == [0.5, 0.5, 0.5] and cfg["input_size"] == [3, 32, 32]


def test_checkpoint_without_backbone_keys_is_rejected_with_its_keys(tmp_path):
    torch.save({"head.mlp.0.weight": torch.zeros(2, 2), "epoch": 1}, tmp_path / "head.pt")
    with pytest.raises(ValueError, match=r"head\.pt holds no 'backbone\.' keys.*head\.mlp"):
        convert_checkpoint(tmp_path / "head.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_checkpoint_with_missing_and_extra_backbone_keys_lists_them(tmp_path):
    small_xcit_checkpoint(tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    del state["backbone.norm.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError) as error:
        convert_checkpoint(
            tmp_path / "ckpt.pt",
            tmp_path / "out",
            architecture="xcit_nano_12_p8_224",
            image_size=32,
            model_kwargs=SMALL_XCIT,
        )
    message = str(error.value)
    assert "ckpt.pt" in message
    assert "1 missing keys (norm.weight)" in message
    assert "1 unexpected keys (extra.weight)" in message


def test_convert_rejects_an_unknown_data_set_name(tmp_path):
    with pytest.raises(ValueError, match=r"name must be one of"):
        convert_checkpoint(tmp_path / "x.pt", tmp_path / "out", name="cells")


# ---------------------------------------------------------------------------- push


class FakeHfApi:
    """Records the calls push_backbone makes; nothing reaches the network.

    ``hub_files`` ({name: text}) is what the repository already holds.
    """

    calls: list
    hub_files: dict
    download_dir: Path

    def __init__(self, token=None):
        FakeHfApi.calls = [("init", {"token": token})]

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def file_exists(self, repo_id, filename, **kwargs):
        self.calls.append(("file_exists", {"repo_id": repo_id, "filename": filename, **kwargs}))
        return filename in self.hub_files

    def hf_hub_download(self, repo_id, filename, **kwargs):
        self.calls.append(("hf_hub_download", {"repo_id": repo_id, "filename": filename}))
        path = self.download_dir / filename
        path.write_text(self.hub_files[filename], encoding="utf-8")
        return str(path)

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc")


@pytest.fixture
def fake_hub_api(monkeypatch, tmp_path):
    monkeypatch.setattr(sparsam.backbones.push, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    FakeHfApi.hub_files = {}
    FakeHfApi.download_dir = tmp_path / "downloaded"
    FakeHfApi.download_dir.mkdir()
    return FakeHfApi


def test_push_creates_repository_and_branch_then_uploads_the_model_files(saved, fake_hub_api):
    url = push_backbone(saved, REPO_ID, private=True, token="secret", revision="v1")
    assert url == f"https://huggingface.co/{REPO_ID}/commit/abc"
    calls = dict(fake_hub_api.calls)
    assert calls["init"] == {"token": "secret"}
    assert calls["create_repo"] == {
        "repo_id": REPO_ID,
        "private": True,
        "exist_ok": True,
        "repo_type": "model",
    }
    assert calls["create_branch"]["branch"] == "v1" and calls["create_branch"]["exist_ok"]
    upload = calls["upload_folder"]
    assert upload["folder_path"] == str(saved) and upload["revision"] == "v1"
    assert set(upload["allow_patterns"]) == {"config.json", "model.safetensors", "README.md"}


def test_push_without_a_branch_creates_none(saved, fake_hub_api):
    push_backbone(saved, REPO_ID)
    names = [name for name, _ in fake_hub_api.calls]
    assert names == ["init", "create_repo", "file_exists", "upload_folder"]


def test_push_keeps_a_readme_on_the_hub_that_sparsam_did_not_write(saved, fake_hub_api, caplog):
    fake_hub_api.hub_files = {"README.md": "# Our model\n\nWritten by hand on the Hub.\n"}
    push_backbone(saved, REPO_ID, revision="v1")
    calls = dict(fake_hub_api.calls)
    assert calls["file_exists"]["revision"] == "v1"
    assert set(calls["upload_folder"]["allow_patterns"]) == {"config.json", "model.safetensors"}
    assert "delete_patterns" not in calls["upload_folder"]
    assert "Kept the README.md" in caplog.text and "overwrite_card=True" in caplog.text


def test_push_with_overwrite_card_replaces_a_readme_on_the_hub(saved, fake_hub_api):
    fake_hub_api.hub_files = {"README.md": "# Our model\n"}
    push_backbone(saved, REPO_ID, overwrite_card=True)
    upload = dict(fake_hub_api.calls)["upload_folder"]
    assert "README.md" in upload["allow_patterns"]


def test_push_replaces_a_card_that_sparsam_wrote_on_the_hub(saved, fake_hub_api):
    fake_hub_api.hub_files = {"README.md": (saved / "README.md").read_text()}
    push_backbone(saved, REPO_ID)
    upload = dict(fake_hub_api.calls)["upload_folder"]
    assert "README.md" in upload["allow_patterns"]


def test_push_without_a_card_deletes_sparsams_card_of_other_weights_on_the_hub(saved, fake_hub_api):
    fake_hub_api.hub_files = {"README.md": (saved / "README.md").read_text()}
    (saved / "README.md").unlink()
    push_backbone(saved, REPO_ID)
    upload = dict(fake_hub_api.calls)["upload_folder"]
    assert "README.md" not in upload["allow_patterns"]
    assert upload["delete_patterns"] == ["README.md"]


def test_push_of_an_incomplete_directory_names_what_is_missing(saved, fake_hub_api):
    (saved / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"lacks model.safetensors"):
        push_backbone(saved, REPO_ID)
    assert fake_hub_api.calls == []


# ---------------------------------------------------------------------------- command line


def test_convert_command_writes_a_loadable_directory(tmp_path, capsys):
    original = small_xcit_checkpoint(tmp_path / "pretrained_isic.pt", model_kwargs={})
    arguments = ["--name", "isic", "--architecture", "xcit_nano_12_p8_224", "--image-size", "32"]
    code = main(
        ["convert", str(tmp_path / "pretrained_isic.pt"), str(tmp_path / "isic"), *arguments]
    )
    assert code == 0
    assert str(tmp_path / "isic") in capsys.readouterr().out
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(embed(load_backbone(tmp_path / "isic"), images), embed(original, images))


def test_convert_command_reports_a_bad_checkpoint_with_exit_code_1(tmp_path, capsys):
    torch.save({"epoch": 1}, tmp_path / "empty.pt")
    assert main(["convert", str(tmp_path / "empty.pt"), str(tmp_path / "out")]) == 1
    assert "empty.pt holds no 'backbone.' keys" in capsys.readouterr().err


def test_convert_command_into_a_converted_directory_keeps_the_users_files(tmp_path, capsys):
    small_xcit_checkpoint(tmp_path / "pretrained_bm.pt", model_kwargs={})
    command = ["convert", str(tmp_path / "pretrained_bm.pt"), str(tmp_path / "bm")]
    arguments = ["--architecture", "xcit_nano_12_p8_224", "--image-size", "32"]
    assert main([*command, *arguments]) == 0
    (tmp_path / "bm" / "thesis.tex").write_text("draft")

    assert main([*command, *arguments]) == 0

    assert (tmp_path / "bm" / "thesis.tex").read_text() == "draft"


def test_convert_command_refuses_a_foreign_config_json_with_exit_code_1(tmp_path, capsys):
    small_xcit_checkpoint(tmp_path / "pretrained_bm.pt", model_kwargs={})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text('{"architecture": "resnet18"}')
    arguments = ["--architecture", "xcit_nano_12_p8_224", "--image-size", "32"]

    code = main(["convert", str(tmp_path / "pretrained_bm.pt"), str(tmp_path / "out"), *arguments])

    assert code == 1
    assert f"Refusing to overwrite {tmp_path / 'out' / 'config.json'}" in capsys.readouterr().err
    assert os.listdir(tmp_path / "out") == ["config.json"]


def test_push_command_passes_its_options_and_prints_the_commit(saved, fake_hub_api, capsys):
    code = main(["push", str(saved), REPO_ID, "--private", "--revision", "v1", "--token", "t"])
    assert code == 0
    assert f"https://huggingface.co/{REPO_ID}/commit/abc" in capsys.readouterr().out
    calls = dict(fake_hub_api.calls)
    assert calls["init"] == {"token": "t"} and calls["create_repo"]["private"] is True


def test_push_command_reports_an_incomplete_directory_with_exit_code_1(tmp_path, capsys):
    assert main(["push", str(tmp_path), REPO_ID]) == 1
    assert "lacks config.json and model.safetensors" in capsys.readouterr().err


# DinoFeaturizer(pretrained=...)


def test_featurizer_loads_a_saved_directory_with_identical_embeddings(
    fitted_featurizer, tiny_params, tiny_images, tmp_path
):
    directory = save_backbone(fitted_featurizer, tmp_path / "saved_featurizer")
    loaded = sparsam.DinoFeaturizer(**{**tiny_params, "pretrained": directory, "epochs": 0})

    loaded.fit(tiny_images)

    assert np.array_equal(loaded.transform(tiny_images), fitted_featurizer.transform(tiny_images))
    assert loaded.data_config_ == fitted_featurizer.data_config_


def test_featurizer_loads_a_hub_repository_from_the_offline_cache(
    fitted_featurizer, tiny_params, tiny_images, tmp_path, offline_hub
):
    saved_dir = save_backbone(fitted_featurizer, tmp_path / "to_cache")
    build_hub_cache(offline_hub, REPO_ID, directory_files(saved_dir))
    spec = f"hf-hub:{REPO_ID}"

    loaded = sparsam.DinoFeaturizer(**{**tiny_params, "pretrained": spec, "epochs": 0})
    loaded.fit(tiny_images)

    assert np.array_equal(loaded.transform(tiny_images), fitted_featurizer.transform(tiny_images))


def test_featurizer_with_unpublished_short_name_offline_says_how_to_fix(tiny_params, tiny_images):
    featurizer = sparsam.DinoFeaturizer(**{**tiny_params, "pretrained": "bm", "epochs": 0})

    with pytest.raises(BackboneNotFoundError, match="sparsam convert"):
        featurizer.fit(tiny_images)


@pytest.mark.parametrize(("pretrained", "epochs", "expected"), [(None, 20, 0), ("dir", 20, 2)])
def test_head_warmup_is_automatic_only_for_pretrained_weights(
    pretrained, epochs, expected, tiny_params
):
    featurizer = sparsam.DinoFeaturizer(
        **{**tiny_params, "pretrained": pretrained, "epochs": epochs}
    )

    assert featurizer._training_config().head_warmup_epochs == expected


def test_push_command_with_overwrite_card_replaces_the_hub_readme(saved, fake_hub_api):
    fake_hub_api.hub_files = {"README.md": "# Our model\n"}
    assert main(["push", str(saved), REPO_ID, "--overwrite-card"]) == 0
    assert "README.md" in dict(fake_hub_api.calls)["upload_folder"]["allow_patterns"]


# ---------------------------------------------------------------------------- token, local files


@pytest.fixture
def network_attempts(monkeypatch):
    """Hub online as far as huggingface_hub knows; lists every DNS lookup or connection."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("this test may not reach the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_local_files_only_loads_from_the_cache_without_contacting_the_hub(
    backbone, saved, images, offline_hub, network_attempts
):
    build_hub_cache(offline_hub, REPO_ID, directory_files(saved))
    loaded = load_backbone(f"hf-hub:{REPO_ID}", local_files_only=True)
    assert torch.equal(embed(loaded, images), embed(backbone, images))
    assert network_attempts == []


def test_local_files_only_and_not_cached_says_so(network_attempts):
    with pytest.raises(BackboneNotFoundError, match=r"may not be contacted \(local_files_only"):
        load_backbone(f"hf-hub:{REPO_ID}", local_files_only=True)
    assert network_attempts == []


def test_imagenet_weights_with_local_files_only_come_from_the_cache(
    offline_hub, network_attempts, tmp_path
):
    torch.manual_seed(3)
    imagenet_model = timm.create_model("vit_tiny_patch16_224").eval()
    weights = tmp_path / "imagenet.safetensors"
    safetensors.torch.save_file(imagenet_model.state_dict(), str(weights))
    hub_id = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    build_hub_cache(offline_hub, hub_id, {"model.safetensors": weights.read_bytes()})
    loaded = load_backbone("imagenet", architecture="vit_tiny_patch16_224", local_files_only=True)
    assert network_attempts == []
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(
            loaded(image),
            imagenet_model.forward_head(imagenet_model.forward_features(image), pre_logits=True),
        )
    saved = save_backbone(loaded, tmp_path / "from_imagenet")
    assert str(offline_hub) not in (saved / "config.json").read_text()
    assert huggingface_hub.ModelCard.load(saved / "README.md").data.base_model == hub_id


def test_load_backbone_passes_its_token_to_the_hub(saved, monkeypatch):
    received = []

    def download(repo_id, filename, **kwargs):
        received.append(kwargs["token"])
        return str(saved / filename)

    monkeypatch.setattr(sparsam.backbones.hub_download, "hf_hub_download", download)
    load_backbone(f"hf-hub:{REPO_ID}", token="hf_secret")
    assert received == ["hf_secret", "hf_secret"]


def test_featurizer_trained_from_a_hub_repository_names_it_as_base_model(
    backbone, saved, tiny_params, tiny_images, tmp_path, offline_hub
):
    build_hub_cache(offline_hub, REPO_ID, directory_files(saved))
    params = {**tiny_params, "backbone_kwargs": TINY_VIT, "pretrained": f"hf-hub:{REPO_ID}"}
    featurizer = sparsam.DinoFeaturizer(**params).fit(tiny_images)
    path = save_backbone(featurizer, tmp_path / "trained")
    card = huggingface_hub.ModelCard.load(path / "README.md")
    assert card.data.base_model == REPO_ID
    assert f"| `pretrained` | `'hf-hub:{REPO_ID}'` |" in card.text
    assert str(offline_hub) not in (path / "config.json").read_text()
