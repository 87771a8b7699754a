import pytest
import torch

from sparsam.training.augment import MultiCropAugmentation, normalize

# Everything off: each test switches on the one augmentation it specifies.
NO_AUGMENTATION = {
    "global_crops": 2,
    "local_crops": 1,
    "global_crop_size": 16,
    "local_crop_size": 16,
    "global_crop_scale": (1.0, 1.0),
    "local_crop_scale": (1.0, 1.0),
    "aspect_ratio": (1.0, 1.0),
    "horizontal_flip": 0.0,
    "vertical_flip": 0.0,
    "rotation": 0.0,
    "perspective": 0.0,
    "color_jitter_p": 0.0,
    "grayscale_p": 0.0,
    "blur_p": (0.0, 0.0, 0.0),
    "solarization_p": 0.0,
    # Identity normalization, so crops are in [0, 1] pixel units.
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
}


def random_images(batch=4, height=16, width=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=generator)


def augment(images, seed=0, **parameters):
    augmentation = MultiCropAugmentation(**{**NO_AUGMENTATION, **parameters})
    return augmentation(images, torch.Generator().manual_seed(seed))


def test_returns_global_crops_first_then_local_crops_as_float32():
    augmentation = MultiCropAugmentation(
        global_crops=2, local_crops=3, global_crop_size=16, local_crop_size=8
    )
    crops = augmentation(random_images(height=20, width=20), torch.Generator().manual_seed(0))
    assert [tuple(crop.shape) for crop in crops] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 3
    assert all(crop.dtype == torch.float32 for crop in crops)


def test_same_seed_gives_identical_output():
    augmentation = MultiCropAugmentation(global_crop_size=16, local_crop_size=8)
    images = random_images()
    first = augmentation(images, torch.Generator().manual_seed(3))
    second = augmentation(images, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_different_seed_gives_different_output():
    augmentation = MultiCropAugmentation(global_crop_size=16, local_crop_size=8)
    images = random_images()
    first = augmentation(images, torch.Generator().manual_seed(3))
    second = augmentation(images, torch.Generator().manual_seed(4))
    assert all(not torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_all_augmentations_disabled_gives_normalized_image():
    images = random_images()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for crop in augment(images, mean=mean, std=std):
        torch.testing.assert_close(crop, normalize(images, mean, std), atol=1e-5, rtol=0)


def test_horizontal_flip_mirrors_left_and_right():
    images = random_images()
    crop = augment(images, horizontal_flip=1.0)[0]
    torch.testing.assert_close(crop, images.flip(-1) / 255, atol=1e-5, rtol=0)


def test_vertical_flip_mirrors_top_and_bottom():
    images = random_images()
    crop = augment(images, vertical_flip=1.0)[0]
    torch.testing.assert_close(crop, images.flip(-2) / 255, atol=1e-5, rtol=0)


def test_rotation_by_180_degrees_equals_flipping_both_ways():
    images = random_images()
    crop = augment(images, rotation=(180.0, 180.0))[0]
    torch.testing.assert_close(crop, images.flip(-1, -2) / 255, atol=1e-4, rtol=0)


def test_grayscale_gives_three_equal_channels():
    images = random_images()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    crop = augment(images, grayscale_p=1.0, mean=mean, std=std)[0]
    pixels = crop * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    torch.testing.assert_close(pixels[:, 0], pixels[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2], atol=1e-5, rtol=0)
    assert not torch.allclose(pixels, images / 255, atol=1e-2)


def test_solarization_changes_only_the_second_global_crop():
    images = random_images()
    plain = augment(images, global_crops=2, local_crops=2, solarization_p=0.0)
    solarized = augment(images, global_crops=2, local_crops=2, solarization_p=1.0)
    changed = [not torch.equal(a, b) for a, b in zip(plain, solarized, strict=True)]
    assert changed == [False, True, False, False]
    bright = plain[1] >= 0.5
    torch.testing.assert_close(solarized[1][bright], 1 - plain[1][bright])


@pytest.mark.parametrize("aspect_ratio", [1.0, 4.0])
def test_crop_scale_sets_the_cropped_area_fraction(aspect_ratio):
    # Red rises one step per column, green one per row: bilinear sampling keeps such ramps
    # exact, so a crop's value range gives its width and height in input pixels.
    side, size, step = 64, 16, 3
    ramp = torch.arange(side) * step
    images = torch.zeros(2, 3, side, side, dtype=torch.uint8)
    images[:, 0] = ramp[None, :].to(torch.uint8)
    images[:, 1] = ramp[:, None].to(torch.uint8)
    crop = augment(
        images,
        global_crop_size=size,
        global_crop_scale=(0.25, 0.25),
        aspect_ratio=(aspect_ratio, aspect_ratio),
    )[0] * (255 / step)
    # Output pixel centres span (size - 1) / size of the crop.
    width = (crop[:, 0].amax(dim=(1, 2)) - crop[:, 0].amin(dim=(1, 2))) * size / (size - 1)
    height = (crop[:, 1].amax(dim=(1, 2)) - crop[:, 1].amin(dim=(1, 2))) * size / (size - 1)
    torch.testing.assert_close(width * height / side**2, torch.full((2,), 0.25), atol=1e-3, rtol=0)
    torch.testing.assert_close(width / height, torch.full((2,), aspect_ratio), atol=1e-3, rtol=0)


def test_works_for_a_batch_of_one():
    augmentation = MultiCropAugmentation(global_crop_size=16, local_crop_size=8)
    crops = augmentation(random_images(batch=1), torch.Generator().manual_seed(0))
    assert [crop.shape[0] for crop in crops] == [1] * 7
    assert all(torch.isfinite(crop).all() for crop in crops)


def test_non_square_images_give_square_crops():
    augmentation = MultiCropAugmentation(global_crop_size=16, local_crop_size=8)
    crops = augmentation(random_images(height=12, width=30), torch.Generator().manual_seed(0))
    assert [tuple(crop.shape[1:]) for crop in crops] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 5
    assert all(torch.isfinite(crop).all() for crop in crops)


def test_normalize_subtracts_mean_and_divides_by_std():
    images = torch.full((1, 3, 2, 2), 51, dtype=torch.uint8)
    normalized = normalize(images, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    expected = torch.tensor([0.2, 0.0, -0.2])[None, :, None, None].expand(1, 3, 2, 2)
    torch.testing.assert_close(normalized, expected)


def test_float_images_are_rejected_with_their_dtype():
    augmentation = MultiCropAugmentation(global_crop_size=16, local_crop_size=8)
    with pytest.raises(TypeError, match=r"uint8.*float32"):
        augmentation(torch.rand(1, 3, 16, 16), torch.Generator().manual_seed(0))


def test_invalid_probability_is_named_in_the_error():
    augmentation = MultiCropAugmentation(global_crop_size=16, local_crop_size=8, grayscale_p=2.0)
    with pytest.raises(ValueError, match="grayscale_p"):
        augmentation(random_images(), torch.Generator().manual_seed(0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_a_cpu_generator():
    augmentation = MultiCropAugmentation(global_crop_size=32, local_crop_size=16)
    images = random_images(height=40, width=48).cuda()
    crops = augmentation(images, torch.Generator().manual_seed(0))
    assert [tuple(crop.shape) for crop in crops] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 5
    assert all(crop.device.type == "cuda" and torch.isfinite(crop).all() for crop in crops)
    on_cuda_generator = augmentation(images, torch.Generator("cuda").manual_seed(0))
    assert [crop.shape for crop in on_cuda_generator] == [crop.shape for crop in crops]


def test_imagenet_constants_are_timms_under_sparsams_names():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from sparsam.backbones import IMAGENET_MEAN as BACKBONES_MEAN
    from sparsam.backbones import IMAGENET_STD as BACKBONES_STD
    from sparsam.training.augment import IMAGENET_MEAN, IMAGENET_STD

    assert IMAGENET_MEAN == BACKBONES_MEAN == IMAGENET_DEFAULT_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == BACKBONES_STD == IMAGENET_DEFAULT_STD == (0.229, 0.224, 0.225)
