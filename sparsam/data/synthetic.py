"""Seeded synthetic image sets for the few-shot suite: cytology, tissue textures, chest
radiographs and skin lesions.

Both are drawn by code, with no download and no bundled image, so that a benchmark or a test can
ask "did DINO make the features better?" on data unlike digits. Each generator returns
``(images, labels, class_names)`` like the loaders of `sparsam.datasets`, with ``images`` a uint8
array ``(n, image_size, image_size, 3)``. Image ``i`` depends only on ``random_state`` and ``i``:
a larger ``n_samples`` appends images and leaves the first ones unchanged.

Images are drawn at twice the requested size and averaged down (anti-aliasing), as optical
densities turned into RGB by Beer-Lambert's law: of two stains (haematoxylin and eosin,
Ruifrok and Johnston 2001) as a bright-field microscope forms colour, of melanin, deep melanin
and haemoglobin on skin (dermoscopy), or grey (radiographs: brighter where denser).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["make_cytology", "make_radiographs", "make_skin_lesions", "make_tissue_textures"]

# Optical density per unit of stain, RGB (Ruifrok and Johnston 2001, normalised rows).
_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])

CYTOLOGY_CLASSES = (
    "basophil",
    "blast",
    "eosinophil",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "normoblast",
    "plasma_cell",
)

TEXTURE_CLASSES = tuple(
    f"{texture}_{palette}"
    for texture in ("fibres", "granular", "nuclei", "vacuoles")
    for palette in ("eosin", "haematoxylin")
)


def make_cytology(
    n_samples: int = 2400,
    *,
    image_size: int = 32,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Single white blood cells whose class is morphology, under stain and imaging nuisances.

    Eight classes, balanced, named after bone marrow cells. The class is carried by the shape
    of the nucleus (round, kidney-shaped, two or three to four lobes, eccentric), its size
    relative to the cell, nucleoli, and the size and number of cytoplasmic granules. The
    nuisances, drawn per image, are the stain's colour (both stain vectors rotated and their
    intensities scaled), rotation (any angle), scale (cell size x0.8-1.25), a position
    offset, blur, the background's tint and red blood cells around the cell, and pixel noise.
    A feature that ignores colour, orientation and scale loses nothing; flips and rotations
    preserve every class.

    Parameters
    ----------
    n_samples : int, default=2400
        Number of images; class ``i % 8`` for image ``i``.
    image_size : int, default=32
        Side of the square images, at least 8.
    random_state : int, default=0
        Seed; image ``i`` depends only on it and ``i``.

    Returns
    -------
    images : ndarray of shape (n_samples, image_size, image_size, 3), uint8
    labels : ndarray of shape (n_samples,), int64
    class_names : list of str

    Examples
    --------
    >>> from sparsam.datasets import make_cytology
    >>> images, labels, class_names = make_cytology(16, image_size=32)
    >>> images.shape, images.dtype, class_names[labels[0]]
    ((16, 32, 32, 3), dtype('uint8'), 'basophil')
    """
    return _generate(n_samples, image_size, random_state, _draw_cell, CYTOLOGY_CLASSES)


def make_tissue_textures(
    n_samples: int = 2400,
    *,
    image_size: int = 32,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tissue-like patches whose class is texture and stain colour together.

    Eight classes, balanced: four textures (oriented fibres, fine granular noise, dense small
    nuclei, round vacuoles), each in an eosin-rich (pink) and a haematoxylin-rich (purple)
    variant. Every class has its own stain balance (haematoxylin share 0.1 to 0.9 in steps of
    0.11, drawn within ±0.06), ordered so that classes of neighbouring colour differ in
    texture: the mean colour alone separates neighbours poorly (SVC at 10 labels per class:
    0.51 balanced accuracy) and the texture alone (grey pixels: 0.33) worse, so an
    augmentation that removes colour (strong hue jitter, grayscale) removes half the class.
    The nuisances, drawn per image, are orientation, texture scale (x0.8-1.25), stain
    intensity, a small hue shift of both stains, blur and pixel noise.

    Parameters
    ----------
    n_samples : int, default=2400
        Number of images; class ``i % 8`` for image ``i``.
    image_size : int, default=32
        Side of the square images, at least 8.
    random_state : int, default=0
        Seed; image ``i`` depends only on it and ``i``.

    Returns
    -------
    images : ndarray of shape (n_samples, image_size, image_size, 3), uint8
    labels : ndarray of shape (n_samples,), int64
    class_names : list of str

    Examples
    --------
    >>> from sparsam.datasets import make_tissue_textures
    >>> images, labels, class_names = make_tissue_textures(16, image_size=32)
    >>> images.shape, class_names[labels[1]]
    ((16, 32, 32, 3), 'fibres_haematoxylin')
    """
    return _generate(n_samples, image_size, random_state, _draw_texture, TEXTURE_CLASSES)


RADIOGRAPH_CLASSES = (
    "normal",
    "nodule_right_upper",
    "nodule_left_lower",
    "cardiomegaly",
    "effusion_right",
    "effusion_left",
)

LESION_CLASSES = (
    "regular_uniform",
    "irregular_uniform",
    "globules",
    "network",
    "multicolour",
    "streaks",
)


def make_radiographs(
    n_samples: int = 2400,
    *,
    image_size: int = 32,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Grey chest-radiograph-like images whose class depends on the side: a fixed orientation.

    Six classes, balanced: normal; a nodule in the right upper lung; a nodule in the left
    lower lung; an enlarged heart; a pleural effusion (a dense lower lung with a curved upper
    edge) on the right; the same on the left. The patient's right is the image's left, as
    radiographs are read. The classes that differ only by side swap under a horizontal flip,
    and the nodules' lobes under a vertical one: flips and large rotations destroy labels
    here. The nuisances, drawn per image, are exposure and contrast, the body's size and
    position, a rotation of at most 6°, lung and heart sizes within the normal range, the
    nodule's size and place within its lobe, the effusion's height, blur and noise.

    Parameters
    ----------
    n_samples : int, default=2400
        Number of images; class ``i % 6`` for image ``i``.
    image_size : int, default=32
        Side of the square images, at least 8.
    random_state : int, default=0
        Seed; image ``i`` depends only on it and ``i``.

    Returns
    -------
    images : ndarray of shape (n_samples, image_size, image_size, 3), uint8
        Grey: the three channels are equal.
    labels : ndarray of shape (n_samples,), int64
    class_names : list of str

    Examples
    --------
    >>> from sparsam.datasets import make_radiographs
    >>> images, labels, class_names = make_radiographs(12, image_size=32)
    >>> images.shape, class_names[labels[3]], bool((images[..., 0] == images[..., 2]).all())
    ((12, 32, 32, 3), 'cardiomegaly', True)
    """
    return _generate(
        n_samples, image_size, random_state, _draw_radiograph, RADIOGRAPH_CLASSES, grey=True
    )


def make_skin_lesions(
    n_samples: int = 2400,
    *,
    image_size: int = 32,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Dermoscopy-like pigmented lesions on skin whose class is border, pattern and colours.

    Six classes, balanced: a regular round border and uniform brown; an irregular border and
    uniform brown; dark globules inside; a reticular (net-like) pigment network; several
    colours (brown, blue-grey and red zones); radial streaks at an irregular border. The
    nuisances, drawn per image, are skin tone, the lesion's size, darkness, rotation and
    position, the dermoscope's dark vignette, hairs crossing the image, blur and noise. The
    lesion has no up or down: flips and rotations preserve every class.

    Parameters
    ----------
    n_samples : int, default=2400
        Number of images; class ``i % 6`` for image ``i``.
    image_size : int, default=32
        Side of the square images, at least 8.
    random_state : int, default=0
        Seed; image ``i`` depends only on it and ``i``.

    Returns
    -------
    images : ndarray of shape (n_samples, image_size, image_size, 3), uint8
    labels : ndarray of shape (n_samples,), int64
    class_names : list of str

    Examples
    --------
    >>> from sparsam.datasets import make_skin_lesions
    >>> images, labels, class_names = make_skin_lesions(12, image_size=32)
    >>> images.shape, class_names[labels[4]]
    ((12, 32, 32, 3), 'multicolour')
    """
    return _generate(n_samples, image_size, random_state, _draw_lesion, LESION_CLASSES)


def _generate(n_samples, image_size, random_state, draw, class_names, grey=False):
    for name, value, low in (("n_samples", n_samples, 1), ("image_size", image_size, 8)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise ValueError(f"random_state must be an int, got {random_state!r}.")
    n_classes = len(class_names)
    labels = np.arange(n_samples, dtype=np.int64) % n_classes
    images = np.empty((n_samples, image_size, image_size, 3), dtype=np.uint8)
    for index in range(n_samples):
        rng = np.random.default_rng([int(random_state), index])
        optical_density = draw(rng, int(labels[index]), 2 * image_size)
        rgb = np.exp(-optical_density)
        # Averaging 2 x 2 blocks is the anti-aliasing of a camera pixel.
        rgb = rgb.reshape(image_size, 2, image_size, 2, 3).mean(axis=(1, 3))
        noise_shape = (*rgb.shape[:2], 1) if grey else rgb.shape
        rgb = rgb + rng.normal(0.0, 0.015, noise_shape)
        images[index] = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return images, labels, list(class_names)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [-1, 1] (y, x)."""
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(axis, axis, indexing="ij")


def _soft(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """1 inside (negative distance), 0 outside, a smooth edge of about ``width``."""
    return 1.0 / (1.0 + np.exp(np.clip(signed_distance / width, -30, 30)))


def _rotate(y, x, angle):
    cos, sin = np.cos(angle), np.sin(angle)
    return cos * y - sin * x, sin * y + cos * x


def _stain(rng: np.random.Generator, vector: np.ndarray, hue: float) -> np.ndarray:
    """A stain vector turned by a small random rotation in OD space, at a random intensity."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-hue, hue)
    turned = (
        vector * np.cos(angle)
        + np.cross(axis, vector) * np.sin(angle)
        + axis * axis.dot(vector) * (1 - np.cos(angle))
    )
    return np.abs(turned) / np.linalg.norm(turned) * rng.uniform(0.7, 1.35)


def _blur(density: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    sigma = rng.uniform(0.0, 1.2) * size / 32
    if sigma < 0.1:
        return density
    return ndimage.gaussian_filter(density, sigma=(sigma, sigma, 0), mode="nearest")


# Cell radius (in units of the half image), nucleus radius relative to the cell, lobes,
# granules (count, radius relative to the cell), per class of CYTOLOGY_CLASSES.
_CELLS = {
    "basophil": dict(cell=0.62, nucleus=0.45, lobes=2, granules=(22, 0.10), granule_stain="h"),
    "blast": dict(cell=0.78, nucleus=0.82, lobes=1, nucleoli=2),
    "eosinophil": dict(cell=0.68, nucleus=0.34, lobes=2, granules=(26, 0.09), granule_stain="e"),
    "lymphocyte": dict(cell=0.45, nucleus=0.86, lobes=1),
    "monocyte": dict(cell=0.82, nucleus=0.58, lobes=1, kidney=True),
    "neutrophil": dict(cell=0.65, nucleus=0.26, lobes=4, granules=(40, 0.035), granule_stain="e"),
    "normoblast": dict(cell=0.40, nucleus=0.58, lobes=1, dense=True),
    "plasma_cell": dict(cell=0.70, nucleus=0.48, lobes=1, eccentric=True, elongation=1.35),
}


def _draw_cell(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    cell = _CELLS[CYTOLOGY_CLASSES[label]]
    y, x = _grid(size)
    haematoxylin = _stain(rng, _HAEMATOXYLIN, 0.35)
    eosin = _stain(rng, _EOSIN, 0.35)
    edge = 1.5 / size
    # Background: red blood cells (pale eosin discs with a paler centre) and a tint.
    density = np.zeros((size, size, 3))
    for _ in range(rng.integers(0, 5)):
        cy, cx = rng.uniform(-1.1, 1.1, 2)
        radius = rng.uniform(0.22, 0.32)
        distance = np.hypot(y - cy, x - cx)
        disc = _soft(distance - radius, edge) * (1 - 0.5 * _soft(distance - radius * 0.5, edge))
        density += 0.35 * disc[..., None] * eosin
    density += rng.uniform(0.0, 0.12) * _stain(rng, _EOSIN, 0.6)
    # The cell, rotated, scaled and shifted as a whole.
    scale = rng.uniform(0.8, 1.25)
    cy, cx = rng.uniform(-0.1, 0.1, 2)
    v, u = _rotate(y - cy, x - cx, rng.uniform(0, 2 * np.pi))
    v, u = v / scale, u / scale
    radius = cell["cell"] * rng.uniform(0.93, 1.07)
    elongation = cell.get("elongation", 1.0) * rng.uniform(0.95, 1.1)
    body = _soft(np.hypot(v / elongation, u) - radius, edge)
    cytoplasm = 0.35 * body
    nucleus_radius = radius * cell["nucleus"]
    ny = radius * elongation * 0.45 if cell.get("eccentric") else 0.0
    lobes = cell["lobes"]
    if lobes == 1:
        nucleus = _soft(np.hypot(v - ny, u) - nucleus_radius, edge)
        if cell.get("kidney"):
            notch = _soft(np.hypot(v - nucleus_radius * 0.95, u) - nucleus_radius * 0.6, edge)
            nucleus = nucleus * (1 - notch)
    else:
        # Lobes on an arc, joined by thin chromatin bridges.
        angles = np.linspace(-1.1, 1.1, lobes) + rng.normal(0, 0.12, lobes)
        arc = radius * 0.5
        centres = np.stack([arc * np.cos(angles) - arc * 0.4, arc * np.sin(angles)], axis=1)
        nucleus = np.zeros_like(v)
        for index, (ly, lx) in enumerate(centres):
            nucleus = np.maximum(nucleus, _soft(np.hypot(v - ly, u - lx) - nucleus_radius, edge))
            if index:
                my, mx = (centres[index] + centres[index - 1]) / 2
                bridge = _soft(np.hypot(v - my, u - mx) - nucleus_radius * 0.45, edge)
                nucleus = np.maximum(nucleus, bridge)
    # Perinuclear halo of plasma cells: a paler zone of cytoplasm beside the nucleus.
    if cell.get("eccentric"):
        halo = _soft(np.hypot(v - ny * 0.2, u) - nucleus_radius * 0.9, edge * 2)
        cytoplasm = cytoplasm * (1 - 0.6 * halo * (1 - nucleus))
        cytoplasm = cytoplasm + 0.25 * body
    chromatin = 1.4 if cell.get("dense") else 0.95
    nuclear_density = chromatin * nucleus * (1 + 0.15 * rng.standard_normal(nucleus.shape))
    for _ in range(cell.get("nucleoli", 0)):
        ly, lx = rng.uniform(-0.4, 0.4, 2) * nucleus_radius
        nucleolus = _soft(np.hypot(v - ly, u - lx) - nucleus_radius * 0.18, edge)
        nuclear_density = nuclear_density * (1 - 0.55 * nucleolus)
    granules = np.zeros_like(v)
    if "granules" in cell:
        count, granule_radius = cell["granules"]
        for _ in range(rng.poisson(count)):
            r = radius * np.sqrt(rng.uniform(0, 0.9))
            angle = rng.uniform(0, 2 * np.pi)
            gy, gx = r * np.cos(angle) * elongation, r * np.sin(angle)
            dot = _soft(np.hypot(v - gy, u - gx) - radius * granule_radius, edge)
            granules = np.maximum(granules, dot)
        granules = granules * body
    granule_vector = haematoxylin if cell.get("granule_stain") == "h" else eosin
    density += cytoplasm[..., None] * (0.6 * haematoxylin + 0.5 * eosin)
    density += nuclear_density[..., None] * haematoxylin
    density += 0.9 * granules[..., None] * granule_vector
    return _blur(density, rng, size)


def _band_noise(rng, size, frequency, bandwidth, orientation=None, anisotropy=1.0):
    """Gaussian noise filtered to a frequency band (cycles per image), optionally oriented."""
    fy = np.fft.fftfreq(size)[:, None] * size
    fx = np.fft.fftfreq(size)[None, :] * size
    if orientation is not None:
        fy, fx = _rotate(fy, fx, orientation)
        fx = fx * anisotropy
    radius = np.hypot(fy, fx)
    spectrum = np.exp(-0.5 * ((radius - frequency) / bandwidth) ** 2)
    noise = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * spectrum).real
    return (noise - noise.mean()) / (noise.std() + 1e-12)


# Haematoxylin share of each class of TEXTURE_CLASSES, evenly spaced 0.1 to 0.9 and ordered so
# that classes of one texture lie far apart in colour: eosin-rich shares below 0.5.
_TEXTURE_SHARES = {
    index: 0.1 + 0.8 * rank / 7
    for rank, index in enumerate(
        sorted(range(8), key=lambda i: (TEXTURE_CLASSES[i].endswith("haematoxylin"), i))
    )
}


def _draw_texture(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    texture = TEXTURE_CLASSES[label].split("_")[0]
    scale = rng.uniform(0.8, 1.25)
    y, x = _grid(size)
    if texture == "fibres":
        noise = _band_noise(
            rng, size, 5 * scale, 2.5, orientation=rng.uniform(0, np.pi), anisotropy=6.0
        )
        amount = 0.5 + 0.35 * np.tanh(noise)
    elif texture == "granular":
        amount = 0.5 + 0.3 * np.tanh(_band_noise(rng, size, 9 * scale, 2.0))
    elif texture == "nuclei":
        amount = np.full((size, size), 0.3)
        for _ in range(rng.poisson(28)):
            cy, cx = rng.uniform(-1.05, 1.05, 2)
            radius = rng.uniform(0.07, 0.11) * scale
            ey = rng.uniform(0.7, 1.3)
            blob = _soft(np.hypot((y - cy) * ey, x - cx) - radius, 1.5 / size)
            amount = np.maximum(amount, blob)
    else:
        amount = 0.65 + 0.1 * _band_noise(rng, size, 6.0, 3.0)
        for _ in range(rng.poisson(7)):
            cy, cx = rng.uniform(-1.1, 1.1, 2)
            radius = rng.uniform(0.16, 0.3) * scale
            amount = amount * (1 - 0.85 * _soft(np.hypot(y - cy, x - cx) - radius, 1.5 / size))
    # Each class has its own stain balance (haematoxylin share), so colour is part of the class;
    # colour neighbours overlap and differ in texture. Intensity and a small hue shift are not.
    share = _TEXTURE_SHARES[label] + rng.uniform(-0.06, 0.06)
    vector = share * _stain(rng, _HAEMATOXYLIN, 0.15) + (1 - share) * _stain(rng, _EOSIN, 0.15)
    density = amount[..., None] * vector * rng.uniform(0.9, 1.6)
    return _blur(density, rng, size)


def _grey(brightness: np.ndarray) -> np.ndarray:
    """Optical density whose Beer-Lambert transmission is ``brightness`` in all channels."""
    return -np.log(np.clip(brightness, 1e-3, 1.0))[..., None] * np.ones(3)


def _ellipse(y, x, cy, cx, ry, rx, edge):
    return _soft(np.hypot((y - cy) / ry, (x - cx) / rx) - 1.0, edge / min(ry, rx))


def _draw_radiograph(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    name = RADIOGRAPH_CLASSES[label]
    y, x = _grid(size)
    edge = 1.5 / size
    scale = rng.uniform(0.9, 1.1)
    cy, cx = rng.uniform(-0.05, 0.05, 2)
    v, u = _rotate(y - cy, x - cx, np.deg2rad(rng.uniform(-6, 6)))
    v, u = v / scale, u / scale
    body = _ellipse(v, u, 0.05, 0.0, 1.0, 0.85, edge)
    # Lungs (air: dark), the patient's right lung on the image's left.
    lung_size = rng.uniform(0.9, 1.1)
    lungs = {
        side: _ellipse(v, u, -0.05, side * 0.4, 0.58 * lung_size, 0.27 * lung_size, edge)
        for side in (-1, 1)
    }
    density = 0.55 * body - 0.35 * np.maximum(lungs[-1], lungs[1])
    heart_width = (1.55 if name == "cardiomegaly" else 1.0) * rng.uniform(0.9, 1.1)
    heart = _ellipse(v, u, 0.32, 0.1, 0.24, 0.2 * heart_width, edge)
    density = np.maximum(density, 0.62 * heart)
    spine = _soft(np.abs(u) - 0.07, edge) * body
    clavicles = _soft(np.abs(v + 0.62 + 0.25 * np.abs(u)) - 0.035, edge) * _soft(
        np.abs(u) - 0.7, edge
    )
    density = np.maximum(density, 0.7 * np.maximum(spine, clavicles))
    if name.startswith("nodule"):
        side, lobe = (-1, -0.3) if name.endswith("right_upper") else (1, 0.25)
        ny, nx = lobe + rng.uniform(-0.1, 0.1), side * 0.4 + rng.uniform(-0.08, 0.08)
        nodule = _soft(np.hypot(v - ny, u - nx) - rng.uniform(0.07, 0.1), edge)
        density = np.maximum(density, 0.6 * nodule)
    if name.startswith("effusion"):
        side = -1 if name.endswith("right") else 1
        level = rng.uniform(0.1, 0.3)
        # The meniscus: fluid climbs the chest wall, so its top curves up at the outside.
        lateral = np.clip((side * u - 0.4) / 0.27, 0, None)
        fluid = _soft(level - 0.45 * lateral**2 - v, edge) * lungs[side]
        density = np.maximum(density, 0.5 * fluid)
    exposure = rng.uniform(0.75, 1.2)
    brightness = np.clip(0.06 + exposure * density, 0, 1) ** rng.uniform(0.85, 1.2)
    brightness = brightness * (1 + 0.04 * _band_noise(rng, size, 8.0, 4.0))
    return _blur(_grey(np.clip(brightness, 0.02, 1.0)), rng, size)


# Optical densities per unit of pigment, RGB: melanin (brown), deep melanin (blue-grey, the
# Tyndall effect of pigment deep in the dermis), haemoglobin (red), skin.
_MELANIN = np.array([0.45, 0.85, 1.25])
_DEEP_MELANIN = np.array([1.0, 0.85, 0.7])
_HAEMOGLOBIN = np.array([0.15, 1.0, 0.75])
_SKIN = np.array([0.12, 0.32, 0.45])


def _draw_lesion(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    name = LESION_CLASSES[label]
    y, x = _grid(size)
    edge = 1.5 / size
    density = _SKIN * rng.uniform(0.6, 2.2) * np.ones((size, size, 1))
    density += 0.05 * _band_noise(rng, size, 10.0, 4.0)[..., None] * _SKIN
    cy, cx = rng.uniform(-0.12, 0.12, 2)
    v, u = _rotate(y - cy, x - cx, rng.uniform(0, 2 * np.pi))
    radius = rng.uniform(0.45, 0.68)
    angle = np.arctan2(v, u)
    irregular = name in ("irregular_uniform", "streaks")
    wobble = np.zeros_like(angle)
    for k in range(2, 8):
        amplitude = rng.uniform(0.06, 0.14) if irregular and k >= 3 else rng.uniform(0, 0.025)
        wobble += amplitude * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    distance = np.hypot(v, u)
    lesion = _soft(distance - radius * (1 + wobble), edge)
    darkness = rng.uniform(0.7, 1.3)
    pigment = 0.9 * darkness * lesion * (1 + 0.08 * _band_noise(rng, size, 5.0, 2.5))
    extra = np.zeros((size, size, 3))
    if name == "globules":
        for _ in range(rng.poisson(9) + 3):
            r = radius * np.sqrt(rng.uniform(0, 0.8))
            a = rng.uniform(0, 2 * np.pi)
            dot = _soft(
                np.hypot(v - r * np.sin(a), u - r * np.cos(a)) - rng.uniform(0.05, 0.08), edge
            )
            pigment = np.maximum(pigment, 1.9 * darkness * dot)
    elif name == "network":
        period = rng.uniform(0.18, 0.24)
        lines = np.minimum(np.abs(np.sin(np.pi * v / period)), np.abs(np.sin(np.pi * u / period)))
        pigment = pigment * (0.55 + 0.9 * _soft(lines - 0.25, 0.12))
    elif name == "multicolour":
        for vector, weight in ((_DEEP_MELANIN, 1.0), (_HAEMOGLOBIN, 0.8)):
            a = rng.uniform(0, 2 * np.pi)
            zone = _soft(
                np.hypot(v - 0.45 * radius * np.sin(a), u - 0.45 * radius * np.cos(a))
                - 0.4 * radius,
                edge * 4,
            )
            extra += weight * (zone * lesion)[..., None] * vector
            pigment = pigment * (1 - 0.6 * zone)
    elif name == "streaks":
        count = rng.integers(8, 14)
        rays = _soft(np.cos(count * angle + rng.uniform(0, 2 * np.pi)) - 0.85, 0.05)
        rim = _soft(np.abs(distance - radius * 1.05) - 0.12 * radius, edge * 2)
        pigment = np.maximum(pigment, 1.3 * darkness * rays * rim)
    density += pigment[..., None] * _MELANIN + extra
    for _ in range(rng.integers(0, 4)):
        # A hair: a thin dark arc across the field.
        hy, hx = rng.uniform(-1, 1, 2)
        bend = rng.uniform(-0.6, 0.6)
        hv, hu = _rotate(y - hy, x - hx, rng.uniform(0, np.pi))
        hair = _soft(np.abs(hv - bend * hu**2) - 0.012, edge)
        density += 1.2 * hair[..., None] * _DEEP_MELANIN
    vignette = _soft(np.hypot(y, x) - rng.uniform(1.1, 1.4), 0.15)
    density += (1 - vignette)[..., None] * 2.5
    return _blur(density, rng, size)
