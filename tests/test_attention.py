"""DINO's attention maps: the CLS query's real attention in the last block, drawn per head."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import SMALL_XCIT_PARAMS, TINY_PARAMS
from PIL import Image

from sparsam import DinoFeaturizer, save_backbone
from sparsam.attention import ClsAttention, attention_maps, cls_attention, mass_threshold
from sparsam.cli import main
from sparsam.data import load_images

VIT_KWARGS = {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, img_size=16, **{**VIT_KWARGS, **kwargs}
    ).eval()


def tiny_xcit():
    torch.manual_seed(0)
    kwargs = SMALL_XCIT_PARAMS["backbone_kwargs"]
    return timm.create_model("xcit_small_12_p8_224", num_classes=0, img_size=32, **kwargs).eval()


BACKBONES = {
    # Two register tokens: the patches start after 3 prefix tokens.
    "vit": (lambda: tiny_vit(reg_tokens=2), 16, (4, 4), 3),
    "xcit": (tiny_xcit, 32, (4, 4), 1),
}


def last_attention(backbone):
    """The last block that holds the CLS token (ViT: blocks; XCiT: class attention)."""
    stack = getattr(backbone, "cls_attn_blocks", None) or backbone.blocks
    return stack[-1]


def timms_own_weights(backbone, images):
    """The softmax weights timm itself computes (unfused path), CLS query row, all tokens."""
    attention = last_attention(backbone).attn
    caught = []
    handle = attention.attn_drop.register_forward_hook(lambda m, i, o: caught.append(o))
    attention.fused_attn = False
    try:
        with torch.no_grad():
            backbone(images)
    finally:
        attention.fused_attn = True
        handle.remove()
    return caught[0][:, :, 0]


def weights_by_hand(backbone, images):
    """The CLS row of softmax(q k^T / sqrt(d)) from the block's input and weight matrices."""
    block = last_attention(backbone)
    attention = block.attn
    caught = []
    handle = block.norm1.register_forward_hook(lambda m, i, o: caught.append(o))
    with torch.no_grad():
        backbone(images)
        handle.remove()
        tokens = caught[-1]
        width, heads = tokens.shape[-1], attention.num_heads
        if hasattr(attention, "qkv"):
            weight, bias = attention.qkv.weight, attention.qkv.bias
            query = tokens[:, 0] @ weight[:width].T + bias[:width]
            key = tokens @ weight[width : 2 * width].T + bias[width : 2 * width]
        else:
            query = attention.q(tokens[:, 0])
            key = attention.k(tokens)
        query = query.reshape(len(images), heads, 1, width // heads)
        key = key.reshape(len(images), -1, heads, width // heads).transpose(1, 2)
        scores = query @ key.transpose(-2, -1) / (width // heads) ** 0.5
        return scores.softmax(-1)[:, :, 0]


@pytest.fixture(params=sorted(BACKBONES))
def backbone_case(request):
    build, size, grid, prefix = BACKBONES[request.param]
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    return build(), images, grid, prefix


def test_one_map_per_head_on_the_patch_grid(backbone_case):
    backbone, images, grid, _ = backbone_case
    maps = cls_attention(backbone, images)
    assert maps.shape == (3, 2, *grid)
    assert maps.dtype == torch.float32


def test_each_head_sums_to_one_over_patches_and_prefix_tokens(backbone_case):
    backbone, images, _, prefix = backbone_case
    maps = cls_attention(backbone, images)
    row = timms_own_weights(backbone, images)
    assert ClsAttention(backbone).n_prefix_tokens == prefix
    assert row.shape[-1] == prefix + maps[0, 0].numel()
    total = maps.sum((-2, -1)) + row[..., :prefix].sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total))
    assert bool((maps.sum((-2, -1)) < 1).all()) and bool((maps > 0).all())


def test_the_maps_are_timms_own_attention_weights(backbone_case):
    backbone, images, _, prefix = backbone_case
    maps = cls_attention(backbone, images)
    expected = timms_own_weights(backbone, images)[..., prefix:].reshape(maps.shape)
    torch.testing.assert_close(maps, expected)


def test_the_maps_equal_the_attention_computed_by_hand_from_the_weights(backbone_case):
    backbone, images, _, prefix = backbone_case
    maps = cls_attention(backbone, images)
    expected = weights_by_hand(backbone, images)[..., prefix:].reshape(maps.shape)
    torch.testing.assert_close(maps, expected)


def test_patches_are_laid_out_row_by_row():
    # Token prefix + 4 * r + c is the patch in row r, column c (timm's flatten(2)).
    backbone = tiny_vit()
    images = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = cls_attention(backbone, images)
    row = timms_own_weights(backbone, images)
    assert maps[0, 1, 2, 3] == row[0, 1, 1 + 4 * 2 + 3]


def test_a_vit_without_class_token_is_refused():
    backbone = tiny_vit(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="no class token"):
        cls_attention(backbone, torch.zeros(1, 3, 16, 16))


def test_the_model_keeps_its_fused_attention_and_its_hooks():
    backbone = tiny_vit()
    attention = backbone.blocks[-1].attn
    fused = attention.fused_attn
    cls_attention(backbone, torch.zeros(1, 3, 16, 16))
    assert attention.fused_attn == fused
    assert not attention._forward_pre_hooks


def test_mass_threshold_keeps_the_largest_weights_holding_the_fraction():
    maps = np.random.default_rng(0).random((3, 2, 4, 4))
    keep = mass_threshold(maps, 0.6)
    for weights, kept in zip(maps.reshape(6, 16), keep.reshape(6, 16), strict=True):
        share = weights[kept].sum() / weights.sum()
        assert share >= 0.6
        # The smallest kept weight was needed; every dropped weight is smaller than it.
        assert share - weights[kept].min() / weights.sum() < 0.6
        assert weights[~kept].max() <= weights[kept].min()


def test_mass_threshold_refuses_a_fraction_outside_zero_to_one():
    with pytest.raises(ValueError, match="fraction"):
        mass_threshold(np.ones((2, 2)), 1.5)


@pytest.fixture(scope="module")
def untrained_featurizer():
    """The conftest's tiny ViT at depth 2, loaded (epochs=0) as sparsam embed loads one."""
    params = {**TINY_PARAMS, "backbone_kwargs": VIT_KWARGS, "epochs": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # epochs=0 with random weights
        return DinoFeaturizer(**params).fit(np.zeros((1, 16, 16), np.uint8))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(2, 20, 24, 3), dtype=np.uint8)


def test_attention_maps_see_the_images_as_transform_does(untrained_featurizer, images):
    pixels, maps = attention_maps(untrained_featurizer, images)
    config = untrained_featurizer.data_config_
    resized = load_images(images, config["image_size"])
    np.testing.assert_array_equal(pixels, resized.permute(0, 2, 3, 1).numpy())
    mean = torch.tensor(config["mean"])[:, None, None]
    std = torch.tensor(config["std"])[:, None, None]
    normalised = (resized.float() / 255 - mean) / std
    expected = cls_attention(untrained_featurizer.backbone_, normalised).numpy()
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def test_xcit_featurizer_maps_its_class_attention(images):
    params = {**SMALL_XCIT_PARAMS, "image_size": 32, "epochs": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        featurizer = DinoFeaturizer(**params).fit(np.zeros((1, 32, 32), np.uint8))
    pixels, maps = attention_maps(featurizer, images)
    assert pixels.shape == (2, 32, 32, 3) and maps.shape == (2, 2, 4, 4)


@pytest.fixture
def pyplot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_plot_attention_draws_each_image_and_one_map_per_head(pyplot, untrained_featurizer, images):
    from sparsam.plotting import plot_attention

    figure = plot_attention(untrained_featurizer, images)
    assert len(figure.axes) == 2 * (1 + 2)
    _, maps = attention_maps(untrained_featurizer, images)
    drawn = figure.axes[3 + 2].images[-1].get_array()  # image 1, head 2
    np.testing.assert_array_equal(np.ma.getdata(drawn), maps[1, 1])


def test_plot_attention_mean_and_threshold(pyplot, untrained_featurizer, images):
    from sparsam.plotting import plot_attention

    figure = plot_attention(untrained_featurizer, images[:1], heads="mean", threshold=0.6)
    assert len(figure.axes) == 2
    _, maps = attention_maps(untrained_featurizer, images[:1])
    mean = maps.mean(axis=1)[0]
    drawn = figure.axes[1].images[-1].get_array()
    np.testing.assert_allclose(np.ma.getdata(drawn), mean)
    np.testing.assert_array_equal(~np.ma.getmaskarray(drawn), mass_threshold(mean, 0.6))


def test_plot_attention_refuses_axes_of_the_wrong_shape(pyplot, untrained_featurizer, images):
    from sparsam.plotting import plot_attention

    _, axes = pyplot.subplots(1, 2)
    with pytest.raises(ValueError, match="expected 2 x 3"):
        plot_attention(untrained_featurizer, images, axes=axes)


# --- sparsam attention, run as a user runs it ---


def sparsam(*arguments):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "sparsam", *map(str, arguments)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(4)
    for name in ["a.png", "sub/b.png", "sub/b.jpg"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def saved_backbone(untrained_featurizer, tmp_path_factory):
    return save_backbone(untrained_featurizer, tmp_path_factory.mktemp("backbone") / "vit")


def test_attention_command_writes_one_png_per_image(image_folder, saved_backbone, tmp_path):
    out = tmp_path / "maps"
    process = sparsam(
        "attention", image_folder, "--backbone", saved_backbone, "--out", out, "--quiet"
    )
    assert process.returncode == 0, process.stderr
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    expected = ["a_attention.png", "sub/b_jpg_attention.png", "sub/b_png_attention.png"]
    assert written == sorted(expected)
    with Image.open(out / "a_attention.png") as png:
        assert png.format == "PNG" and png.text["Software"] == "sparsam attention"
    # A second run replaces its own maps.
    again = sparsam("attention", image_folder, "--backbone", saved_backbone, "--out", out)
    assert again.returncode == 0, again.stderr


def test_attention_command_never_overwrites_a_file_it_did_not_write(
    image_folder, saved_backbone, tmp_path
):
    out = tmp_path / "maps"
    (out / "sub").mkdir(parents=True)
    foreign = out / "sub" / "b_png_attention.png"
    Image.new("RGB", (4, 4)).save(foreign)
    before = foreign.read_bytes()
    process = sparsam("attention", image_folder, "--backbone", saved_backbone, "--out", out)
    assert process.returncode == 1
    assert "Traceback" not in process.stderr
    assert str(foreign) in process.stderr and "not written by sparsam" in process.stderr
    assert foreign.read_bytes() == before
    assert sorted(Path(out).rglob("*.png")) == [foreign]


def test_attention_command_refuses_a_threshold_outside_zero_to_one(
    image_folder, saved_backbone, tmp_path, capsys
):
    # In this process: the check comes before any image or backbone is read.
    arguments = ["attention", image_folder, "--backbone", saved_backbone, "--out", tmp_path]
    assert main([*map(str, arguments), "--threshold", "60"]) == 1
    assert "--threshold 60" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
