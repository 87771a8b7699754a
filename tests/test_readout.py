"""pooling= and n_last_blocks=: DINO's evaluation read-out (CLS and mean patch tokens, last n
blocks), for ViT and for XCiT's class-attention blocks."""

import pickle

import numpy as np
import pytest
import timm
import torch
from conftest import DEEP_VIT_PARAMS

from sparsam import DinoFeaturizer
from sparsam.readout import ReadOut, token_blocks


def vit(depth=3):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, img_size=16, patch_size=4, depth=depth
    ).eval()


def xcit():
    torch.manual_seed(0)
    return timm.create_model(
        "xcit_small_12_p8_224", num_classes=0, img_size=16, depth=2, embed_dim=32, num_heads=2
    ).eval()


def images(n=4):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def normed_block_outputs(model, x):
    """Every output of the stack that holds the CLS token, through the final norm (DINO's
    get_intermediate_layers), computed by hand."""
    outputs = []
    _, stack = token_blocks(model)
    handles = [block.register_forward_hook(lambda m, i, o: outputs.append(o)) for block in stack]
    model.forward_features(x)
    for handle in handles:
        handle.remove()
    return [model.norm(output) for output in outputs]


@pytest.mark.parametrize("make", [vit, xcit], ids=["vit", "xcit"])
def test_the_default_read_out_is_the_backbones_own_output_bit_for_bit(make):
    model = make()
    with torch.inference_mode():
        assert torch.equal(ReadOut(model)(images()), model(images()))


@pytest.mark.parametrize("make", [vit, xcit], ids=["vit", "xcit"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "cls+mean"])
@pytest.mark.parametrize("n_last_blocks", [1, 2])
def test_read_out_concatenates_the_parts_of_the_last_blocks_earliest_first(
    make, pooling, n_last_blocks
):
    model = make()
    with torch.inference_mode():
        features = ReadOut(model, pooling, n_last_blocks)(images())
        blocks = normed_block_outputs(model, images())[-n_last_blocks:]
    parts = {"cls": lambda t: t[:, 0], "mean": lambda t: t[:, model.num_prefix_tokens :].mean(1)}
    expected = torch.cat(
        [parts[part](tokens) for tokens in blocks for part in pooling.split("+")], dim=1
    )
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)
    assert features.shape[1] == n_last_blocks * len(pooling.split("+")) * model.num_features


def test_the_mean_is_over_the_patch_tokens_only():
    model = vit()
    with torch.inference_mode():
        tokens = model.forward_features(images())
        mean = ReadOut(model, "mean")(images())
    torch.testing.assert_close(mean, tokens[:, 1:].mean(1))
    assert not torch.allclose(mean, tokens.mean(1))


def test_feature_names_say_block_part_and_column():
    readout = ReadOut(vit(depth=3), "cls+mean", 2)
    names = readout.feature_names()
    dim = 192
    assert len(names) == readout.width == 2 * 2 * dim
    assert names[0] == "blocks1_cls0"
    assert names[dim] == "blocks1_mean0"
    assert names[2 * dim] == "blocks2_cls0"
    assert names[-1] == f"blocks2_mean{dim - 1}"
    assert ReadOut(xcit(), "cls", 2).feature_names()[0] == "clsattnblocks0_cls0"


def test_more_blocks_than_the_backbone_has_are_refused_naming_its_count():
    with pytest.raises(ValueError, match=r"n_last_blocks=3.*cls_attn_blocks holds 2 block"):
        ReadOut(xcit(), "cls", 3)


def test_a_backbone_without_blocks_gives_only_its_own_output():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 8))
    model.num_features = 8
    assert torch.equal(ReadOut(model)(images()), model(images()))
    with pytest.raises(ValueError, match="no 'blocks'"):
        ReadOut(model, "mean")


def test_read_out_leaves_no_hooks_behind():
    model = vit()
    with torch.inference_mode():
        ReadOut(model, "cls+mean", 2)(images())
    assert all(not block._forward_hooks for block in model.blocks)


# --- DinoFeaturizer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained(tiny_images):
    # The conftest's 3-block ViT, untrained: the read-out needs blocks, not training.
    with pytest.warns(UserWarning, match="epochs=0"):
        return DinoFeaturizer(**{**DEEP_VIT_PARAMS, "epochs": 0}).fit(tiny_images)


def test_featurizer_width_is_blocks_times_parts_times_embed_dim(untrained, tiny_images):
    featurizer = pickle.loads(pickle.dumps(untrained)).set_params(
        pooling="cls+mean", n_last_blocks=3
    )
    features = featurizer.transform(tiny_images)
    assert features.shape == (len(tiny_images), 3 * 2 * 32)
    names = featurizer.get_feature_names_out()
    assert len(names) == features.shape[1]
    assert (
        names[0] == "dinofeaturizer_blocks0_cls0" and names[-1] == "dinofeaturizer_blocks2_mean31"
    )
    # The last block's CLS part is the default read-out.
    last_cls = features[:, 4 * 32 : 5 * 32]
    np.testing.assert_array_equal(last_cls, untrained.transform(tiny_images))


def test_fit_records_the_width_of_its_read_out(tiny_images):
    params = {
        "backbone": "xcit_small_12_p8_224",
        "backbone_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2},
        "image_size": 16,
        "epochs": 0,
        "pooling": "mean",
        "n_last_blocks": 2,
        "verbose": 0,
    }
    with pytest.warns(UserWarning, match="epochs=0"):
        featurizer = DinoFeaturizer(**params).fit(tiny_images)
    assert featurizer.n_features_out_ == 2 * 32
    assert featurizer.transform(tiny_images).shape == (len(tiny_images), 64)


def test_fit_refuses_a_read_out_the_backbone_cannot_give_before_training(tiny_params, tiny_images):
    with pytest.raises(ValueError, match=r"n_last_blocks=5.*holds 1 block"):
        DinoFeaturizer(**tiny_params, n_last_blocks=5).fit(tiny_images)


def test_invalid_pooling_is_refused_by_name(tiny_params, tiny_images):
    with pytest.raises(ValueError, match="pooling"):
        DinoFeaturizer(**tiny_params, pooling="max").fit(tiny_images)


def test_the_embedding_cache_keys_on_the_read_out(untrained, tiny_images, tmp_path):
    featurizer = pickle.loads(pickle.dumps(untrained)).set_params(memory=tmp_path)
    cls = featurizer.transform(tiny_images)
    mean = featurizer.set_params(pooling="mean").transform(tiny_images)
    assert not np.array_equal(cls, mean)
    np.testing.assert_array_equal(featurizer.set_params(pooling="cls").transform(tiny_images), cls)
    np.testing.assert_array_equal(
        featurizer.set_params(pooling="mean").transform(tiny_images), mean
    )
