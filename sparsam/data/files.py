"""Reading image files: PIL formats turned upright by their EXIF orientation, and DICOM through
its modality and VOI LUTs, as radiologists' viewers show it.

`read_image_file` gives a file's pixels as a uint8, uint16 or float array; `sparsam.data.inputs`
turns them into uint8 tensors. Every failure is an `ImageDecodeError` naming the image's index
and path and saying what was expected.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "DICOM_SUFFIXES",
    "ImageDecodeError",
    "check_float_range",
    "pil_to_array",
    "read_image_file",
]

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
# The EXIF tag that says how a camera held the sensor: 1 upright, 2-8 mirrored or turned.
_EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """An image that could not be decoded: ``where`` names it, ``problem`` says what is wrong.

    ``str(error)`` is ``f"{where} {problem}"``, e.g. ``"X[3] ('scan.png') could not be
    decoded (...); expected a readable PNG, JPEG, TIFF, BMP or DICOM file"``.
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}")
        self.where = where
        self.problem = problem


def check_float_range(low: float, high: float, where: str) -> None:
    """Refuse float pixels, given by their extremes, that are not finite or outside [0, 1]."""
    # NaN propagates through min and max, so the extremes also reveal non-finite pixels.
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ImageDecodeError(where, "contains NaN or infinite pixels; expected finite values")
    if low < 0 or high > 1:
        raise ImageDecodeError(
            where,
            f"has float pixel values in [{low:.6g}, {high:.6g}]; expected values in [0, 1] "
            "(or pass uint8 or uint16 data)",
        )


def pil_to_array(image: Image.Image, where: str) -> np.ndarray:
    """Return a uint8, uint16 or float array ``(H, W)`` or ``(H, W, 3)`` for any PIL mode."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        array = np.asarray(image)
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 2**16 - 1:
            raise ImageDecodeError(
                where,
                f"is a 32-bit integer image with values in [{low}, {high}]; expected values in "
                "[0, 65535]",
            )
        return array.astype(np.uint16)
    if mode == "F":
        array = np.asarray(image)
        check_float_range(float(array.min()), float(array.max()), where)
        return array
    try:
        if mode == "P":
            # Palette transparency must go through RGBA; PIL warns on a direct RGB conversion.
            image = image.convert("RGBA")
        # An RGB or grey image is read as it is (convert would copy it first).
        return np.asarray(image if image.mode in ("RGB", "L") else image.convert("RGB"))
    except ValueError as error:
        raise ImageDecodeError(
            where, f"has PIL mode {mode!r}, which could not be converted to RGB: {error}"
        ) from error


def read_image_file(path: str | os.PathLike, index: int) -> np.ndarray:
    """The pixels of image file ``X[index]`` at ``path``, as `pil_to_array` or DICOM gives them.

    PIL formats are turned upright by their EXIF orientation (``ImageOps.exif_transpose``,
    as photo viewers do; JPEG and TIFF carry it, PNG rarely). DICOM files (by suffix or the
    ``DICM`` marker) go through `read_dicom`.

    Raises
    ------
    FileNotFoundError
        If no file is at ``path`` any more.
    ImageDecodeError
        If the file cannot be read or decoded, or is larger than PIL's pixel limit.
    """
    where = f"X[{index}] ({os.fspath(path)!r})"
    try:
        file = open(path, "rb")
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"X[{index}]: no file at {os.fspath(path)!r}") from None
    except OSError as error:
        raise ImageDecodeError(
            where, f"could not be read ({error}); expected a readable image file"
        ) from error
    # One open per image: the DICOM marker is sniffed from the file the decoder then reads.
    with file:
        try:
            is_dicom = _is_dicom(path, file)
        except OSError as error:
            raise ImageDecodeError(
                where, f"could not be read ({error}); expected a readable image file"
            ) from error
        if is_dicom:
            return read_dicom(file, where)
        with _open_image(file, where) as image:
            return pil_to_array(_upright(image), where)


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned by its EXIF orientation tag (0x0112); itself when it needs no turn."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    # A broken EXIF block fails in PIL's TIFF-tag parser with many exception types; the
    # pixels are fine, and were read as stored before sparsam honoured the tag.
    except Exception:
        return image
    # exif_transpose copies even an upright image: only called when a turn is due.
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def _open_image(file: BinaryIO, where: str) -> Image.Image:
    """Open and load an image file with PIL; any failure is an ImageDecodeError."""
    image = None
    try:
        with warnings.catch_warnings():
            # PIL only warns between its pixel limit and twice that; refuse both alike, since
            # a warning from a DataLoader worker does not say which file it is about.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(
            where,
            f"has more pixels than PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}, PIL's "
            f"guard against decompression bombs ({error}); expected a smaller image. If the "
            "file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS (None switches the guard off) "
            "before decoding.",
        ) from error
    except MemoryError:
        raise
    # PIL signals unknown formats (UnidentifiedImageError), truncated data and broken chunks
    # through OSError and SyntaxError, and some decoders through ValueError, struct.error,
    # IndexError and others.
    except Exception as error:
        if image is not None:
            image.close()
        raise ImageDecodeError(
            where,
            f"could not be decoded ({error}); expected a readable PNG, JPEG, TIFF, BMP or "
            "DICOM file",
        ) from error
    return image


def _is_dicom(path: str | os.PathLike, file: BinaryIO) -> bool:
    """DICOM by suffix or by the ``DICM`` marker at byte 128 of ``file`` (left at its start)."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    header = file.read(132)
    file.seek(0)
    return header[128:132] == b"DICM"


def read_dicom(file: str | os.PathLike | BinaryIO, where: str) -> np.ndarray:
    """The pixels of a single-frame DICOM file as uint8 ``(H, W)`` or ``(H, W, 3)``.

    Grey images go through the modality LUT (RescaleSlope and RescaleIntercept, or a
    Modality LUT Sequence) and then the VOI LUT, as viewers show them: the file's first
    window (WindowCenter and WindowWidth, with its VOILUTFunction) or VOI LUT Sequence maps
    its output range to 0-255. Without one, data deeper than 8 bits or rescaled is min-max
    scaled to uint8 per image. MONOCHROME1 is inverted last. Compressed transfer syntaxes
    are decoded by pydicom's handlers (``sparsam[dicom]``).
    """
    pydicom, apply_modality_lut, apply_voi_lut = _pydicom(where)
    try:
        dataset = pydicom.dcmread(file)
        pixels = dataset.pixel_array
    # pydicom reports broken, truncated or undecodable files through many exception types.
    except Exception as error:
        raise ImageDecodeError(where, f"could not be decoded as DICOM: {error}") from error
    n_frames = int(_dicom_number(dataset, "NumberOfFrames", 1))
    samples_per_pixel = int(_dicom_number(dataset, "SamplesPerPixel", 1))
    if n_frames > 1 or pixels.ndim != (2 if samples_per_pixel == 1 else 3):
        raise ImageDecodeError(
            where,
            f"holds pixel data of shape {pixels.shape} ({n_frames} frames); expected a "
            "single-frame image",
        )
    if samples_per_pixel != 1:
        # Colour images have no modality or VOI LUT; pydicom gives them as RGB.
        return _min_max_uint8(pixels) if pixels.dtype != np.uint8 else pixels
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    rescaled = (
        "ModalityLUTSequence" in dataset
        or _dicom_number(dataset, "RescaleSlope", 1.0) != 1
        or _dicom_number(dataset, "RescaleIntercept", 0.0) != 0
    )
    try:
        values = apply_modality_lut(pixels, dataset) if rescaled else pixels
        window = _voi_output_range(dataset, values, apply_voi_lut)
        if window is not None:
            values = apply_voi_lut(values, dataset)
    except Exception as error:
        raise ImageDecodeError(
            where, f"has a modality or VOI LUT that could not be applied: {error}"
        ) from error
    if window is not None:
        low, high = window
        values = np.clip(values.astype(np.float64), min(low, high), max(low, high))
        pixels = np.rint((values - low) * (255 / (high - low))).astype(np.uint8)
    elif rescaled or pixels.dtype != np.uint8:
        pixels = _min_max_uint8(values)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels


def _pydicom(where: str) -> tuple[Any, Any, Any]:
    """pydicom and its LUT functions (``pydicom.pixels`` in 3, the older module in 2.4)."""
    try:
        import pydicom
    except ImportError as error:
        raise ImportError(
            f'{where} is a DICOM file; reading it needs pydicom: pip install "sparsam[dicom]"'
        ) from error
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return pydicom, apply_modality_lut, apply_voi_lut


def _voi_output_range(
    dataset: Any, values: np.ndarray, apply_voi_lut: Any
) -> tuple[float, float] | None:
    """The range the file's VOI LUT maps onto (black to white), or None without one."""
    sequence = dataset.get("VOILUTSequence")
    if sequence:
        bits = int(sequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    # pydicom's windowing maps far below and far above the window onto its ends, whose
    # values depend on BitsStored, the pixel representation and the rescale.
    far = np.array([-1e300, 1e300])
    with np.errstate(over="ignore"):
        ends = apply_voi_lut(far, dataset)
    low, high = float(ends[0]), float(ends[1])
    return (low, high) if high != low else None


def _min_max_uint8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = values.min(), values.max()
    if high > low:
        return np.rint((values - low) * (255 / (high - low))).astype(np.uint8)
    return np.zeros(values.shape, dtype=np.uint8)


def _dicom_number(dataset: Any, keyword: str, default: float) -> float:
    value = dataset.get(keyword)
    if value is None or value == "":
        return default
    return float(value)
