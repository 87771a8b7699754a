"""The paper's published backbones, known by a short name, and the normalisations in use."""

from __future__ import annotations

from dataclasses import dataclass

import timm

IMAGENET_MEAN = timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = timm.data.IMAGENET_DEFAULT_STD
# The paper scaled every image to [0, 1] and then to [-1, 1] (sparsam's min_max_normalize_tensor).
PAPER_MEAN = (0.5, 0.5, 0.5)
PAPER_STD = (0.5, 0.5, 0.5)

PAPER_CITATION = (
    "Nielsen M, Wenderoth L, Sentker T, Werner R. Self-Supervision for Medical Image "
    "Classification: State-of-the-Art Performance with ~100 Labeled Training Samples per Class. "
    "Bioengineering 2023;10(8):895. https://doi.org/10.3390/bioengineering10080895"
)
PAPER_WEIGHTS_URL = "https://zenodo.org/records/10391339"
PAPER_CODE_URL = "https://github.com/IPMI-ICNS-UKE/sparsam"


@dataclass(frozen=True)
class PretrainedBackbone:
    """A published backbone that ``load_backbone`` knows by a short name.

    Attributes
    ----------
    repo_id : str
        Hugging Face Hub repository, ``"org/name"``.
    revision : str
        Git revision that is loaded: a branch, tag or, once published, a commit hash.
    checkpoint : str
        File name of the original weights (Zenodo record 10391339) it was converted from.
    images : str
        Kind of images, for titles ("bone marrow cell", "endoscopy", "dermoscopy").
    training_data : str
        The unlabeled images DINO was trained on.
    description : str
        One sentence for humans.
    architecture : str
        timm model name.
    image_size : int
        Side of the square images it was trained on.
    mean, std : tuple of float
        Normalisation of images scaled to [0, 1].
    """

    repo_id: str
    revision: str
    checkpoint: str
    images: str
    training_data: str
    description: str
    architecture: str = "xcit_small_12_p8_224"
    image_size: int = 256
    mean: tuple[float, float, float] = PAPER_MEAN
    std: tuple[float, float, float] = PAPER_STD


# The repositories below are NOT published yet: they are the names that
# `sparsam convert pretrained_<name>.pt DIR --name <name>` followed by
# `sparsam push DIR <repo_id>` would create. Until they exist, loading a short name fails with
# a BackboneNotFoundError; pass the converted directory instead. Pin `revision` to the commit
# hash of the upload once it is published.
PRETRAINED_BACKBONES: dict[str, PretrainedBackbone] = {
    "bm": PretrainedBackbone(
        repo_id="sparsam/xcit_small_12_p8_256.dino_bm",
        revision="main",
        checkpoint="pretrained_bm.pt",
        images="bone marrow cell",
        training_data=(
            "bone marrow cytomorphology: single-cell images of bone marrow smears "
            "(Matek et al., Blood 2021)"
        ),
        description="XCiT-S12/8 trained with DINO on bone marrow cells (Nielsen et al. 2023).",
    ),
    "endo": PretrainedBackbone(
        repo_id="sparsam/xcit_small_12_p8_256.dino_endo",
        revision="main",
        checkpoint="pretrained_endo.pt",
        images="endoscopy",
        training_data=(
            "HyperKvasir: gastrointestinal endoscopy images (Borgli et al., Scientific Data 2020)"
        ),
        description="XCiT-S12/8 trained with DINO on endoscopy images (Nielsen et al. 2023).",
    ),
    "isic": PretrainedBackbone(
        repo_id="sparsam/xcit_small_12_p8_256.dino_isic",
        revision="main",
        checkpoint="pretrained_isic.pt",
        images="dermoscopy",
        training_data="ISIC 2019 and ISIC 2020 challenges: dermoscopy images of skin lesions",
        description="XCiT-S12/8 trained with DINO on dermoscopy images (Nielsen et al. 2023).",
    ),
}
