"""DINO's multi-crop augmentation as batched tensor operations on the training device.

All crops of one size are produced by one ``grid_sample`` call (crop, resize, flips, rotation and
perspective folded into one homography per sample and crop), followed by batched colour jitter,
grayscale, Gaussian blur, solarization and normalization. No per-image Python or PIL work, so the
augmentation runs where the images already are (usually the GPU) and does not starve the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .transfer import on_device

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MultiCropAugmentation", "normalize"]

# timm's constants under sparsam's names, which stay exported for existing imports.
IMAGENET_MEAN: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
IMAGENET_STD: tuple[float, float, float] = IMAGENET_DEFAULT_STD

# ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses.
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
# Inverted numerically (not the rounded textbook matrix) so that a zero hue shift is the identity.
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)

# RandomResizedCrop draws up to 10 (area, aspect ratio) candidates and keeps the first that fits.
_CROP_TRIES = 10

# Uniform [0, 1) columns drawn per crop and per sample. The layout does not depend on the
# parameters, so switching one augmentation off leaves every other random choice unchanged.
_DRAWS: dict[str, int] = {
    "crop_area": _CROP_TRIES,
    "crop_log_ratio": _CROP_TRIES,
    "crop_position": 2,
    "flip": 2,
    "rotation": 1,
    "perspective_apply": 1,
    "perspective_offsets": 8,
    "color_jitter_apply": 1,
    "color_jitter_factors": 4,
    "grayscale": 1,
    "blur_apply": 1,
    "blur_sigma": 1,
    "solarization": 1,
}


def normalize(
    images: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Convert uint8 images to float32 in [0, 1] and normalize them channel-wise.

    This is the only transform applied at embedding time; it matches the last step of
    :class:`MultiCropAugmentation`.

    Parameters
    ----------
    images : Tensor of shape (b, 3, H, W), dtype uint8
        Images on any device.
    mean, std : tuple of 3 floats, default=ImageNet statistics
        Per-channel mean and standard deviation in [0, 1] units.

    Returns
    -------
    normalized : Tensor of shape (b, 3, H, W), dtype float32
        ``(images / 255 - mean) / std`` on the device of ``images``.

    Examples
    --------
    >>> import torch
    >>> normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), (0.5,) * 3, (0.5,) * 3).max()
    tensor(1.)
    """
    _check_images(images)
    return _normalize_float(_to_unit_float(images), mean, std)


@dataclass(kw_only=True)
class MultiCropAugmentation:
    """DINO's multi-crop augmentation, batched on the device of the images.

    Produces ``global_crops`` large and ``local_crops`` small views of every image in a batch,
    following DINO (Caron et al. 2021) and the paper's recipe (flips both ways, rotation up to
    180 degrees and random perspective added for medical images). All random choices are drawn
    per sample from the ``generator`` passed to :meth:`__call__`, so the same seed gives
    bit-identical crops on CPU. The draws do not depend on which augmentations are switched on:
    turning one off leaves every other random choice of the same seed unchanged.

    Geometry. Per crop and sample one 3x3 homography maps the output's normalized coordinates
    to the input's: random perspective, then rotation about the crop centre, then flips, then
    the random resized crop (area fraction ``*_crop_scale``, log-uniform aspect ratio, position
    uniform over the places where the crop fits; as in torchvision, up to 10 candidates are drawn
    and the first that fits is kept, otherwise the last candidate is clipped to the image). One
    bilinear ``grid_sample`` then resamples all crops of a size. Padding is ``"reflection"`` so
    rotated and perspective-warped crops show mirrored tissue instead of black corners, which
    would be an easy cue for the network and unlike any real image. Downscaling a crop by more
    than about 2x (e.g. a full 512 px image to a 96 px local crop) is bilinear without
    prefiltering and aliases; resize large images before training (the paper uses 256 px).

    Colour. With probability ``color_jitter_p`` per sample: brightness, contrast, saturation and
    hue jitter with torchvision's factor ranges, applied in this fixed order (torchvision shuffles
    the order) and clamped to [0, 1] after each. Hue is shifted by a rotation in YIQ space, a close
    approximation of torchvision's HSV shift. Then grayscale (ITU-R 601 luma) with probability
    ``grayscale_p``, Gaussian blur and, on the second global crop only, solarization at 0.5.

    Parameters
    ----------
    global_crops : int, default=2
        Number of large crops (seen by teacher and student).
    local_crops : int, default=5
        Number of small crops (seen by the student only).
    global_crop_size, local_crop_size : int, default=224 and 96
        Side length in pixels of the square output crops.
    global_crop_scale, local_crop_scale : tuple of 2 floats, default=(0.5, 1.0) and (0.1, 0.5)
        Range of the crop area as a fraction of the image area.
    aspect_ratio : tuple of 2 floats, default=(3/4, 4/3)
        Range of the crop's width / height, sampled log-uniformly.
    horizontal_flip, vertical_flip : float, default=0.5
        Probability of mirroring left-right and top-bottom.
    rotation : float or tuple of 2 floats, default=180.0
        Rotation angle in degrees, uniform in ``[-rotation, rotation]``, or in ``[low, high]``
        when a tuple is given.
    perspective : float, default=0.5
        Distortion scale of torchvision's ``RandomPerspective``: every corner moves inwards by up
        to this fraction of half the side length. 0 disables it. 0.5 is the original sparsam
        recipe's value.
    perspective_p : tuple of 3 floats, default=(0.75, 0.5, 0.5)
        Probability of the perspective distortion on the first global crop, the second (and any
        further) global crop, and the local crops, as in the original sparsam recipe.
    color_jitter : tuple of 4 floats, default=(0.4, 0.4, 0.2, 0.1)
        Brightness, contrast, saturation and hue strength with torchvision's semantics: factors
        uniform in ``[max(0, 1 - s), 1 + s]`` and a hue shift uniform in ``[-hue, hue]`` turns.
    color_jitter_p : float, default=0.8
        Probability of applying the colour jitter (all four parts together).
    grayscale_p : float, default=0.2
        Probability of converting to grayscale (kept as 3 equal channels).
    blur_p : tuple of 3 floats, default=(1.0, 0.1, 0.5)
        Probability of Gaussian blur on the first global crop, the second (and any further) global
        crop, and the local crops, as in DINO.
    blur_sigma : tuple of 2 floats, default=(0.1, 2.0)
        Range of the blur's standard deviation in pixels of a 224 px crop. It is scaled by
        ``crop_size / 224`` so that a 96 px local crop or a 32 px image is blurred as much
        relative to its size as a 224 px crop, not wiped out. The kernel has the odd size
        ``2 * ceil(3 * sigma_max * crop_size / 224) + 1`` (at most ``2 * crop_size - 1``).
    solarization_p : float, default=0.2
        Probability of solarization (``x -> 1 - x`` where ``x >= 0.5``) on the second global
        crop only, as in DINO.
    mean, std : tuple of 3 floats, default=ImageNet statistics
        Normalization applied last, in [0, 1] units.

    Examples
    --------
    >>> import torch
    >>> augment = MultiCropAugmentation(global_crop_size=32, local_crop_size=16)
    >>> images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    >>> crops = augment(images, torch.Generator().manual_seed(0))
    >>> [tuple(crop.shape) for crop in crops[1:3]]
    [(4, 3, 32, 32), (4, 3, 16, 16)]
    """

    global_crops: int = 2
    local_crops: int = 5
    global_crop_size: int = 224
    local_crop_size: int = 96
    global_crop_scale: tuple[float, float] = (0.5, 1.0)
    local_crop_scale: tuple[float, float] = (0.1, 0.5)
    aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: float = 0.5
    vertical_flip: float = 0.5
    rotation: float | tuple[float, float] = 180.0
    perspective: float = 0.5
    perspective_p: tuple[float, float, float] = (0.75, 0.5, 0.5)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarization_p: float = 0.2
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        *,
        sample_offset: int = 0,
        total_samples: int | None = None,
    ) -> list[torch.Tensor]:
        """Return the augmented crops of a batch, global crops first.

        Parameters
        ----------
        images : Tensor of shape (b, 3, H, W), dtype uint8
            Images on any device; all crops are computed on that device.
        generator : torch.Generator
            Source of every random choice. It may live on the images' device or on the CPU (the
            draws are then moved to the images' device).
        sample_offset, total_samples : int, optional
            The batch is the part ``[sample_offset, sample_offset + b)`` of a larger batch of
            ``total_samples`` images (one rank's slice of a distributed global batch): the
            random choices are drawn for all ``total_samples`` and this part's are used, so
            the ranks together augment exactly as one process would augment the whole batch.

        Returns
        -------
        crops : list of Tensor
            ``global_crops`` tensors of shape (b, 3, global_crop_size, global_crop_size), then
            ``local_crops`` tensors of shape (b, 3, local_crop_size, local_crop_size); float32,
            normalized with ``mean`` and ``std``.
        """
        self._validate_parameters()
        _check_images(images)
        batch = images.shape[0]
        total_samples = batch if total_samples is None else total_samples
        if not 0 <= sample_offset <= total_samples - batch:
            raise ValueError(
                f"A batch of {batch} images at sample_offset={sample_offset} does not fit in "
                f"total_samples={total_samples}."
            )
        n_crops = self.global_crops + self.local_crops
        uniform = torch.rand(
            n_crops,
            total_samples,
            sum(_DRAWS.values()),
            generator=generator,
            device=generator.device,
        )[:, sample_offset : sample_offset + batch]
        uniform = on_device(uniform, images.device)
        pixels = _to_unit_float(images)
        # DINO: blur_p[0] on the first global crop, blur_p[1] on the second, solarization on the
        # second only; further global crops are treated like the second.
        global_blur_p = [self.blur_p[min(index, 1)] for index in range(self.global_crops)]
        global_solarization_p = [
            self.solarization_p if index == 1 else 0.0 for index in range(self.global_crops)
        ]
        global_perspective_p = [
            self.perspective_p[min(index, 1)] for index in range(self.global_crops)
        ]
        global_views = self._crops(
            pixels,
            uniform[: self.global_crops],
            self.global_crop_size,
            self.global_crop_scale,
            global_perspective_p,
            global_blur_p,
            global_solarization_p,
        )
        local_views = self._crops(
            pixels,
            uniform[self.global_crops :],
            self.local_crop_size,
            self.local_crop_scale,
            [self.perspective_p[2]] * self.local_crops,
            [self.blur_p[2]] * self.local_crops,
            [0.0] * self.local_crops,
        )
        return global_views + local_views

    def _crops(
        self,
        pixels: torch.Tensor,
        uniform: torch.Tensor,
        size: int,
        scale: tuple[float, float],
        perspective_p: list[float],
        blur_p: list[float],
        solarization_p: list[float],
    ) -> list[torch.Tensor]:
        """All crops of one size at once, as a batch of (crops x images) samples."""
        n_crops, batch = uniform.shape[:2]
        if n_crops == 0:
            return []
        columns = uniform.reshape(n_crops * batch, -1).split(list(_DRAWS.values()), dim=1)
        draws = dict(zip(_DRAWS, columns, strict=True))
        perspective = _per_sample(perspective_p, batch, pixels.device)
        crops = self._resample(pixels, draws, n_crops, size, scale, perspective)
        crops = self._color(crops, draws)
        if max(blur_p) > 0:
            crops = self._blur(crops, draws, _per_sample(blur_p, batch, crops.device))
        if max(solarization_p) > 0:
            solarize = _flag(
                draws["solarization"], _per_sample(solarization_p, batch, crops.device)
            )
            crops = torch.where(solarize & (crops >= 0.5), 1.0 - crops, crops)
        crops = _normalize_float(crops, self.mean, self.std)
        return list(crops.reshape(n_crops, batch, *crops.shape[1:]).unbind(0))

    def _resample(
        self,
        pixels: torch.Tensor,
        draws: dict[str, torch.Tensor],
        n_crops: int,
        size: int,
        scale: tuple[float, float],
        perspective_p: torch.Tensor,
    ) -> torch.Tensor:
        batch, channels, height, width = pixels.shape
        homography = (
            self._crop_matrix(draws, height, width, scale)
            @ self._flip_matrix(draws)
            @ self._rotation_matrix(draws)
            @ self._perspective_matrix(draws, perspective_p)
        )
        # Pixel centres of the output in normalized coordinates (align_corners=False).
        centres = (torch.arange(size, device=pixels.device, dtype=torch.float32) * 2 + 1) / size - 1
        grid_y, grid_x = torch.meshgrid(centres, centres, indexing="ij")
        base = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).reshape(-1, 3)
        mapped = torch.einsum("bij,nj->bni", homography, base)
        grid = (mapped[..., :2] / mapped[..., 2:]).reshape(n_crops, batch, size, size, 2)
        # The crops of an image are stacked along the grid's height, so one grid_sample reads
        # each image once instead of sampling n_crops repeated copies of the batch.
        grid = grid.transpose(0, 1).reshape(batch, n_crops * size, size, 2)
        crops = F.grid_sample(
            pixels, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        crops = crops.reshape(batch, channels, n_crops, size, size).permute(2, 0, 1, 3, 4)
        return crops.reshape(n_crops * batch, channels, size, size)

    def _crop_matrix(
        self, draws: dict[str, torch.Tensor], height: int, width: int, scale: tuple[float, float]
    ) -> torch.Tensor:
        area = height * width * _uniform(draws["crop_area"], *scale)
        log_low, log_high = math.log(self.aspect_ratio[0]), math.log(self.aspect_ratio[1])
        ratio = torch.exp(_uniform(draws["crop_log_ratio"], log_low, log_high))
        crop_width, crop_height = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        fits = (crop_width <= width) & (crop_height <= height)
        # First candidate that fits; the last one (clipped below) when none does.
        first = torch.where(fits.any(dim=1), fits.int().argmax(dim=1), _CROP_TRIES - 1)[:, None]
        crop_width = crop_width.gather(1, first)[:, 0].clamp(max=width)
        crop_height = crop_height.gather(1, first)[:, 0].clamp(max=height)
        position = draws["crop_position"]
        centre_x = (width - crop_width) * position[:, 0] + crop_width / 2
        centre_y = (height - crop_height) * position[:, 1] + crop_height / 2
        matrix = _identity(position)
        matrix[:, 0, 0] = crop_width / width
        matrix[:, 1, 1] = crop_height / height
        matrix[:, 0, 2] = 2 * centre_x / width - 1
        matrix[:, 1, 2] = 2 * centre_y / height - 1
        return matrix

    def _flip_matrix(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        flip = draws["flip"]
        probability = on_device([self.horizontal_flip, self.vertical_flip], flip.device)
        signs = torch.where(flip < probability, -1.0, 1.0)
        matrix = _identity(flip)
        matrix[:, 0, 0], matrix[:, 1, 1] = signs[:, 0], signs[:, 1]
        return matrix

    def _rotation_matrix(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        low, high = _rotation_range(self.rotation)
        angle = torch.deg2rad(_uniform(draws["rotation"][:, 0], low, high))
        cos, sin = torch.cos(angle), torch.sin(angle)
        matrix = _identity(angle)
        matrix[:, 0, 0], matrix[:, 0, 1] = cos, -sin
        matrix[:, 1, 0], matrix[:, 1, 1] = sin, cos
        return matrix

    def _perspective_matrix(
        self, draws: dict[str, torch.Tensor], probability: torch.Tensor
    ) -> torch.Tensor:
        offsets = draws["perspective_offsets"]
        identity = _identity(offsets)
        if self.perspective == 0 or max(self.perspective_p) == 0:
            return identity
        # As in torchvision, each corner moves inwards by up to `perspective` of the half side,
        # and the output at a moved corner shows the input's original corner.
        corners = on_device(
            [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], offsets.device
        ).expand(offsets.shape[0], 4, 2)
        moved = corners - corners * self.perspective * offsets.reshape(-1, 4, 2)
        homography = _homography_from_points(moved, corners)
        apply = _flag(draws["perspective_apply"], probability).reshape(-1, 1, 1)
        return torch.where(apply, homography, identity)

    def _color(self, crop: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        brightness, contrast, saturation, hue = self.color_jitter
        factors = draws["color_jitter_factors"]
        # Samples without jitter get factor 1 and no hue shift, under which every step below is
        # exactly the identity: cheaper than jittering all samples and selecting with where.
        apply = _flag(draws["color_jitter_apply"], self.color_jitter_p)
        if self.color_jitter_p > 0 and brightness > 0:
            factor = torch.where(apply, _factor(factors[:, 0], brightness), 1.0)
            crop = (crop * factor).clamp(0, 1)
        if self.color_jitter_p > 0 and contrast > 0:
            factor = torch.where(apply, _factor(factors[:, 1], contrast), 1.0)
            crop = _blend(crop, _grayscale(crop).mean(dim=(1, 2, 3), keepdim=True), factor)
        if self.color_jitter_p > 0 and saturation > 0:
            factor = torch.where(apply, _factor(factors[:, 2], saturation), 1.0)
            crop = _blend(crop, _grayscale(crop), factor)
        if self.color_jitter_p > 0 and hue > 0:
            turns = torch.where(apply.reshape(-1), _uniform(factors[:, 3], -hue, hue), 0.0)
            crop = _shift_hue(crop, turns)
        if self.grayscale_p > 0:
            gray = _flag(draws["grayscale"], self.grayscale_p)
            crop = torch.where(gray, _grayscale(crop).expand_as(crop), crop)
        return crop

    def _blur(
        self, crop: torch.Tensor, draws: dict[str, torch.Tensor], probability: torch.Tensor
    ) -> torch.Tensor:
        batch, channels, height, width = crop.shape
        relative = height / 224
        radius = min(math.ceil(3 * self.blur_sigma[1] * relative), height - 1, width - 1)
        if radius <= 0:
            return crop
        sigma = _uniform(draws["blur_sigma"][:, 0], *self.blur_sigma) * relative
        positions = torch.arange(-radius, radius + 1, device=crop.device, dtype=crop.dtype)
        kernel = torch.exp(-(positions**2) / (2 * sigma.clamp(min=1e-4)[:, None] ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
        # Batch folded into channels: one depthwise convolution with a kernel per sample.
        blurred = F.pad(crop.reshape(1, batch * channels, height, width), [radius] * 4, "reflect")
        blurred = F.conv2d(blurred, kernel[:, None, :, None], groups=batch * channels)
        blurred = F.conv2d(blurred, kernel[:, None, None, :], groups=batch * channels)
        apply = _flag(draws["blur_apply"], probability)
        return torch.where(apply, blurred.reshape(crop.shape), crop)

    def _validate_parameters(self) -> None:
        for name in ("global_crops", "local_crops", "global_crop_size", "local_crop_size"):
            value = getattr(self, name)
            minimum = 0 if name == "local_crops" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
        probabilities = {
            "horizontal_flip": self.horizontal_flip,
            "vertical_flip": self.vertical_flip,
            "color_jitter_p": self.color_jitter_p,
            "grayscale_p": self.grayscale_p,
            "solarization_p": self.solarization_p,
            "perspective": self.perspective,
        }
        for name in ("blur_p", "perspective_p"):
            probabilities.update({f"{name}[{i}]": p for i, p in enumerate(getattr(self, name))})
        for name, value in probabilities.items():
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
        ranges = {
            "global_crop_scale": (self.global_crop_scale, 0, 1),
            "local_crop_scale": (self.local_crop_scale, 0, 1),
            "aspect_ratio": (self.aspect_ratio, 0, math.inf),
            "blur_sigma": (self.blur_sigma, 0, math.inf),
        }
        for name, (value, lowest, highest) in ranges.items():
            low, high = value
            if not lowest <= low <= high <= highest or (name != "blur_sigma" and low == 0):
                raise ValueError(
                    f"{name} must be a (low, high) pair with {lowest} < low <= high <= {highest}, "
                    f"got {value!r}."
                )
        _rotation_range(self.rotation)
        if len(self.color_jitter) != 4 or min(self.color_jitter) < 0 or self.color_jitter[3] > 0.5:
            raise ValueError(
                "color_jitter must be 4 non-negative strengths (brightness, contrast, saturation, "
                f"hue) with hue <= 0.5, got {self.color_jitter!r}."
            )
        for name in ("blur_p", "perspective_p"):
            if len(getattr(self, name)) != 3:
                raise ValueError(
                    f"{name} must hold 3 probabilities (first global, second global, local "
                    f"crops), got {getattr(self, name)!r}."
                )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"mean and std must hold 3 values with std > 0, got {self.mean!r}, {self.std!r}."
            )


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be a uint8 tensor of shape (b, 3, H, W), got {kind}.")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (b, 3, H, W), got {tuple(images.shape)}.")


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32) / 255


def _normalize_float(
    pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    mean_tensor = on_device(torch.tensor(mean, dtype=pixels.dtype), pixels.device)[:, None, None]
    std_tensor = on_device(torch.tensor(std, dtype=pixels.dtype), pixels.device)[:, None, None]
    return (pixels - mean_tensor) / std_tensor


def _per_sample(probability: list[float], batch: int, device: torch.device) -> torch.Tensor:
    """One probability per crop, repeated for the ``batch`` samples of that crop."""
    return on_device(probability, device).repeat_interleave(batch)


def _uniform(unit: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * unit


def _flag(unit: torch.Tensor, probability: float | torch.Tensor) -> torch.Tensor:
    """Per-sample boolean of shape (b, 1, 1, 1) that is True with ``probability``."""
    return (unit.reshape(-1) < probability).reshape(-1, 1, 1, 1)


def _factor(unit: torch.Tensor, strength: float) -> torch.Tensor:
    return _uniform(unit, max(0.0, 1 - strength), 1 + strength).reshape(-1, 1, 1, 1)


def _identity(like: torch.Tensor) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float32, device=like.device).repeat(like.shape[0], 1, 1)


def _rotation_range(rotation: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(rotation, int | float):
        if rotation < 0:
            raise ValueError(f"rotation must be >= 0 degrees, got {rotation!r}.")
        return -float(rotation), float(rotation)
    low, high = rotation
    if low > high:
        raise ValueError(f"rotation must be a (low, high) pair with low <= high, got {rotation!r}.")
    return float(low), float(high)


def _homography_from_points(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batched 3x3 homographies mapping 4 ``source`` points (b, 4, 2) to ``target`` (b, 4, 2)."""
    x, y = source.unbind(-1)
    u, v = target.unbind(-1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], dim=-1)
    system = torch.stack([rows_u, rows_v], dim=2).reshape(-1, 8, 8)
    # solve_ex: solve would read an error code on the host, a wait for the GPU each step.
    solution, _ = torch.linalg.solve_ex(system, torch.stack([u, v], dim=-1).reshape(-1, 8))
    return torch.cat([solution, torch.ones_like(solution[:, :1])], dim=1).reshape(-1, 3, 3)


def _grayscale(pixels: torch.Tensor) -> torch.Tensor:
    red, green, blue = pixels.split(1, dim=1)
    return _LUMA[0] * red + _LUMA[1] * green + _LUMA[2] * blue


def _blend(pixels: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * pixels + (1 - factor) * other).clamp(0, 1)


def _shift_hue(pixels: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma plane of YIQ by ``turns`` (per sample); exactly the identity at 0."""
    angle = 2 * math.pi * turns
    rotation = torch.zeros(turns.shape[0], 3, 3, dtype=pixels.dtype, device=pixels.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    to_yiq = on_device(_RGB_TO_YIQ.to(pixels.dtype), pixels.device)
    from_yiq = on_device(_YIQ_TO_RGB.to(pixels.dtype), pixels.device)
    matrix = torch.where(turns[:, None, None] == 0, _identity(turns), from_yiq @ rotation @ to_yiq)
    return torch.einsum("bij,bjhw->bihw", matrix, pixels).clamp(0, 1)
