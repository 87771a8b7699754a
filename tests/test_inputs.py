"""Specification of sparsam.data.inputs: every accepted input becomes uint8 (3, H, W) tensors."""

import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFile

from sparsam.data import ImageSource, as_image_source, iter_batches, load_images
from sparsam.data.inputs import resize_images


def _random_uint8(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
) -> Path:
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape[:2]
    dataset.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
    if pixels.ndim == 3:
        dataset.PlanarConfiguration = 0
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = pixels.dtype.itemsize * 8
    dataset.BitsStored = bits_stored
    dataset.HighBit = bits_stored - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def _channels_first(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


# Accepted arrays


def test_uint8_array_becomes_contiguous_channels_first_tensor_with_same_values():
    images = _random_uint8(2, 5, 7, 3)

    decoded = as_image_source(images)[1]

    assert decoded.dtype == torch.uint8
    assert decoded.is_contiguous()
    assert torch.equal(decoded, _channels_first(images[1]))


def test_source_length_is_number_of_images():
    assert len(as_image_source(_random_uint8(4, 3, 3))) == 4


@pytest.mark.parametrize("shape", [(1, 4, 5), (1, 4, 5, 1)])
def test_grayscale_array_is_repeated_to_three_identical_channels(shape):
    images = _random_uint8(*shape)

    decoded = as_image_source(images)[0]

    assert decoded.shape == (3, 4, 5)
    for channel in decoded:
        assert torch.equal(channel, torch.from_numpy(images[0].reshape(4, 5)))


def test_alpha_channel_is_dropped():
    images = _random_uint8(1, 4, 5, 4)

    decoded = as_image_source(images)[0]

    assert torch.equal(decoded, _channels_first(images[0, :, :, :3]))


def test_uint8_255_stays_255():
    assert as_image_source(np.full((1, 2, 2), 255, dtype=np.uint8))[0].unique().tolist() == [255]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_array_maps_unit_range_to_uint8_by_rounding(dtype):
    images = np.array([[[0.0, 0.5, 1.0]]], dtype=dtype)

    decoded = as_image_source(images)[0]

    assert decoded[0, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("maximum", "bit_depth"), [(255, 8), (1000, 10), (4095, 12), (10000, 14), (65535, 16)]
)
def test_uint16_array_is_scaled_by_smallest_bit_depth_holding_its_maximum(maximum, bit_depth):
    images = np.array([[[0, maximum // 2, maximum]]], dtype=np.uint16)

    decoded = as_image_source(images)[0]

    expected_middle = round((maximum // 2) * 255 / (2**bit_depth - 1))
    assert decoded[0, 0].tolist() == [0, expected_middle, round(maximum * 255 / (2**bit_depth - 1))]


@pytest.mark.parametrize("container", [np.stack, list], ids=["stacked", "list"])
def test_uint16_image_decodes_the_same_alone_and_beside_a_brighter_or_darker_one(container):
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 1024, size=(4, 4), dtype=np.uint16)
    bright = rng.integers(0, 65536, size=(4, 4), dtype=np.uint16)

    together = as_image_source(container([dim, bright]))

    assert torch.equal(together[0], as_image_source(dim[None])[0])
    assert torch.equal(together[1], as_image_source(bright[None])[0])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_file_decodes_like_the_same_uint16_array(tmp_path, suffix):
    pixels = np.random.default_rng(0).integers(0, 4096, size=(4, 5), dtype=np.uint16)
    path = tmp_path / f"image{suffix}"
    Image.fromarray(pixels).save(path)

    from_file = as_image_source([path, np.full((4, 5), 65535, np.uint16)])[0]

    assert torch.equal(from_file, as_image_source([pixels])[0])


def test_list_of_uint16_arrays_is_scaled_like_the_stacked_array():
    images = np.random.default_rng(0).integers(0, 4096, size=(3, 4, 4), dtype=np.uint16)

    from_list = as_image_source(list(images))
    from_array = as_image_source(images)

    for index in range(3):
        assert torch.equal(from_list[index], from_array[index])


def test_big_endian_uint16_array_is_accepted():
    images = np.full((1, 2, 2), 4095, dtype=">u2")

    assert as_image_source(images)[0].unique().tolist() == [255]


def test_items_are_the_images_as_given_and_read_only():
    stacked = np.zeros((2, 3, 3), dtype=np.uint8)
    listed = [np.zeros((3, 3), dtype=np.uint8), Image.new("L", (2, 2))]

    items = as_image_source(stacked).items

    assert np.shares_memory(items, stacked) and not items.flags.writeable
    assert [id(item) for item in as_image_source(listed).items] == [id(item) for item in listed]


def test_negative_index_counts_from_the_end():
    images = _random_uint8(3, 2, 2)

    assert torch.equal(as_image_source(images)[-1][0], torch.from_numpy(images[2]))


def test_index_out_of_range_raises_index_error():
    with pytest.raises(IndexError, match="index 3 is out of range for 3 images"):
        as_image_source(_random_uint8(3, 2, 2))[3]


def test_image_source_is_returned_unchanged():
    source = as_image_source(_random_uint8(1, 2, 2))

    assert isinstance(source, ImageSource)
    assert as_image_source(source) is source


# Lists of arrays and PIL images


def test_list_of_arrays_keeps_each_native_size():
    source = as_image_source([_random_uint8(5, 7), _random_uint8(9, 4, 3)])

    assert [tuple(source[index].shape) for index in range(2)] == [(3, 5, 7), (3, 9, 4)]


def test_list_of_different_size_arrays_is_resized_to_one_size():
    images = load_images((_random_uint8(5, 7), _random_uint8(9, 4, 3)), image_size=6)

    assert images.shape == (2, 3, 6, 6)
    assert images.dtype == torch.uint8


@pytest.mark.parametrize(
    ("mode", "color", "expected_rgb"),
    [
        ("L", 200, [200, 200, 200]),
        ("1", 1, [255, 255, 255]),
        ("RGB", (10, 20, 30), [10, 20, 30]),
        ("RGBA", (10, 20, 30, 40), [10, 20, 30]),
        ("LA", (70, 9), [70, 70, 70]),
        ("CMYK", (0, 0, 0, 0), [255, 255, 255]),
        ("I;16", 4095, [255, 255, 255]),
        ("I", 65535, [255, 255, 255]),
        ("F", 1.0, [255, 255, 255]),
    ],
)
def test_pil_image_of_any_mode_becomes_rgb_uint8(mode, color, expected_rgb):
    decoded = as_image_source([Image.new(mode, (5, 4), color)])[0]

    assert decoded.shape == (3, 4, 5)
    assert decoded[:, 0, 0].tolist() == expected_rgb


def test_palette_pil_image_takes_colors_from_its_palette():
    image = Image.new("P", (3, 2), 1)
    image.putpalette([0, 0, 0, 10, 20, 30])

    assert as_image_source([image])[0][:, 1, 2].tolist() == [10, 20, 30]


def test_uint16_pil_images_are_scaled_per_image():
    source = as_image_source([Image.new("I;16", (2, 2), 4095), Image.new("I;16", (2, 2), 255)])

    assert [source[index][0, 0, 0].item() for index in range(2)] == [255, 255]


def test_mixed_list_is_decoded_item_by_item(tmp_path):
    path = tmp_path / "image.png"
    Image.new("RGB", (3, 2), (1, 2, 3)).save(path)

    source = as_image_source([np.full((2, 3), 9, np.uint8), Image.new("L", (3, 2), 5), path])

    assert [source[index][:, 0, 0].tolist() for index in range(3)] == [
        [9, 9, 9],
        [5, 5, 5],
        [1, 2, 3],
    ]


# Files


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_lossless_rgb_file_is_decoded_exactly(tmp_path, suffix):
    pixels = _random_uint8(4, 5, 3)
    path = tmp_path / f"image{suffix}"
    Image.fromarray(pixels).save(path)

    assert torch.equal(as_image_source([path])[0], _channels_first(pixels))


def test_jpeg_file_is_decoded_close_to_original(tmp_path):
    path = tmp_path / "image.jpg"
    Image.new("RGB", (8, 8), (200, 100, 50)).save(path, quality=95)

    decoded = as_image_source([path])[0]

    assert decoded.shape == (3, 8, 8)
    assert (decoded.int() - torch.tensor([200, 100, 50])[:, None, None]).abs().max() <= 3


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_file_is_scaled_by_its_bit_depth(tmp_path, suffix):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(np.array([[0, 4095]], dtype=np.uint16)).save(path)

    assert as_image_source([path])[0][0, 0].tolist() == [0, 255]


def test_float_tiff_file_maps_one_to_255(tmp_path):
    path = tmp_path / "image.tif"
    Image.fromarray(np.array([[0.0, 1.0]], dtype=np.float32)).save(path)

    assert as_image_source([path])[0][0, 0].tolist() == [0, 255]


def test_float_tiff_file_outside_unit_range_raises_naming_index_and_path(tmp_path):
    path = tmp_path / "image.tif"
    Image.fromarray(np.array([[0.0, 3.0]], dtype=np.float32)).save(path)
    source = as_image_source([path])

    with pytest.raises(ValueError, match=rf"X\[0\] \('{re.escape(str(path))}'\).*\[0, 3\]"):
        source[0]


def test_dicom_uint16_monochrome2_is_min_max_scaled(tmp_path):
    pixels = np.array([[100, 1100], [2100, 3100]], dtype=np.uint16)
    path = _write_dicom(tmp_path / "image.dcm", pixels)

    decoded = as_image_source([path])[0]

    assert decoded.shape == (3, 2, 2)
    assert decoded[0].tolist() == [[0, 85], [170, 255]]


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[100, 3100]], dtype=np.uint16)
    path = _write_dicom(tmp_path / "image.dcm", pixels, photometric="MONOCHROME1")

    assert as_image_source([path])[0][0, 0].tolist() == [255, 0]


def test_dicom_rgb_8_bit_keeps_its_values(tmp_path):
    pixels = _random_uint8(3, 4, 3)
    path = _write_dicom(tmp_path / "image.dcm", pixels, photometric="RGB", bits_stored=8)

    assert torch.equal(as_image_source([path])[0], _channels_first(pixels))


def test_dicom_without_suffix_is_recognised_by_its_magic_bytes(tmp_path):
    path = _write_dicom(tmp_path / "scan", np.array([[0, 4095]], dtype=np.uint16))

    assert as_image_source([path])[0][0, 0].tolist() == [0, 255]


def test_dicom_without_pydicom_raises_import_error_naming_the_extra(tmp_path, monkeypatch):
    path = _write_dicom(tmp_path / "image.dcm", np.array([[0, 4095]], dtype=np.uint16))
    monkeypatch.setitem(sys.modules, "pydicom", None)
    source = as_image_source([path])

    with pytest.raises(ImportError, match=re.escape('pip install "sparsam[dicom]"')):
        source[0]


@pytest.mark.parametrize(
    "make_paths",
    [
        lambda paths: [str(path) for path in paths],
        lambda paths: list(paths),
        lambda paths: tuple(paths),
        lambda paths: np.array(paths, dtype=object),
        lambda paths: np.array([str(path) for path in paths]),
    ],
    ids=["str list", "PathLike list", "tuple", "object array", "str array"],
)
def test_paths_are_accepted_in_any_container(tmp_path, make_paths):
    paths = [tmp_path / f"{index}.png" for index in range(2)]
    for index, path in enumerate(paths):
        Image.new("L", (2, 2), index * 50).save(path)

    source = as_image_source(make_paths(paths))

    assert [source[index][0, 0, 0].item() for index in range(2)] == [0, 50]


def test_paths_are_not_opened_until_indexed(tmp_path, monkeypatch):
    paths = [tmp_path / f"{index}.png" for index in range(3)]
    for path in paths:
        Image.new("L", (2, 2)).save(path)
    opened = []
    original_open = Image.open

    def counting_open(file, *args, **kwargs):
        # sparsam hands PIL the file it opened itself (to sniff DICOM from the same read).
        opened.append(Path(getattr(file, "name", file)))
        return original_open(file, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)

    source = as_image_source(paths)
    assert opened == []
    source[1]
    assert opened == [paths[1]]


def test_file_deleted_after_validation_raises_only_when_indexed(tmp_path):
    paths = [tmp_path / f"{index}.png" for index in range(2)]
    for path in paths:
        Image.new("L", (2, 2)).save(path)
    source = as_image_source(paths)
    paths[1].unlink()

    source[0]
    with pytest.raises(FileNotFoundError, match=rf"X\[1\].*{re.escape(str(paths[1]))}"):
        source[1]


# Batches


def test_iter_batches_yields_resized_batches_in_order():
    images = np.arange(5, dtype=np.uint8).reshape(5, 1, 1) * np.ones((1, 3, 3), dtype=np.uint8)

    batches = list(iter_batches(images, image_size=2, batch_size=2))

    assert [tuple(batch.shape) for batch in batches] == [(2, 3, 2, 2)] * 2 + [(1, 3, 2, 2)]
    assert torch.cat(batches)[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]


def test_iter_batches_with_one_worker_decodes_paths_in_order(tmp_path):
    paths = [tmp_path / f"{index}.png" for index in range(3)]
    for index, path in enumerate(paths):
        Image.new("L", (4, 4), index * 10).save(path)

    batches = list(iter_batches(paths, image_size=2, batch_size=2, num_workers=1))

    assert [len(batch) for batch in batches] == [2, 1]
    assert torch.cat(batches)[:, 0, 0, 0].tolist() == [0, 10, 20]


def test_images_already_at_image_size_are_not_changed():
    images = _random_uint8(2, 4, 4, 3)

    loaded = load_images(images, image_size=4)

    assert torch.equal(loaded, torch.from_numpy(images).permute(0, 3, 1, 2))


def test_resizing_keeps_a_constant_image_constant():
    loaded = load_images(np.full((1, 7, 5), 77, dtype=np.uint8), image_size=3)

    assert loaded.unique().tolist() == [77]


def test_load_images_equals_concatenated_batches():
    images = _random_uint8(5, 6, 6, 3)

    loaded = load_images(images, image_size=4, batch_size=2)

    assert torch.equal(loaded, torch.cat(list(iter_batches(images, image_size=4, batch_size=2))))


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"image_size": 0, "batch_size": 1}, "image_size"),
        ({"image_size": 2, "batch_size": 0}, "batch_size"),
        ({"image_size": 2, "batch_size": 1, "num_workers": -1}, "num_workers"),
    ],
)
def test_iter_batches_rejects_invalid_sizes_at_the_call(arguments, name):
    with pytest.raises(ValueError, match=name):
        iter_batches(_random_uint8(1, 2, 2), **arguments)


# Errors


@pytest.mark.parametrize("X", [[], (), np.empty((0, 4, 4)), np.array([], dtype=object)], ids=repr)
def test_empty_input_raises(X):
    with pytest.raises(ValueError, match="empty"):
        as_image_source(X)


@pytest.mark.parametrize("shape", [(4, 4), (1, 2, 3, 4, 1)])
def test_array_with_wrong_number_of_dimensions_raises_naming_shape(shape):
    with pytest.raises(ValueError, match=re.escape(f"shape {shape}") + r".*\(n, H, W\)"):
        as_image_source(np.zeros(shape, dtype=np.uint8))


def test_one_dimensional_numeric_array_raises_about_dimensions():
    with pytest.raises(ValueError, match=r"shape \(5,\); expected an array of shape \(n, H, W\)"):
        as_image_source(np.arange(5))


def test_two_dimensional_array_of_paths_raises():
    with pytest.raises(ValueError, match="expected a 1-D array of file paths"):
        as_image_source(np.array([["a.png", "b.png"]], dtype=object))


@pytest.mark.parametrize("shape", [(4,), (1, 2, 2, 3)])
def test_list_item_with_wrong_number_of_dimensions_raises_naming_index(shape):
    X = [_random_uint8(2, 2), np.zeros(shape, dtype=np.uint8)]

    with pytest.raises(ValueError, match=r"X\[1\] has shape .*expected an image of shape \(H, W\)"):
        as_image_source(X)


@pytest.mark.parametrize("channels", [2, 5])
def test_array_with_unsupported_channel_count_raises(channels):
    with pytest.raises(ValueError, match=rf"{channels} channels .*expected 1, 3 or 4"):
        as_image_source(np.zeros((1, 2, 2, channels), dtype=np.uint8))


def test_channels_first_array_error_suggests_transposing():
    with pytest.raises(ValueError, match=re.escape("X.transpose(0, 2, 3, 1)")):
        as_image_source(np.zeros((1, 3, 8, 8), dtype=np.uint8))


@pytest.mark.parametrize("channels", [2, 5])
def test_list_item_with_unsupported_channel_count_raises_naming_index(channels):
    X = [_random_uint8(2, 2), np.zeros((2, 2, channels), dtype=np.uint8)]

    with pytest.raises(ValueError, match=rf"X\[1\] has {channels} channels.*expected 1, 3 or 4"):
        as_image_source(X)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.bool_, np.uint32, np.complex64])
def test_unsupported_dtype_raises_type_error_naming_dtype(dtype):
    name = np.dtype(dtype).name
    with pytest.raises(TypeError, match=rf"X has dtype {name}; expected uint8, uint16, float16"):
        as_image_source(np.zeros((1, 2, 2), dtype=dtype))


def test_list_item_with_unsupported_dtype_raises_naming_index():
    X = [_random_uint8(2, 2), np.zeros((2, 2), dtype=np.int64)]

    with pytest.raises(TypeError, match=r"X\[1\] has dtype int64; expected uint8"):
        as_image_source(X)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("as_list", [False, True], ids=["array", "list"])
def test_non_finite_float_pixels_raise_naming_first_offending_index(bad_value, as_list):
    images = np.zeros((4, 2, 2), dtype=np.float32)
    images[2, 1, 1] = bad_value
    images[3, 0, 0] = bad_value
    X = list(images) if as_list else images

    with pytest.raises(ValueError, match=r"X\[2\] contains NaN or infinite pixels"):
        as_image_source(X)


@pytest.mark.parametrize("as_list", [False, True], ids=["array", "list"])
def test_float_pixels_outside_unit_range_raise_naming_index_and_range(as_list):
    images = np.zeros((3, 2, 2), dtype=np.float64)
    images[1, 0, 0] = 1.5
    images[2, 0, 0] = -0.5
    X = list(images) if as_list else images

    with pytest.raises(ValueError, match=r"X\[1\] has float pixel values in \[0, 1\.5\]"):
        as_image_source(X)


def test_missing_file_raises_file_not_found_naming_index_and_path(tmp_path):
    existing = tmp_path / "there.png"
    Image.new("L", (2, 2)).save(existing)
    missing = tmp_path / "missing.png"

    with pytest.raises(FileNotFoundError, match=rf"X\[1\].*{re.escape(str(missing))}"):
        as_image_source([existing, missing])


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_unreadable_file_raises_value_error_naming_index_and_path_when_decoded(tmp_path, kind):
    path = tmp_path / "bad.png"
    if kind == "garbage":
        path.write_bytes(b"not an image at all")
    else:
        Image.fromarray(_random_uint8(32, 32, 3)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    source = as_image_source([path])

    with pytest.raises(ValueError, match=rf"X\[0\] \('{re.escape(str(path))}'\) could not be"):
        source[0]


def test_decoder_failure_of_any_kind_raises_value_error_naming_index_and_path(
    tmp_path, monkeypatch
):
    path = tmp_path / "image.png"
    Image.new("RGB", (4, 4)).save(path)

    def broken_decoder(image):
        raise IndexError("tile cannot extend outside image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_decoder)
    source = as_image_source([path])

    with pytest.raises(ValueError, match=rf"X\[0\] \('{re.escape(str(path))}'\) could not be"):
        source[0]


@pytest.mark.parametrize("side", [30, 12], ids=["over-twice-the-limit", "over-the-limit"])
def test_file_over_pils_pixel_limit_raises_value_error_naming_index_path_and_limit(
    tmp_path, monkeypatch, side
):
    path = tmp_path / "bomb.png"
    Image.new("L", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    source = as_image_source([np.zeros((2, 2), np.uint8), path])

    expected = rf"X\[1\] \('{re.escape(str(path))}'\) has more pixels than .*MAX_IMAGE_PIXELS=100,"
    with pytest.raises(ValueError, match=expected):
        source[1]


def test_unreadable_dicom_file_raises_value_error_naming_index_and_path(tmp_path):
    pytest.importorskip("pydicom")
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"not a dicom file")
    source = as_image_source([path])

    with pytest.raises(ValueError, match=rf"X\[0\] \('{re.escape(str(path))}'\) could not be"):
        source[0]


@pytest.mark.parametrize("item", [3, {"a": 1}, None, b"a.png"], ids=repr)
def test_unsupported_item_type_raises_type_error_naming_index_and_type(item):
    with pytest.raises(TypeError, match=rf"X\[1\] has type {type(item).__name__}"):
        as_image_source([_random_uint8(2, 2), item])


@pytest.mark.parametrize("X", ["image.png", Path("image.png")], ids=repr)
def test_single_path_raises_type_error_asking_for_a_list(X):
    with pytest.raises(TypeError, match="pass a list of file paths"):
        as_image_source(X)


@pytest.mark.parametrize(
    "X", [3, {"a": 1}, (image for image in [])], ids=["int", "dict", "generator"]
)
def test_unsupported_container_raises_type_error_naming_type(X):
    with pytest.raises(TypeError, match=rf"X has type {type(X).__name__}; expected a numpy array"):
        as_image_source(X)


@pytest.mark.parametrize(
    ("X", "where"),
    [
        (np.zeros((2, 0, 4), dtype=np.uint8), "X has shape"),
        ([_random_uint8(2, 2), np.zeros((3, 0), dtype=np.uint8)], r"X\[1\] has shape"),
        ([Image.new("L", (0, 3))], r"X\[0\] is a PIL image"),
    ],
    ids=["array", "list of arrays", "PIL"],
)
def test_zero_size_image_raises_value_error(X, where):
    with pytest.raises(ValueError, match=rf"{where}.*non-zero"):
        as_image_source(X)


def test_pil_integer_image_outside_uint16_range_raises_naming_index():
    source = as_image_source([Image.new("I", (2, 2), -5)])

    with pytest.raises(ValueError, match=r"X\[0\] is a 32-bit integer image .*\[0, 65535\]"):
        source[0]


# pandas and torch containers


@pytest.mark.parametrize(
    "as_column",
    [lambda paths: pd.Series(paths), lambda paths: pd.DataFrame({"path": paths})],
    ids=["Series", "one-column DataFrame"],
)
def test_pandas_column_of_paths_is_read_like_a_list(tmp_path, as_column):
    paths = [tmp_path / f"{index}.png" for index in range(2)]
    for index, path in enumerate(paths):
        Image.new("L", (2, 2), index * 50).save(path)

    source = as_image_source(as_column([str(path) for path in paths]))

    assert [source[index][0, 0, 0].item() for index in range(2)] == [0, 50]


def test_series_of_arrays_decodes_each_item():
    images = [_random_uint8(3, 4, 3, seed=seed) for seed in range(2)]

    source = as_image_source(pd.Series(images, index=[10, 20]))

    assert torch.equal(source[1], _channels_first(images[1]))


def test_series_item_errors_name_the_position_not_the_index_label(tmp_path):
    series = pd.Series([str(tmp_path / "missing.png")], index=["first"])

    with pytest.raises(FileNotFoundError, match=r"X\[0\]: no file at .*missing.png"):
        as_image_source(series)


def test_dataframe_with_several_columns_raises_naming_them():
    frame = pd.DataFrame({"path": ["a.png"], "label": [0]})

    with pytest.raises(ValueError, match=r"2 columns \['path', 'label'\]; expected one column"):
        as_image_source(frame)


def test_channels_last_uint8_tensor_decodes_like_the_numpy_array():
    images = _random_uint8(2, 5, 4, 3)

    source = as_image_source(torch.from_numpy(images))

    assert torch.equal(source[1], _channels_first(images[1]))


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_first_tensor_is_read_in_torchs_layout(channels):
    images = _random_uint8(2, 5, 4, channels)

    source = as_image_source(torch.from_numpy(images).permute(0, 3, 1, 2))

    expected = as_image_source(images)
    assert all(torch.equal(source[index], expected[index]) for index in range(2))


def test_float_channels_first_tensor_maps_unit_range_to_uint8():
    source = as_image_source(torch.full((1, 3, 2, 2), 0.5, dtype=torch.bfloat16))

    assert source[0].unique().tolist() == [128]


def test_tensor_with_pixels_outside_unit_range_raises_naming_index():
    images = torch.zeros(3, 3, 2, 2)
    images[2] = 2.0

    with pytest.raises(ValueError, match=r"X\[2\] has float pixel values in \[2, 2\]"):
        as_image_source(images)


def test_tensor_of_unsupported_dtype_raises_type_error_naming_dtype():
    with pytest.raises(TypeError, match="X has dtype int64; expected uint8"):
        as_image_source(torch.zeros(1, 3, 2, 2, dtype=torch.int64))


def test_load_images_reports_progress_per_decoded_batch():
    decoded = []

    load_images(_random_uint8(5, 4, 4), image_size=4, batch_size=2, progress=decoded.append)

    assert decoded == [2, 2, 1]


# --- Resizing on uint8 pixels, a batch at a time (issue 19) ----------------------------------


def _float_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """sparsam's resize before it moved to uint8: interpolate floats, round back."""
    resized = torch.nn.functional.interpolate(
        image[None].float(), size=(size, size), mode="bilinear", antialias=True
    )[0]
    return resized.round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("size", [8, 21, 48], ids=["down", "odd", "up"])
def test_uint8_resize_is_within_one_grey_level_of_the_float_resize(size):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 30, 30), dtype=torch.uint8, generator=generator)
    resized = resize_images(list(images), size)
    expected = torch.stack([_float_resize(image, size) for image in images])
    difference = (resized.int() - expected.int()).abs()
    assert difference.max() <= 1
    assert resized.shape == (6, 3, size, size) and resized.is_contiguous()


def test_images_of_several_sizes_are_resized_in_their_order():
    small = torch.full((3, 10, 10), 10, dtype=torch.uint8)
    large = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    resized = resize_images([small, large, large, small], 8)
    assert resized[:, 0, 0, 0].tolist() == [10, 200, 200, 10]


def test_images_already_at_the_size_are_copied_unchanged():
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    assert torch.equal(resize_images([image], 8)[0], image)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.integers(0, 256, (5, 9, 7, 3), dtype=np.uint8),
        lambda rng: rng.integers(0, 256, (5, 9, 7), dtype=np.uint8),
        lambda rng: rng.integers(0, 256, (5, 9, 7, 1), dtype=np.uint8),
        lambda rng: rng.integers(0, 256, (5, 9, 7, 4), dtype=np.uint8),
        lambda rng: rng.random((5, 9, 7, 3), dtype=np.float32),
        lambda rng: rng.random((5, 9, 7)),
        lambda rng: (
            rng.integers(0, 4096, (5, 9, 7)) * [[[1]], [[1]], [[0]], [[1]], [[16]]]
        ).astype(np.uint16),
    ],
    ids=["rgb", "grey", "grey1", "rgba", "float32", "float64", "uint16"],
)
def test_a_stacked_batch_decodes_each_image_as_indexing_does(make):
    source = as_image_source(make(np.random.default_rng(0)))
    indices = [4, 0, 2]
    batch = source.batch(indices)
    assert batch.dtype == torch.uint8 and batch.shape == (3, 3, 9, 7)
    for row, index in enumerate(indices):
        assert torch.equal(batch[row], source[index])


def test_iter_batches_of_a_stacked_array_equal_those_of_a_list_of_its_images():
    images = np.random.default_rng(0).integers(0, 256, (7, 20, 20, 3), dtype=np.uint8)
    stacked = torch.cat(list(iter_batches(images, 12, batch_size=3)))
    listed = torch.cat(list(iter_batches(list(images), 12, batch_size=3)))
    assert torch.equal(stacked, listed)


def test_a_dicom_file_is_opened_once(tmp_path, monkeypatch):
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = _write_dicom(tmp_path / "scan", pixels, bits_stored=8)
    import builtins

    opened = []
    original = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file) == path:
            opened.append(file)
        return original(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    # No suffix: recognised by the DICM marker, sniffed from the same open file.
    image = as_image_source([path])[0]
    assert len(opened) == 1
    assert image.shape == (3, 3, 4)
