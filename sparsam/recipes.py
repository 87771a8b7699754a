"""Settings of `sparsam.DinoFeaturizer`: the paper's recipe, and one for small data sets.

`paper_recipe` is the paper's DINO pretraining (XCiT-S12/8 from ImageNet weights at 256 px,
65,536 prototypes): a GPU's job on a large archive. `small_data_recipe` is the preset for a
few thousand small images on a CPU, chosen from the image size and the number of images only,
never per data set: it was selected by the mean over the few-shot suite
(``benchmarks/fewshot_suite.py``; digits, synthetic cytology, synthetic tissue textures), and
``benchmarks/RESULTS.md`` reports every setting tried, the losing ones included.
``docs/small_data_recipe.md`` explains each choice.

Examples
--------
>>> from sparsam import DinoFeaturizer
>>> from sparsam.recipes import small_data_recipe
>>> params = small_data_recipe(image_size=32, n_images=2400)
>>> featurizer = DinoFeaturizer(**params, random_state=0)
>>> params["image_size"], params["epochs"]
(32, 91)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DIGITS_RECIPE", "paper_recipe", "small_data_recipe"]

# Steps, not minutes, decide whether a small data set learns (docs/small_data_recipe.md): the
# recipe aims at this many optimiser steps whatever the number of images (120 epochs of
# digits). Chosen leave-one-data-set-out among 840, 1,680 and 3,360 steps
# (benchmarks/recipe_ablations.py): 3,360 was the best on the other four data sets for every
# held-out one, and the only count at which DINO drew level with raw pixels on the digits.
TARGET_STEPS = 3360
BATCH_SIZE = 64

# What every size shares; benchmarks/RESULTS.md has the measurements behind each choice.
_BASE: dict[str, Any] = {
    "backbone": "vit_small_patch16_224",
    # 4 blocks, 96 wide, 16 tokens: ~0.15-0.25 s per step of 64 images on 2 cores.
    "backbone_kwargs": {"embed_dim": 96, "depth": 4, "num_heads": 3},
    "local_crops": 6,
    "batch_size": BATCH_SIZE,
    "global_crop_scale": (0.4, 1.0),
    "local_crop_scale": (0.1, 0.4),
    # Images may have an up and a down (digits, text, chest X-rays): flips and large
    # rotations would destroy the label there.
    "horizontal_flip": 0.0,
    "vertical_flip": 0.0,
    "rotation": 15.0,
    "perspective": 0.0,
    # No colour augmentation beyond brightness and contrast: hue, saturation, grayscale and
    # solarisation remove colour cues that may be the class (stained tissue). Best suite mean
    # of the four colour settings tried (benchmarks/RESULTS.md): it lost 0.08 on the
    # cytology set, where stain colour is a nuisance, and gained 0.11 on the tissue set and
    # 0.05 on digits (solarisation hurt the digits).
    "color_jitter": (0.4, 0.4, 0.0, 0.0),
    "grayscale": 0.0,
    "solarization": 0.0,
    "out_dim": 256,
    "head_hidden_dim": 512,
    "head_bottleneck_dim": 64,
    "koleo_weight": 0.1,
    "lr": 2e-3,
    "teacher_momentum": 0.99,
    "teacher_temperature": 0.04,
    "precision": "fp32",
    # DINO's evaluation read-out: the class token and the mean of the patch tokens of all 4
    # blocks. Chosen leave-one-data-set-out on the five data sets of
    # benchmarks/readout_suite.py: the best mean on the other four for every held-out set
    # (N=1 on the tissue set: 0.698 against 0.494 for the last class token).
    "pooling": "cls+mean",
    "n_last_blocks": 4,
}


def small_data_recipe(*, image_size: int, n_images: int) -> dict[str, Any]:
    """`DinoFeaturizer` parameters for ``n_images`` images of ``image_size`` pixels on a CPU.

    A 4-block, 96-wide ViT whose patches give 16 tokens (patch 4 at 16 px, patch 8 at 32 px),
    so that a step of 64 images takes about 0.15-0.25 s on 2 CPU cores; images of 16 px or
    less train at 16 px, larger ones at 32 px. ``transform`` reads the class token and the
    mean patch token of all 4 blocks (768 features). Epochs are set so that training takes about
    3,360 steps (at least 10 epochs, at most 300; 9 to 11 minutes on 2 cores), with a warm-up
    of a sixth of them. No flips and rotations up to 15° only, since images may have an
    orientation.

    Parameters
    ----------
    image_size : int
        Side of the (square) input images in pixels.
    n_images : int
        Number of unlabeled training images.

    Returns
    -------
    params : dict
        Keyword arguments of `sparsam.DinoFeaturizer`; add ``random_state`` and override
        what you like.
    """
    for name, value in (("image_size", image_size), ("n_images", n_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    size = 16 if image_size <= 16 else 32
    steps_per_epoch = max(1, n_images // BATCH_SIZE)
    epochs = min(300, max(10, math.ceil(TARGET_STEPS / steps_per_epoch)))
    return {
        **_BASE,
        "backbone_kwargs": {**_BASE["backbone_kwargs"], "patch_size": size // 4},
        "image_size": size,
        "local_crop_size": size // 2,
        "epochs": epochs,
        "warmup_epochs": max(1, epochs // 6),
    }


# The demo's recipe: the small-data recipe for the 1,797 digits of 8 x 8 pixels.
DIGITS_RECIPE: dict[str, Any] = small_data_recipe(image_size=8, n_images=1797)


def paper_recipe() -> dict[str, Any]:
    """`DinoFeaturizer` parameters of the paper's DINO pretraining (Nielsen et al. 2023).

    The settings recorded from the paper's configurations (``docs/how_it_works.md``, "The
    paper's recipe"): XCiT-S12/8 from timm's ImageNet weights, images resized to 256 px, 2
    global crops of scale (0.5, 1) and 5 local crops of 96 px, scale (0.1, 0.5); flips both
    ways, rotations up to 180°, random perspective, colour jitter (0.4, 0.4, 0.2, 0.1),
    grayscale, blur and solarisation; a 4-layer head (hidden 2048, bottleneck 256, 65,536
    prototypes); student temperature 0.1, teacher temperature warmed up from 0.02 to 0.04;
    teacher momentum 0.9995 to 1; learning rate 5e-4 × batch / 256 after 2 warm-up epochs;
    weight decay 0.04 to 0.4; no KoLeo term; the teacher's class token as the feature.
    Where the paper states no value (epochs, batch size, the length of the temperature
    warm-up), DINO's own settings are used: 100 epochs, 64 images per step and process, 30
    epochs of temperature warm-up.

    Returns
    -------
    params : dict
        Keyword arguments of `sparsam.DinoFeaturizer`; add ``random_state`` and override
        what you like.

    Examples
    --------
    >>> from sparsam.recipes import paper_recipe
    >>> paper_recipe()["out_dim"], paper_recipe()["image_size"]
    (65536, 256)
    """
    return {
        "backbone": "xcit_small_12_p8_224",
        "pretrained": "imagenet",
        "image_size": 256,
        "epochs": 100,
        "batch_size": 64,
        "global_crops": 2,
        "global_crop_scale": (0.5, 1.0),
        "local_crops": 5,
        "local_crop_size": 96,
        "local_crop_scale": (0.1, 0.5),
        "horizontal_flip": 0.5,
        "vertical_flip": 0.5,
        "rotation": 180.0,
        "perspective": 0.5,
        "color_jitter": (0.4, 0.4, 0.2, 0.1),
        "grayscale": 0.2,
        "solarization": 0.2,
        "out_dim": 65536,
        "head_hidden_dim": 2048,
        "head_bottleneck_dim": 256,
        "head_layers": 4,
        "student_temperature": 0.1,
        "warmup_teacher_temperature": 0.02,
        "teacher_temperature": 0.04,
        # The paper gives the temperature's start and end, not the warm-up's length: DINO's
        # published runs warm it up over 30 epochs.
        "warmup_teacher_temperature_epochs": 30,
        "teacher_momentum": 0.9995,
        "lr": 5e-4,
        "warmup_epochs": 2,
        "weight_decay": 0.04,
        "weight_decay_end": 0.4,
        "koleo_weight": 0.0,
        "pooling": "cls",
        "n_last_blocks": 1,
    }
