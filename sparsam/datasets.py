"""Loaders for the datasets of the sparsam paper and a bundled demo set.

Each loader returns ``(images, labels, class_names)``: ``images`` a list of `pathlib.Path`
(a uint8 array for MedMNIST, a float array for the demo set), ``labels`` an int64 array
indexing ``class_names`` (``-1`` for unlabeled images), ``class_names`` a sorted list of str.
The result plugs straight into `sparsam.DinoFeaturizer` and `sparsam.FewShotSplit`.

=======================  =========================================================================
loader                   download it expects
=======================  =========================================================================
`load_image_folder`      any ImageFolder layout: one sub-folder per class, images at any depth
`load_bone_marrow`       Matek et al. 2021, bone marrow cytomorphology (The Cancer Imaging
                         Archive): ``BM_cytomorphology_data/<class>/<range>/<class>_<n>.jpg``
`load_hyperkvasir`       HyperKvasir (Borgli et al. 2020, OSF): ``labeled-images/<tract>/
                         <category>/<class>/*.jpg`` and ``unlabeled-images/images/*.jpg``
`load_isic2019`          ISIC 2019 challenge: ``ISIC_2019_Training_Input/*.jpg`` and
                         ``ISIC_2019_Training_GroundTruth.csv``
`load_isic2020`          SIIM-ISIC 2020 (Kaggle): ``train.csv`` with ``jpeg/train/*.jpg`` (or
                         ``train/*.jpg``), or ``train/*.dcm`` with ``image_format="dicom"``
`load_medmnist`          one split of a MedMNIST v2 ``.npz`` file (e.g. ``bloodmnist.npz``)
`load_demo`              nothing: scikit-learn's bundled 8x8 handwritten digits
`make_cytology`          nothing: seeded synthetic white blood cells (class = morphology)
`make_tissue_textures`   nothing: seeded synthetic tissue patches (class = texture and colour)
`make_radiographs`       nothing: seeded synthetic grey chest radiographs (class = side-specific)
`make_skin_lesions`      nothing: seeded synthetic dermoscopy lesions (class = border, pattern)
=======================  =========================================================================

Examples
--------
>>> from sparsam.datasets import load_demo
>>> images, labels, class_names = load_demo()
>>> images.shape
(1797, 8, 8)
"""

from sparsam.data.datasets import (
    load_bone_marrow,
    load_demo,
    load_hyperkvasir,
    load_image_folder,
    load_isic2019,
    load_isic2020,
    load_medmnist,
)
from sparsam.data.synthetic import (
    make_cytology,
    make_radiographs,
    make_skin_lesions,
    make_tissue_textures,
)

__all__ = [
    "load_bone_marrow",
    "load_demo",
    "load_hyperkvasir",
    "load_image_folder",
    "load_isic2019",
    "load_isic2020",
    "load_medmnist",
    "make_cytology",
    "make_radiographs",
    "make_skin_lesions",
    "make_tissue_textures",
]
