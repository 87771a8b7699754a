"""Files decoded as viewers show them: DICOM through its VOI LUT, photos by EXIF orientation."""

import numpy as np
import pytest
from PIL import Image

from sparsam.data import as_image_source

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def dicom_dataset(pixels: np.ndarray, path, **elements) -> FileDataset:
    """An uncompressed single-frame grey DICOM dataset of ``pixels`` with extra ``elements``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = pixels.dtype.itemsize * 8
    dataset.BitsStored = 12 if pixels.dtype.itemsize == 2 else 8
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    return dataset


def decoded(path) -> list[list[int]]:
    return as_image_source([path])[0][0].tolist()


def test_dicom_window_maps_centre_and_width_to_the_grey_range(tmp_path):
    # Window 1000 +- 200: 800 and below black, 1200 and above white, linear between.
    pixels = np.array([[0, 800, 1000, 1200, 4000]], dtype=np.uint16)
    path = tmp_path / "window.dcm"
    dicom_dataset(pixels, path, WindowCenter=1000, WindowWidth=400).save_as(
        path, enforce_file_format=True
    )

    values = decoded(path)[0]

    assert values[:2] == [0, 0] and values[3:] == [255, 255]
    assert abs(values[2] - 128) <= 1


def test_dicom_window_is_applied_after_the_rescale(tmp_path):
    # CT: stored 0..4095 with intercept -1024 gives -1024..3071 HU; a soft-tissue window
    # 40 +- 200 HU shows air black and bone white.
    pixels = np.array([[0, 1024 + 40, 4095]], dtype=np.uint16)
    path = tmp_path / "ct.dcm"
    dicom_dataset(
        pixels,
        path,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
    ).save_as(path, enforce_file_format=True)

    values = decoded(path)[0]

    assert values[0] == 0 and values[2] == 255 and abs(values[1] - 128) <= 1


def test_dicom_monochrome1_is_inverted_after_the_window(tmp_path):
    pixels = np.array([[800, 1200]], dtype=np.uint16)
    path = tmp_path / "mono1.dcm"
    dicom_dataset(
        pixels, path, PhotometricInterpretation="MONOCHROME1", WindowCenter=1000, WindowWidth=400
    ).save_as(path, enforce_file_format=True)

    assert decoded(path)[0] == [255, 0]


def test_dicom_without_a_window_is_min_max_scaled(tmp_path):
    pixels = np.array([[100, 1100, 2100, 3100]], dtype=np.uint16)
    path = tmp_path / "plain.dcm"
    dicom_dataset(pixels, path).save_as(path, enforce_file_format=True)

    assert decoded(path)[0] == [0, 85, 170, 255]


def test_rle_compressed_dicom_decodes_as_the_uncompressed_file(tmp_path):
    from pydicom.uid import RLELossless

    pixels = np.random.default_rng(0).integers(0, 4096, (6, 5), dtype=np.uint16)
    plain, compressed = tmp_path / "plain.dcm", tmp_path / "rle.dcm"
    dicom_dataset(pixels, plain, WindowCenter=2000, WindowWidth=3000).save_as(
        plain, enforce_file_format=True
    )
    dataset = dicom_dataset(pixels, compressed, WindowCenter=2000, WindowWidth=3000)
    try:
        dataset.compress(RLELossless)
    except (AttributeError, RuntimeError, NotImplementedError) as error:
        pytest.skip(f"this pydicom cannot write RLE Lossless: {error}")
    dataset.save_as(compressed, enforce_file_format=True)

    assert pydicom.dcmread(compressed).file_meta.TransferSyntaxUID == RLELossless
    assert decoded(compressed) == decoded(plain)


def test_jpeg_baseline_dicom_decodes_through_pillow(tmp_path):
    from io import BytesIO

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    pixels = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    jpeg = BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=100)
    path = tmp_path / "jpeg.dcm"
    dataset = dicom_dataset(pixels, path)
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.PixelData = encapsulate([jpeg.getvalue()])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)

    values = np.array(decoded(path))

    assert values.shape == (16, 16)
    assert np.abs(values.astype(int) - pixels).max() <= 3


def write_photo(path, orientation: int, format: str) -> np.ndarray:
    """A 2x3 photo whose EXIF orientation tag is ``orientation``; its stored pixels."""
    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 100, "subsampling": 0} if format == "JPEG" else {}
    Image.fromarray(pixels).convert("RGB").save(path, format=format, exif=exif, **options)
    return pixels


# What a viewer shows for each EXIF orientation, as numpy operations on the stored pixels.
UPRIGHT = {
    1: lambda pixels: pixels,
    2: np.fliplr,
    3: lambda pixels: np.rot90(pixels, 2),
    4: np.flipud,
    5: np.transpose,
    6: lambda pixels: np.rot90(pixels, -1),
    7: lambda pixels: np.rot90(pixels, 2).T,
    8: lambda pixels: np.rot90(pixels, 1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_every_exif_orientation_is_turned_as_viewers_turn_it(tmp_path, orientation):
    path = tmp_path / "photo.tif"
    stored = write_photo(path, orientation, "TIFF")

    image = as_image_source([path])[0][0].numpy()

    np.testing.assert_array_equal(image, UPRIGHT[orientation](stored))


@pytest.mark.parametrize(("suffix", "format"), [(".jpg", "JPEG"), (".tif", "TIFF")])
def test_exif_orientation_turns_the_photo_upright(tmp_path, suffix, format):
    # Orientation 6: the camera was turned 90 degrees clockwise; viewers turn it back.
    path = tmp_path / f"photo{suffix}"
    stored = write_photo(path, 6, format)

    image = as_image_source([path])[0][0].numpy()

    assert image.shape == (3, 2)
    np.testing.assert_allclose(image, np.rot90(stored, k=-1), atol=3)


def test_exif_orientation_1_leaves_the_pixels_as_stored(tmp_path):
    path = tmp_path / "photo.tif"
    stored = write_photo(path, 1, "TIFF")

    np.testing.assert_array_equal(as_image_source([path])[0][0].numpy(), stored)
