"""`write_contact_sheet`: many images as thumbnails on one page, for the person labeling them.

Labeling goes faster with the chosen images side by side than opened one file at a time. The
sheet is one self-contained HTML page (each thumbnail a base64 PNG inside it, so it can be
mailed or opened offline) or one PNG grid. The images are decoded as sparsam decodes them for
the backbone (`sparsam.data.as_image_source`): photos upright by their EXIF orientation, DICOM
through its modality and VOI LUTs.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from sparsam._files import atomic_write
from sparsam.data.inputs import as_image_source

__all__ = ["GENERATOR", "SHEET_SUFFIXES", "is_contact_sheet", "write_contact_sheet"]

# Marks every sheet (HTML <meta name="generator">, PNG text "Software"): a file that carries it
# was written by sparsam, so `sparsam select --overwrite` may replace it; other files never.
GENERATOR = "sparsam contact sheet"
SHEET_SUFFIXES = (".html", ".png")
# Pixels between thumbnails and around the grid of a PNG sheet.
_GAP = 8
_CAPTION_COLOUR = (40, 40, 40)


def write_contact_sheet(
    images: Any,
    path: str | os.PathLike[str],
    *,
    captions: Sequence[str] | None = None,
    thumbnail_size: int = 128,
    columns: int = 10,
) -> Path:
    """Write ``images`` as a grid of captioned thumbnails to one HTML page or one PNG.

    Each thumbnail fits in a square of ``thumbnail_size`` pixels with the image's aspect ratio
    kept: larger images are shrunk with a Lanczos filter, smaller ones enlarged pixel by pixel
    (nearest neighbour), so that a 28-pixel image is no stamp and shows its real pixels. Grey
    images stay grey. Each is captioned with its rank (1 for the first image) and its caption.

    Parameters
    ----------
    images : list of paths or arrays, or a stacked array
        File paths (PNG, JPEG, TIFF, BMP, DICOM), uint8 arrays ``(H, W)`` or ``(H, W, 3)``,
        or anything else `sparsam.data.as_image_source` takes, in the order to show them.
    path : str or path-like
        ``*.html``: one self-contained page, the thumbnails embedded as base64 PNG images,
        the full path of a file shown when the mouse rests on its thumbnail. ``*.png``: one
        grid image, the captions drawn under the thumbnails (cut short with "..." when wider).
        Written atomically (a failure leaves an existing file as it was); its folder is
        created if missing.
    captions : sequence of str, optional
        One text per image, shown after its rank; by default the file name of a path and
        nothing for an array. Escaped in HTML.
    thumbnail_size : int, default=128
        Longest side of every thumbnail, in pixels.
    columns : int, default=10
        Thumbnails per row (fewer when there are fewer images).

    Returns
    -------
    path : Path
        The file written.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.html`` or ``.png``, ``captions`` does not hold one
        text per image, ``thumbnail_size`` or ``columns`` is not a positive int, or an image
        cannot be decoded (naming its index and file).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> images = [np.full((20, 40), 60 * k, dtype=np.uint8) for k in range(4)]
    >>> sheet = write_contact_sheet(images, f"{folder}/sheet.png", thumbnail_size=32, columns=2)
    >>> Image.open(sheet).mode
    'RGB'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SHEET_SUFFIXES:
        raise ValueError(
            f"contact sheet {str(path)!r}: expected a file name ending in .html (one web page) "
            "or .png (one image)."
        )
    _check_positive(thumbnail_size, "thumbnail_size")
    _check_positive(columns, "columns")
    source = as_image_source(images)
    texts = _captions(source.items, captions)
    thumbnails = [_thumbnail(source, index, thumbnail_size) for index in range(len(source))]
    if suffix == ".html":
        titles = [_title(item) for item in source.items]
        content = _html_page(thumbnails, texts, titles, path.stem, thumbnail_size, columns)
    else:
        content = _png_grid(thumbnails, texts, thumbnail_size, columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        file.write(content)
    return path


def _check_positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")


def _captions(items: Any, captions: Sequence[str] | None) -> list[str]:
    """The caption of each image: the given ones, or the file name of a path."""
    if captions is None:
        return [Path(item).name if isinstance(item, str | os.PathLike) else "" for item in items]
    captions = [str(caption) for caption in captions]
    if len(captions) != len(items):
        raise ValueError(
            f"captions holds {len(captions)} texts for {len(items)} images; expected one "
            "caption per image."
        )
    return captions


def _title(item: Any) -> str | None:
    """What the page shows when the mouse rests on a thumbnail: a file's full path."""
    return os.fspath(item) if isinstance(item, str | os.PathLike) else None


def _thumbnail(source: Any, index: int, size: int) -> Image.Image:
    """Image ``index`` fitted into ``size`` × ``size`` pixels, aspect ratio kept; grey
    images (all three channels equal, as the decoder repeats them) in mode ``"L"``."""
    pixels = source[index].permute(1, 2, 0).numpy()
    grey = bool(
        (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    )
    image = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if grey else pixels))
    scale = size / max(image.size)
    shape = tuple(max(1, round(side * scale)) for side in image.size)
    # Shrinking averages (Lanczos); enlarging shows the real pixels instead of inventing a blur.
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    return image.resize(shape, resample)


def _png_bytes(image: Image.Image, software: str | None = None) -> bytes:
    info = None
    if software is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", software)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _html_page(
    thumbnails: list[Image.Image],
    captions: list[str],
    titles: list[str | None],
    name: str,
    size: int,
    columns: int,
) -> bytes:
    """One HTML page holding every thumbnail as a base64 PNG, with its rank and caption."""
    figures = []
    for rank, (thumbnail, caption, title) in enumerate(
        zip(thumbnails, captions, titles, strict=True), start=1
    ):
        data = base64.b64encode(_png_bytes(thumbnail)).decode("ascii")
        hover = f' title="{html.escape(title)}"' if title is not None else ""
        width, height = thumbnail.size
        figures.append(
            f'<figure{hover}><img src="data:image/png;base64,{data}" width="{width}" '
            f'height="{height}" alt="{rank}"><figcaption><b>{rank}</b> '
            f"{html.escape(caption)}</figcaption></figure>"
        )
    title = html.escape(f"{name}: {len(thumbnails)} images")
    columns = min(columns, len(thumbnails))
    style = (
        "body{font-family:sans-serif;margin:1em;background:#fff;color:#222}"
        f".sheet{{display:grid;grid-template-columns:repeat({columns},{size + 16}px);gap:8px}}"
        "figure{margin:0;padding:4px;border:1px solid #ddd;text-align:center}"
        f"figure img{{display:block;margin:auto;max-width:{size}px;image-rendering:pixelated}}"
        "figcaption{font-size:12px;overflow-wrap:anywhere;margin-top:4px}"
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="generator" content="{GENERATOR}">\n<title>{title}</title>\n'
        f"<style>{style}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        '<div class="sheet">\n' + "\n".join(figures) + "\n</div>\n</body>\n</html>\n"
    )
    return page.encode("utf-8")


def _png_grid(thumbnails: list[Image.Image], captions: list[str], size: int, columns: int) -> bytes:
    """One PNG: the thumbnails row by row, each centred in its cell over its caption."""
    font = ImageFont.load_default()
    line_height = font.getbbox("Ag")[3] + 2
    columns = min(columns, len(thumbnails))
    rows = math.ceil(len(thumbnails) / columns)
    cell_width, cell_height = size + _GAP, size + line_height + _GAP
    sheet = Image.new(
        "RGB", (columns * cell_width + _GAP, rows * cell_height + _GAP), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for rank, (thumbnail, caption) in enumerate(zip(thumbnails, captions, strict=True), start=1):
        row, column = divmod(rank - 1, columns)
        x, y = _GAP + column * cell_width, _GAP + row * cell_height
        width, height = thumbnail.size
        sheet.paste(thumbnail.convert("RGB"), (x + (size - width) // 2, y + (size - height) // 2))
        text = _fitted(draw, _drawable(f"{rank} {caption}".strip(), font), font, size)
        draw.text((x, y + size + 1), text, fill=_CAPTION_COLOUR, font=font)
    return _png_bytes(sheet, GENERATOR)


def _drawable(text: str, font: Any) -> str:
    """``text`` as ``font`` can draw it: PIL's bitmap font (the default font where Pillow was
    built without FreeType) fails on characters outside Latin-1, so those become "?"."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def _fitted(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text`` cut short with "..." to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def is_contact_sheet(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` is a sheet `write_contact_sheet` wrote (by its mark).

    A command may replace such a file; any other file it must leave alone.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            with Image.open(path) as image:
                return getattr(image, "text", {}).get("Software") == GENERATOR
        with open(path, "rb") as file:
            head = file.read(1024)
    except (OSError, ValueError):  # unreadable, or PIL's UnidentifiedImageError (an OSError)
        return False
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head
