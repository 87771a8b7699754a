"""Parameters that cannot work fail in fit before any image is decoded; image_size=None takes
the input size from the backbone, as timm does."""

import numpy as np
import pytest

from sparsam import DinoFeaturizer, save_backbone
from sparsam.backbones import create_backbone


@pytest.fixture
def no_decoding(monkeypatch):
    """Makes decoding an image fail the test: validation must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("images were decoded before the parameters were checked")

    monkeypatch.setattr("sparsam._estimator.training_images", refuse)
    monkeypatch.setattr("sparsam._estimator.iter_batches", refuse)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_size": 18}, r"image_size=18 is not a multiple of the backbone's patch size 4"),
        ({"local_crop_size": 6}, r"local_crop_size=6 is not a multiple of .* patch size 4"),
        ({"local_crop_size": 32}, r"local_crop_size=32 is larger than image_size=16"),
        (
            {"backbone_kwargs": {"patch_size": 4, "depth": 2, "embed_dim": 30, "num_heads": 4}},
            r"backbone_kwargs: embed_dim=30 must be a multiple of num_heads=4",
        ),
        (
            {"backbone_kwargs": {"patch_size": 4, "depth": 2, "embed_dim": 20}},
            r"timm cannot build backbone='vit_tiny_patch16_224' at image_size=16 with "
            r"backbone_kwargs=",
        ),
        ({"device": "gpu"}, r"device='gpu' is not a device torch knows"),
    ],
)
def test_impossible_parameters_fail_before_decoding_naming_them(
    tiny_params, tiny_images, no_decoding, change, message
):
    with pytest.raises(ValueError, match=message):
        DinoFeaturizer(**{**tiny_params, **change}).fit(tiny_images)


def test_cuda_device_without_cuda_is_refused_before_decoding(
    tiny_params, tiny_images, no_decoding, monkeypatch
):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda:1' but CUDA is not available"):
        DinoFeaturizer(**tiny_params, device="cuda:1").fit(tiny_images)


def test_xcit_sizes_are_checked_against_its_patch_size(small_xcit_params, tiny_images, no_decoding):
    # timm's XCiT refuses the size itself; the error still names the parameter.
    with pytest.raises(ValueError, match=r"image_size=20 .*patch_size. should divide"):
        DinoFeaturizer(**{**small_xcit_params, "image_size": 20}).fit(tiny_images)


def test_local_crop_size_is_free_when_nothing_is_trained(tiny_params, tiny_images):
    # Local crops exist only during training; epochs=0 must not trip over their size.
    tiny_params.update(epochs=0, local_crop_size=6)
    with pytest.warns(UserWarning, match="untrained"):
        DinoFeaturizer(**tiny_params).fit(tiny_images)


def test_image_size_defaults_to_the_saved_backbones_input_size(tmp_path, tiny_images):
    backbone = create_backbone(
        "vit_tiny_patch16_224",
        image_size=16,
        backbone_kwargs={"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2},
    )
    save_backbone(backbone, tmp_path / "saved")
    featurizer = DinoFeaturizer(pretrained=str(tmp_path / "saved"), epochs=0, verbose=0)
    assert featurizer.image_size is None
    featurizer.fit(tiny_images)
    assert featurizer.data_config_["image_size"] == 16
    explicit = DinoFeaturizer(
        pretrained=str(tmp_path / "saved"), epochs=0, image_size=16, verbose=0
    ).fit(tiny_images)
    np.testing.assert_array_equal(
        featurizer.transform(tiny_images), explicit.transform(tiny_images)
    )


def test_image_size_defaults_to_timms_input_size_for_a_new_backbone(small_xcit_params):
    small_xcit_params.pop("image_size")
    featurizer = DinoFeaturizer(**{**small_xcit_params, "epochs": 0})
    with pytest.warns(UserWarning, match="untrained"):
        featurizer.fit(np.zeros((2, 8, 8), dtype=np.uint8))
    assert featurizer.data_config_["image_size"] == 224  # xcit_small_12_p8_224


def test_image_size_defaults_to_backbone_kwargs_img_size(tiny_params, tiny_images):
    tiny_params.pop("image_size")
    tiny_params["backbone_kwargs"]["img_size"] = 24
    featurizer = DinoFeaturizer(**tiny_params).fit(tiny_images)
    assert featurizer.data_config_["image_size"] == 24
