"""`write_contact_sheet`: the chosen images as captioned thumbnails on one HTML page or PNG."""

import base64
import io
import itertools
import re

import numpy as np
import pytest
from PIL import Image

from sparsam.labeling import write_contact_sheet
from sparsam.labeling.contact_sheet import is_contact_sheet

# Saturated colours, none grey: the captions' grey text and the white background never match.
COLOURS = [colour for colour in itertools.product((0, 128, 255), repeat=3) if len(set(colour)) > 1][
    :12
]


def solid(colour, height=20, width=20):
    return np.full((height, width, 3), colour, dtype=np.uint8)


def box_of(pixels, colour):
    """(top, left, height, width) of the pixels of ``colour`` in an ``(H, W, 3)`` array."""
    where = np.argwhere((pixels == colour).all(axis=-1))
    assert len(where), f"no pixel of {colour}"
    (top, left), (bottom, right) = where.min(axis=0), where.max(axis=0)
    return top, left, bottom - top + 1, right - left + 1


def embedded_pngs(page: str) -> list[Image.Image]:
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(source))) for source in sources]


def test_png_sheet_lays_the_thumbnails_out_row_by_row_in_the_given_columns(tmp_path):
    images = [solid(colour) for colour in COLOURS]
    sheet = write_contact_sheet(images, tmp_path / "sheet.png", thumbnail_size=32, columns=5)
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    boxes = [box_of(pixels, colour) for colour in COLOURS]
    assert {(height, width) for _, _, height, width in boxes} == {(32, 32)}
    tops = sorted({top for top, *_ in boxes})
    lefts = sorted({left for _, left, *_ in boxes})
    assert len(tops) == 3 and len(lefts) == 5  # 12 images in 5 columns: 3 rows
    assert [(tops.index(top), lefts.index(left)) for top, left, *_ in boxes] == [
        divmod(rank, 5) for rank in range(12)
    ]


def test_png_sheet_keeps_each_images_aspect_ratio(tmp_path):
    images = [solid(COLOURS[0], height=20, width=40), solid(COLOURS[1], height=60, width=15)]
    sheet = write_contact_sheet(images, tmp_path / "sheet.png", thumbnail_size=32)
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    assert box_of(pixels, COLOURS[0])[2:] == (16, 32)
    assert box_of(pixels, COLOURS[1])[2:] == (32, 8)


def test_png_sheet_draws_a_caption_under_each_thumbnail(tmp_path):
    images = [solid(COLOURS[0]), solid(COLOURS[1])]
    sheet = write_contact_sheet(images, tmp_path / "sheet.png", captions=["a", "b"])
    pixels = np.asarray(Image.open(sheet).convert("L"))
    top, left, height, width = box_of(np.asarray(Image.open(sheet).convert("RGB")), COLOURS[0])
    below = pixels[top + height : top + height + 14, left : left + width]
    assert (below < 128).any(), "no dark text under the thumbnail"


def test_grey_images_stay_grey_on_both_sheets(tmp_path):
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    png = write_contact_sheet([grey], tmp_path / "sheet.png", thumbnail_size=32)
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert len(np.unique(pixels[..., 0])) > 16  # the gradient, not a blank sheet
    page = write_contact_sheet([grey], tmp_path / "sheet.html").read_text()
    (thumbnail,) = embedded_pngs(page)
    assert thumbnail.mode == "L"


def test_html_sheet_is_one_page_embedding_every_thumbnail_as_a_png(tmp_path):
    images = [solid(colour, height=10, width=30) for colour in COLOURS[:7]]
    page = write_contact_sheet(images, tmp_path / "sheet.html", thumbnail_size=60).read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<img") == 7
    assert not re.search(r'src="(?!data:)', page), "a thumbnail outside the page"
    thumbnails = embedded_pngs(page)
    assert [image.size for image in thumbnails] == [(60, 20)] * 7
    assert [tuple(np.asarray(image.convert("RGB"))[0, 0]) for image in thumbnails] == COLOURS[:7]


def test_html_captions_show_rank_and_file_name_escaped(tmp_path):
    path = tmp_path / 'a<b>&"c".png'
    Image.fromarray(solid(COLOURS[0])).save(path)
    page = write_contact_sheet([path, solid(COLOURS[1])], tmp_path / "sheet.html").read_text()
    assert "<b>1</b> a&lt;b&gt;&amp;&quot;c&quot;.png</figcaption>" in page
    assert "<b>2</b> </figcaption>" in page
    assert 'a<b>&"c"' not in page
    captioned = write_contact_sheet(
        [path], tmp_path / "captioned.html", captions=["<script>alert(1)</script>"]
    ).read_text()
    assert "<script>" not in captioned and "&lt;script&gt;alert(1)&lt;/script&gt;" in captioned


def test_files_are_decoded_upright_by_their_exif_orientation(tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned 90 degrees clockwise; viewers turn it back
    Image.fromarray(solid(COLOURS[0], height=20, width=40)).save(path, exif=exif)
    page = write_contact_sheet([path], tmp_path / "sheet.html", thumbnail_size=32).read_text()
    (thumbnail,) = embedded_pngs(page)
    assert thumbnail.size == (16, 32)


def test_sheet_with_another_suffix_is_refused_naming_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"sheet\.jpg.*expected a file name ending in \.html"):
        write_contact_sheet([solid(COLOURS[0])], tmp_path / "sheet.jpg")
    assert not (tmp_path / "sheet.jpg").exists()


def test_captions_must_hold_one_text_per_image(tmp_path):
    with pytest.raises(ValueError, match="captions holds 1 texts for 2 images"):
        write_contact_sheet([solid(COLOURS[0])] * 2, tmp_path / "sheet.png", captions=["a"])


def test_an_image_that_cannot_be_decoded_leaves_an_existing_sheet_unchanged(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    sheet = tmp_path / "sheet.html"
    sheet.write_text("earlier sheet")
    with pytest.raises(ValueError, match=r"X\[1\] .*broken\.png"):
        write_contact_sheet([solid(COLOURS[0]), broken], sheet)
    assert sheet.read_text() == "earlier sheet"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken.png", "sheet.html"]


def test_sheets_are_marked_as_sparsams_and_other_files_are_not(tmp_path):
    for name in ("sheet.html", "sheet.png"):
        assert is_contact_sheet(write_contact_sheet([solid(COLOURS[0])], tmp_path / name))
    Image.fromarray(solid(COLOURS[0])).save(tmp_path / "photo.png")
    (tmp_path / "notes.html").write_text("<html><body>my notes</body></html>")
    assert not is_contact_sheet(tmp_path / "photo.png")
    assert not is_contact_sheet(tmp_path / "notes.html")
