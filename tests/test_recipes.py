"""The small-data preset: chosen from image size and number of images only."""

import numpy as np
import pytest

from sparsam import DinoFeaturizer
from sparsam.recipes import DIGITS_RECIPE, small_data_recipe


def test_small_images_train_at_16_pixels_with_16_tokens():
    params = small_data_recipe(image_size=8, n_images=1797)
    assert params["image_size"] == 16
    assert params["backbone_kwargs"]["patch_size"] == 4
    assert params["local_crop_size"] == 8


def test_larger_images_train_at_32_pixels_with_16_tokens():
    params = small_data_recipe(image_size=64, n_images=2400)
    assert params["image_size"] == 32
    assert params["backbone_kwargs"]["patch_size"] == 8
    assert params["local_crop_size"] == 16


@pytest.mark.parametrize(("n_images", "epochs"), [(1797, 120), (2400, 91), (100, 300), (10**6, 10)])
def test_epochs_aim_at_a_fixed_number_of_steps(n_images, epochs):
    assert small_data_recipe(image_size=32, n_images=n_images)["epochs"] == epochs


def test_the_recipe_does_not_change_the_digits_recipe_it_builds_on():
    before = dict(DIGITS_RECIPE)
    small_data_recipe(image_size=32, n_images=2400)
    assert before == DIGITS_RECIPE


@pytest.mark.parametrize(
    ("argument", "value"), [("image_size", 0), ("n_images", -1), ("image_size", 2.5)]
)
def test_the_recipe_refuses_bad_sizes_naming_them(argument, value):
    arguments = {"image_size": 32, "n_images": 100, argument: value}
    with pytest.raises(ValueError, match=argument):
        small_data_recipe(**arguments)


def test_a_featurizer_trains_with_the_recipe(tiny_images):
    params = small_data_recipe(image_size=tiny_images.shape[1], n_images=len(tiny_images))
    featurizer = DinoFeaturizer(**{**params, "epochs": 1, "random_state": 0, "verbose": 0})
    embeddings = featurizer.fit(tiny_images).transform(tiny_images)
    # The class token and the mean patch token of all 4 blocks, 96 wide each.
    assert embeddings.shape == (len(tiny_images), 4 * 2 * 96)
    assert np.isfinite(embeddings).all()


def test_the_demo_recipe_is_the_small_data_recipe_of_the_digits():
    assert DIGITS_RECIPE == small_data_recipe(image_size=8, n_images=1797)
    assert DIGITS_RECIPE["epochs"] == 120
