"""Specification of sparsam.datasets: public downloads become (paths, labels, class_names)."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sparsam.datasets
from sparsam.datasets import (
    load_bone_marrow,
    load_demo,
    load_hyperkvasir,
    load_image_folder,
    load_isic2019,
    load_isic2020,
    load_medmnist,
    make_cytology,
    make_radiographs,
    make_skin_lesions,
    make_tissue_textures,
)

ISIC2019_HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
ISIC2019_DIAGNOSES = ["AK", "BCC", "BKL", "DF", "MEL", "NV", "SCC", "VASC"]


def _write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (120, 30, 200)).save(path)
    return path


def _write_text(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _isic2019_row(image: str, diagnosis: str | None, unknown: float = 0.0) -> str:
    values = ["1.0" if name == diagnosis else "0.0" for name in ISIC2019_HEADER.split(",")[1:-1]]
    return ",".join([image, *values, f"{unknown:.1f}"])


def _isic2019_tree(root: Path, rows: dict[str, str]) -> Path:
    for image in rows:
        _write_image(root / "ISIC_2019_Training_Input" / f"{image}.jpg")
    lines = [ISIC2019_HEADER, *(_isic2019_row(image, label) for image, label in rows.items())]
    _write_text(root / "ISIC_2019_Training_GroundTruth.csv", lines)
    return root


def _isic2020_csv(root: Path, targets: dict[str, int]) -> Path:
    lines = ["image_name,patient_id,sex,benign_malignant,target"]
    lines += [
        f"{name},IP_{index},male,{'malignant' if target else 'benign'},{target}"
        for index, (name, target) in enumerate(targets.items())
    ]
    return _write_text(root / "train.csv", lines)


def _hyperkvasir_tree(root: Path) -> Path:
    labeled = root / "labeled-images"
    for relative, count in {
        "lower-gi/pathological-findings/polyps": 3,
        "lower-gi/anatomical-landmarks/cecum": 2,
        "upper-gi/anatomical-landmarks/z-line": 1,
    }.items():
        for index in range(count):
            _write_image(labeled / relative / f"image_{index}.jpg")
    _write_text(labeled / "image-labels.csv", ["Video file,Organ,Finding,Classification"])
    return root


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _medmnist_arrays(train_labels: np.ndarray) -> dict[str, np.ndarray]:
    n_train = len(train_labels)
    return {
        "train_images": np.zeros((n_train, 4, 4), dtype=np.uint8),
        "train_labels": train_labels,
        "val_images": np.zeros((1, 4, 4), dtype=np.uint8),
        "val_labels": np.array([[0]]),
        "test_images": np.zeros((2, 4, 4), dtype=np.uint8),
        "test_labels": np.array([[1], [4]]),
    }


# Public module


def test_public_module_exports_every_loader_and_generator():
    assert sorted(sparsam.datasets.__all__) == [
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


# ImageFolder


def test_image_folder_labels_images_in_nested_folders_by_sorted_class_name(tmp_path):
    _write_image(tmp_path / "dog" / "a.png")
    _write_image(tmp_path / "cat" / "deep" / "deeper" / "b.jpg")
    _write_image(tmp_path / "cat" / "c.JPEG")

    paths, labels, class_names = load_image_folder(tmp_path)

    assert class_names == ["cat", "dog"]
    assert paths == [
        tmp_path / "cat" / "c.JPEG",
        tmp_path / "cat" / "deep" / "deeper" / "b.jpg",
        tmp_path / "dog" / "a.png",
    ]
    assert labels.tolist() == [0, 0, 1]
    assert labels.dtype == np.int64


def test_image_folder_skips_hidden_files_and_other_extensions(tmp_path):
    _write_image(tmp_path / "cat" / "a.png")
    _write_text(tmp_path / "cat" / "notes.txt", ["not an image"])
    _write_image(tmp_path / "cat" / "._a.png")
    _write_image(tmp_path / ".thumbnails" / "x.png")

    paths, _, class_names = load_image_folder(tmp_path)

    assert paths == [tmp_path / "cat" / "a.png"]
    assert class_names == ["cat"]


def test_image_folder_accepts_custom_extensions(tmp_path):
    _write_image(tmp_path / "cat" / "a.png")
    _write_image(tmp_path / "cat" / "b.bmp")

    paths, _, _ = load_image_folder(tmp_path, extensions=("bmp",))

    assert paths == [tmp_path / "cat" / "b.bmp"]


def test_image_folder_missing_root_names_it(tmp_path):
    missing = tmp_path / "nowhere"

    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_image_folder(missing)


def test_image_folder_without_class_folders_names_root(tmp_path):
    _write_image(tmp_path / "loose.png")

    with pytest.raises(FileNotFoundError, match=r"No class folders .*" + re.escape(str(tmp_path))):
        load_image_folder(tmp_path)


def test_image_folder_empty_class_folders_are_named(tmp_path):
    _write_image(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    _write_text(tmp_path / "emu" / "readme.txt", ["no images"])

    with pytest.raises(FileNotFoundError, match="2 class folder") as error:
        load_image_folder(tmp_path)

    assert str(tmp_path / "dog") in str(error.value)
    assert str(tmp_path / "emu") in str(error.value)
    assert str(tmp_path / "cat") + "'" not in str(error.value)


# Bone marrow (Matek et al. 2021)


def test_bone_marrow_reads_class_folders_of_nested_jpegs(tmp_path):
    data = tmp_path / "BM_cytomorphology_data"
    _write_image(data / "BLA" / "0001-1000" / "BLA_00001.jpg")
    _write_image(data / "BLA" / "0001-1000" / "BLA_00002.jpg")
    _write_image(data / "ABE" / "ABE_00001.jpg")

    paths, labels, class_names = load_bone_marrow(data)

    assert class_names == ["ABE", "BLA"]
    assert labels.tolist() == [0, 1, 1]
    assert paths[0] == data / "ABE" / "ABE_00001.jpg"


def test_bone_marrow_accepts_folder_containing_data_folder(tmp_path):
    _write_image(tmp_path / "BM_cytomorphology_data" / "EOS" / "0001-1000" / "EOS_00001.jpg")

    paths, labels, class_names = load_bone_marrow(tmp_path)

    assert class_names == ["EOS"]
    assert len(paths) == len(labels) == 1


def test_bone_marrow_without_class_folders_names_expected_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="BM_cytomorphology_data"):
        load_bone_marrow(tmp_path)


# HyperKvasir (Borgli et al. 2020)


def test_hyperkvasir_reads_class_folders_three_levels_below_labeled_images(tmp_path):
    root = _hyperkvasir_tree(tmp_path)

    paths, labels, class_names = load_hyperkvasir(root)

    assert class_names == ["cecum", "polyps", "z-line"]
    assert labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert all(path.suffix == ".jpg" for path in paths)


def test_hyperkvasir_accepts_class_folders_directly_in_labeled_images(tmp_path):
    _write_image(tmp_path / "labeled-images" / "polyps" / "a.jpg")
    _write_image(tmp_path / "labeled-images" / "cecum" / "b.jpg")

    paths, labels, class_names = load_hyperkvasir(tmp_path)

    assert class_names == ["cecum", "polyps"]
    assert paths == [
        tmp_path / "labeled-images" / "cecum" / "b.jpg",
        tmp_path / "labeled-images" / "polyps" / "a.jpg",
    ]
    assert labels.tolist() == [0, 1]


def test_hyperkvasir_unlabeled_images_are_appended_with_label_minus_one(tmp_path):
    root = _hyperkvasir_tree(tmp_path)
    for index in range(4):
        _write_image(root / "unlabeled-images" / "images" / f"u{index}.jpg")

    paths, labels, class_names = load_hyperkvasir(root, include_unlabeled=True)

    assert len(paths) == len(labels) == 10
    assert labels.tolist()[-4:] == [-1, -1, -1, -1]
    assert paths[-1] == root / "unlabeled-images" / "images" / "u3.jpg"
    assert class_names == ["cecum", "polyps", "z-line"]


def test_hyperkvasir_leaves_out_unlabeled_images_by_default(tmp_path):
    root = _hyperkvasir_tree(tmp_path)
    _write_image(root / "unlabeled-images" / "images" / "u.jpg")

    _, labels, _ = load_hyperkvasir(root)

    assert (labels >= 0).all()


def test_hyperkvasir_missing_labeled_images_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "labeled-images"))):
        load_hyperkvasir(tmp_path)


def test_hyperkvasir_missing_unlabeled_folder_is_named(tmp_path):
    root = _hyperkvasir_tree(tmp_path)
    expected = str(root / "unlabeled-images" / "images")

    with pytest.raises(FileNotFoundError, match=re.escape(expected)):
        load_hyperkvasir(root, include_unlabeled=True)


def test_hyperkvasir_class_name_in_two_branches_is_rejected(tmp_path):
    root = _hyperkvasir_tree(tmp_path)
    _write_image(
        root / "labeled-images" / "upper-gi" / "pathological-findings" / "polyps" / "x.jpg"
    )

    with pytest.raises(ValueError, match="'polyps' occurs twice"):
        load_hyperkvasir(root)


# ISIC 2019


def test_isic2019_reads_one_hot_rows_into_sorted_diagnoses_without_unused_unk(tmp_path):
    root = _isic2019_tree(tmp_path, {"ISIC_0000000": "NV", "ISIC_0000001": "MEL", "ISIC_2": "AK"})

    paths, labels, class_names = load_isic2019(root)

    assert class_names == ISIC2019_DIAGNOSES
    assert [class_names[label] for label in labels] == ["NV", "MEL", "AK"]
    assert paths[0] == root / "ISIC_2019_Training_Input" / "ISIC_0000000.jpg"


def test_isic2019_keeps_unk_when_an_image_carries_it(tmp_path):
    root = _isic2019_tree(tmp_path, {"a": "NV", "b": "MEL"})
    _write_image(root / "ISIC_2019_Training_Input" / "c.jpg")
    csv_path = root / "ISIC_2019_Training_GroundTruth.csv"
    csv_path.write_text(csv_path.read_text() + _isic2019_row("c", None, unknown=1.0) + "\n")

    _, labels, class_names = load_isic2019(root)

    assert class_names == sorted([*ISIC2019_DIAGNOSES, "UNK"])
    assert class_names[labels[-1]] == "UNK"


@pytest.mark.parametrize(
    ("row", "count"),
    [(_isic2019_row("bad", None), 0), (_isic2019_row("bad", "NV", unknown=1.0), 2)],
    ids=["no diagnosis", "two diagnoses"],
)
def test_isic2019_row_that_is_not_one_hot_names_line_and_image(tmp_path, row, count):
    root = _isic2019_tree(tmp_path, {"good": "NV"})
    csv_path = root / "ISIC_2019_Training_GroundTruth.csv"
    csv_path.write_text(csv_path.read_text() + row + "\n")

    with pytest.raises(ValueError, match=rf"Line 3 .*image 'bad'.* marks {count} diagnoses"):
        load_isic2019(root)


def test_isic2019_value_other_than_zero_or_one_names_line_and_column(tmp_path):
    root = _isic2019_tree(tmp_path, {"good": "NV"})
    csv_path = root / "ISIC_2019_Training_GroundTruth.csv"
    csv_path.write_text(csv_path.read_text().replace("1.0", "0.7", 1))

    with pytest.raises(ValueError, match=r"Line 2 .*NV='0.7'.*expected 0 or 1"):
        load_isic2019(root)


def test_isic2019_missing_image_file_is_named(tmp_path):
    root = _isic2019_tree(tmp_path, {"present": "NV", "gone": "MEL"})
    missing = root / "ISIC_2019_Training_Input" / "gone.jpg"
    missing.unlink()

    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_isic2019(root)


@pytest.mark.parametrize("name", ["ISIC_2019_Training_Input", "ISIC_2019_Training_GroundTruth.csv"])
def test_isic2019_missing_download_part_is_named_with_root(tmp_path, name):
    root = _isic2019_tree(tmp_path / "isic", {"a": "NV"})
    part = root / name
    part.rename(tmp_path / "elsewhere")

    with pytest.raises(FileNotFoundError, match=re.escape(str(part))) as error:
        load_isic2019(root)

    assert f"root {str(root)!r}" in str(error.value)


def test_isic2019_missing_column_is_named(tmp_path):
    root = _isic2019_tree(tmp_path, {"a": "NV"})
    csv_path = root / "ISIC_2019_Training_GroundTruth.csv"
    csv_path.write_text(csv_path.read_text().replace("VASC", "VASCULAR"))

    with pytest.raises(ValueError, match=r"lacks column\(s\) VASC"):
        load_isic2019(root)


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "sub/../../outside"])
def test_isic2019_image_name_leaving_data_root_is_rejected_with_its_line(tmp_path, name):
    root = _isic2019_tree(tmp_path / "isic", {"a": "NV"})
    _write_image(tmp_path / "outside.jpg")
    csv_path = root / "ISIC_2019_Training_GroundTruth.csv"
    csv_path.write_text(csv_path.read_text() + _isic2019_row(name, "MEL") + "\n")

    with pytest.raises(
        ValueError, match=rf"Line 3 .*{re.escape(repr(name))}.*leaves the data root"
    ):
        load_isic2019(root)


def test_isic2019_symlink_leaving_data_root_is_rejected(tmp_path):
    root = _isic2019_tree(tmp_path / "isic", {"a": "NV"})
    _write_image(tmp_path / "secret" / "b.jpg")
    (root / "ISIC_2019_Training_Input" / "link").symlink_to(tmp_path / "secret")
    csv_path = root / "ISIC_2019_Training_GroundTruth.csv"
    csv_path.write_text(csv_path.read_text() + _isic2019_row("link/b", "MEL") + "\n")

    with pytest.raises(ValueError, match=r"Line 3 .*leaves the data root"):
        load_isic2019(root)


# ISIC 2020


def test_isic2020_reads_kaggle_jpeg_layout(tmp_path):
    _isic2020_csv(tmp_path, {"ISIC_0015719": 0, "ISIC_0052212": 1})
    for name in ("ISIC_0015719", "ISIC_0052212"):
        _write_image(tmp_path / "jpeg" / "train" / f"{name}.jpg")

    paths, labels, class_names = load_isic2020(tmp_path)

    assert class_names == ["benign", "malignant"]
    assert labels.tolist() == [0, 1]
    assert paths == [
        tmp_path / "jpeg" / "train" / "ISIC_0015719.jpg",
        tmp_path / "jpeg" / "train" / "ISIC_0052212.jpg",
    ]


def test_isic2020_reads_jpegs_from_train_folder_without_jpeg_folder(tmp_path):
    _isic2020_csv(tmp_path, {"a": 1})
    _write_image(tmp_path / "train" / "a.jpg")

    paths, labels, _ = load_isic2020(tmp_path)

    assert paths == [tmp_path / "train" / "a.jpg"]
    assert labels.tolist() == [1]


def test_isic2020_dicom_format_reads_dcm_files_from_train_folder(tmp_path):
    _isic2020_csv(tmp_path, {"a": 0, "b": 1})
    for name in ("a", "b"):
        _write_text(tmp_path / "train" / f"{name}.dcm", ["not decoded by the loader"])
    _write_image(tmp_path / "jpeg" / "train" / "a.jpg")

    paths, labels, _ = load_isic2020(tmp_path, image_format="dicom")

    assert paths == [tmp_path / "train" / "a.dcm", tmp_path / "train" / "b.dcm"]
    assert labels.tolist() == [0, 1]


def test_isic2020_target_other_than_zero_or_one_names_line(tmp_path):
    _isic2020_csv(tmp_path, {"a": 0, "b": 2})
    _write_image(tmp_path / "train" / "a.jpg")

    with pytest.raises(ValueError, match=r"Line 3 .*target='2'"):
        load_isic2020(tmp_path)


def test_isic2020_missing_csv_is_named_with_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "train.csv"))):
        load_isic2020(tmp_path)


def test_isic2020_missing_image_folder_names_accepted_folders(tmp_path):
    _isic2020_csv(tmp_path, {"a": 0})

    with pytest.raises(FileNotFoundError) as error:
        load_isic2020(tmp_path)

    assert str(tmp_path / "jpeg" / "train") in str(error.value)
    assert str(tmp_path / "train") in str(error.value)


def test_isic2020_missing_image_file_is_named(tmp_path):
    _isic2020_csv(tmp_path, {"a": 0, "b": 1})
    _write_image(tmp_path / "jpeg" / "train" / "a.jpg")

    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "jpeg/train/b.jpg"))):
        load_isic2020(tmp_path)


def test_isic2020_image_name_leaving_data_root_is_rejected_with_its_line(tmp_path):
    root = tmp_path / "isic"
    _isic2020_csv(root, {"a": 0, "../../outside": 1})
    _write_image(root / "train" / "a.jpg")
    _write_image(tmp_path / "outside.jpg")

    with pytest.raises(ValueError, match=r"Line 3 .*leaves the data root"):
        load_isic2020(root)


def test_isic2020_unknown_image_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_format must be 'jpeg' or 'dicom', got 'png'"):
        load_isic2020(tmp_path, image_format="png")


# MedMNIST


def test_medmnist_returns_uint8_images_flat_labels_and_index_class_names(tmp_path):
    path = _write_npz(tmp_path / "blood.npz", **_medmnist_arrays(np.array([[2], [0], [1]])))

    images, labels, class_names = load_medmnist(path)

    assert images.shape == (3, 4, 4)
    assert images.dtype == np.uint8
    assert labels.tolist() == [2, 0, 1]
    # The test split holds label 4, so every split shares five class names.
    assert class_names == ["0", "1", "2", "3", "4"]


def test_medmnist_returns_requested_split(tmp_path):
    path = _write_npz(tmp_path / "blood.npz", **_medmnist_arrays(np.array([[2], [0], [1]])))

    images, labels, _ = load_medmnist(path, split="test")

    assert len(images) == 2
    assert labels.tolist() == [1, 4]


def test_medmnist_uses_class_names_stored_in_file(tmp_path):
    arrays = _medmnist_arrays(np.array([0, 1]))
    arrays["class_names"] = np.array(["a", "b", "c", "d", "e"])
    path = _write_npz(tmp_path / "named.npz", **arrays)

    _, _, class_names = load_medmnist(path)

    assert class_names == ["a", "b", "c", "d", "e"]


def test_medmnist_multi_label_file_is_rejected(tmp_path):
    arrays = _medmnist_arrays(np.array([[0, 1, 0], [1, 0, 0]]))
    path = _write_npz(tmp_path / "chest.npz", **arrays)

    with pytest.raises(ValueError, match=r"'train_labels'.*\(2, 3\).*multi-label"):
        load_medmnist(path)


def test_medmnist_missing_split_key_is_named(tmp_path):
    path = _write_npz(tmp_path / "partial.npz", train_images=np.zeros((1, 4, 4), np.uint8))

    with pytest.raises(ValueError, match=r"no key 'train_labels'.*found train_images"):
        load_medmnist(path)


def test_medmnist_unknown_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="split must be one of train, val, test, got 'valid'"):
        load_medmnist(tmp_path / "any.npz", split="valid")


def test_medmnist_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gone.npz"))):
        load_medmnist(tmp_path / "gone.npz")


# Demo


def test_demo_returns_scikit_learn_digits_as_unit_range_images():
    images, labels, class_names = load_demo()

    assert images.shape == (1797, 8, 8)
    assert images.dtype == np.float32
    assert images.min() == 0.0
    assert images.max() == 1.0
    assert labels.shape == (1797,)
    assert sorted(set(labels.tolist())) == list(range(10))
    assert class_names == [str(digit) for digit in range(10)]


def test_demo_upscales_images_to_image_size_within_unit_range():
    images, labels, _ = load_demo(image_size=16)

    assert images.shape == (1797, 16, 16)
    assert images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert len(labels) == 1797


@pytest.mark.parametrize("image_size", [0, -3, 8.5, True])
def test_demo_rejects_image_size_that_is_not_a_positive_int(image_size):
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        load_demo(image_size=image_size)


# --- synthetic sets of the few-shot suite ---------------------------------------------------


SYNTHETIC = [make_cytology, make_tissue_textures, make_radiographs, make_skin_lesions]


@pytest.mark.parametrize("make", SYNTHETIC)
def test_synthetic_sets_are_balanced_uint8_rgb_images(make):
    images, labels, class_names = make(24, image_size=16)
    assert images.shape == (24, 16, 16, 3)
    assert images.dtype == np.uint8
    n_classes = len(class_names)
    assert n_classes in (6, 8)
    assert np.bincount(labels).tolist() == [24 // n_classes] * n_classes
    # Not blank: every image has structure and colour.
    assert images.reshape(24, -1).std(axis=1).min() > 5


@pytest.mark.parametrize("make", SYNTHETIC)
def test_synthetic_image_depends_only_on_the_seed_and_its_index(make):
    short, _, _ = make(5, random_state=3)
    longer, _, _ = make(9, random_state=3)
    other, _, _ = make(5, random_state=4)
    assert np.array_equal(short, longer[:5])
    assert not np.array_equal(short, other)


@pytest.mark.parametrize("make", SYNTHETIC)
@pytest.mark.parametrize(
    ("argument", "value"), [("n_samples", 0), ("image_size", 4), ("random_state", 1.5)]
)
def test_synthetic_sets_refuse_bad_arguments_naming_them(make, argument, value):
    arguments = {"n_samples": 4, "image_size": 16, "random_state": 0, argument: value}
    n_samples = arguments.pop("n_samples")
    with pytest.raises(ValueError, match=argument):
        make(n_samples, **arguments)


def test_synthetic_texture_classes_differ_in_colour_and_in_texture():
    # The class is texture and colour together: each alone separates only some classes.
    images, labels, class_names = make_tissue_textures(400, image_size=32)
    hue_share = images[..., 0].astype(float).mean(axis=(1, 2)) - images[..., 1].mean(axis=(1, 2))
    eosin = np.array(["eosin" in class_names[label] for label in labels])
    assert hue_share[eosin].mean() > hue_share[~eosin].mean() + 10


def test_synthetic_radiographs_are_grey_and_their_sides_matter():
    images, labels, class_names = make_radiographs(600, image_size=32)
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
    # Effusion fills the lower part of one lung: the image's lower left is brighter when it
    # is the patient's right, the lower right when it is the left (a flip swaps the classes).
    grey = images[..., 0].astype(float)
    left_minus_right = grey[:, 18:28, 6:14].mean(axis=(1, 2)) - grey[:, 18:28, 18:26].mean(
        axis=(1, 2)
    )
    right = labels == class_names.index("effusion_right")
    left = labels == class_names.index("effusion_left")
    assert left_minus_right[right].mean() > left_minus_right[left].mean() + 10


def test_synthetic_lesions_of_several_colours_differ_in_colour_from_uniform_ones():
    images, labels, class_names = make_skin_lesions(600, image_size=32)
    centre = images[:, 8:24, 8:24].astype(float)
    # Blue-grey and red zones: the blue channel's share rises against the red's.
    blue_share = centre[..., 2].mean(axis=(1, 2)) - centre[..., 0].mean(axis=(1, 2))
    multicolour = labels == class_names.index("multicolour")
    uniform = labels == class_names.index("regular_uniform")
    assert blue_share[multicolour].mean() > blue_share[uniform].mean() + 5
