"""Every example in examples/ runs, with settings small enough for two CPU cores.

The scripts' names start with digits, so each is imported from its file and its
``main(argv)`` called with few epochs, the first 150 digits and few draws; the tests check
what the script promises to print or write. Example 6 needs a downloaded data set: its
"data absent" paths run as they are, and its evaluation runs on a fake bone marrow folder
with a tiny saved backbone.
"""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sparsam
from sparsam import DinoFeaturizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The first 150 digits hold 13 to 17 images of every class.
SMALL = ["--epochs", "1", "--n-images", "150"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_example(name):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_names():
    return sorted(path.stem for path in EXAMPLES.glob("[0-9][0-9]_*.py"))


def test_there_are_six_numbered_examples():
    assert example_names()[:6] == [
        "01_quickstart_digits",
        "02_pretrained_backbone_from_directory",
        "03_few_shot_curve",
        "04_grid_search_frozen_featurizer",
        "05_semi_supervised_labels",
        "06_reproduce_paper",
    ]


@pytest.mark.parametrize("name", example_names())
def test_example_docstring_says_what_how_to_run_and_how_long(name):
    module = load_example(name)
    assert module.__doc__ and len(module.__doc__.splitlines()[0]) > 20
    assert f"python examples/{name}.py" in module.__doc__
    assert "2 CPU cores" in module.__doc__


@pytest.mark.parametrize("name", example_names())
def test_example_help_exits_cleanly(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example(name).main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_quickstart_prints_a_few_shot_table_of_dino_against_untrained(capsys):
    code = load_example("01_quickstart_digits").main(
        [*SMALL, "--n-per-class", "1", "3", "--n-repeats", "2"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "N=1" in out and "N=3" in out
    rows = [line for line in out.splitlines() if "±" in line and "draws" not in line]
    assert [row.split("  ")[0] for row in rows] == [
        "DINO features + SVC",
        "untrained backbone + SVC",
    ]


def test_saved_backbone_loads_with_the_featurizer_load_backbone_and_timm(tmp_path, capsys):
    directory = tmp_path / "backbone"
    code = load_example("02_pretrained_backbone_from_directory").main(
        [*SMALL, "--out", str(directory)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert {"config.json", "model.safetensors", "README.md"} <= {
        path.name for path in directory.iterdir()
    }
    assert "the same embeddings as the saved featurizer" in out
    assert 'timm.create_model("local-dir:DIR", pretrained=True)' in out
    assert "the same output as load_backbone" in out
    assert "NOT" not in out


def test_few_shot_curve_example_writes_both_figures(tmp_path, capsys):
    code = load_example("03_few_shot_curve").main(
        [
            *SMALL,
            "--n-per-class",
            "1",
            "3",
            "--n-repeats",
            "2",
            "--confusion-n-per-class",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("balanced_accuracy") == 2
    for name in ("few_shot_curve.png", "confusion_matrix.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_few_shot_curve_example_writes_the_documentation_figures_by_default():
    module = load_example("03_few_shot_curve")
    out = module.parse_args([]).out
    assert out == EXAMPLES.parent / "docs" / "images"


def test_grid_search_embeds_each_image_once_across_folds_and_settings(tmp_path, capsys):
    cache = tmp_path / "cache"
    module = load_example("04_grid_search_frozen_featurizer")
    code = module.main(
        [
            *SMALL,
            "--n-labeled",
            "6",
            "--n-per-class",
            "2",
            "--n-repeats",
            "2",
            "--memory",
            str(cache),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "6 settings x 2 folds" in out
    assert "best: " in out
    assert module.count_cached_embeddings(cache) == 150


def test_semi_supervised_example_fits_dino_on_all_and_the_svc_on_labeled(capsys):
    code = load_example("05_semi_supervised_labels").main([*SMALL, "--n-labeled", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "30 labeled (3 per class), 120 marked -1" in out
    assert "on all 150 images; LabeledOnly fitted the SVC on 30 labeled images" in out
    assert "SelfTrainingClassifier(LogisticRegression)" in out


def test_reproduce_paper_without_data_prints_what_to_download(capsys):
    code = load_example("06_reproduce_paper").main([])
    out = capsys.readouterr().out
    assert code == 0
    for source in (
        "https://doi.org/10.7937/TCIA.AXH3-T579",
        "https://osf.io/mh9sj/",
        "https://challenge.isic-archive.com/data/#2019",
        "https://www.kaggle.com/c/siim-isic-melanoma-classification/data",
        "https://zenodo.org/records/10391339",
    ):
        assert source in out


def test_reproduce_paper_with_a_wrong_root_fails_naming_it(tmp_path, capsys):
    missing = tmp_path / "isic"
    code = load_example("06_reproduce_paper").main(
        ["--dataset", "isic2019", "--root", str(missing)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert str(missing) in err
    assert "ISIC_2019_Training_GroundTruth.csv" in err


def test_reproduce_paper_refuses_a_root_without_a_dataset(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        load_example("06_reproduce_paper").main(["--root", str(tmp_path)])
    assert exit_info.value.code == 2


@pytest.fixture
def fake_bone_marrow(tmp_path):
    """Two classes of 6 random 20 px JPEGs in the layout of the TCIA download."""
    rng = np.random.default_rng(0)
    for name in ("BLA", "EOS"):
        folder = tmp_path / "bm" / "BM_cytomorphology_data" / name / "0001-1000"
        folder.mkdir(parents=True)
        for index in range(6):
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{index:05d}.jpg")
    return tmp_path / "bm"


@pytest.fixture
def tiny_backbone_directory(tmp_path, tiny_params):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="epochs=0 with pretrained=None")
        featurizer = DinoFeaturizer(**{**tiny_params, "epochs": 0}).fit(np.zeros((2, 16, 16)))
    return sparsam.save_backbone(featurizer, tmp_path / "backbone")


def test_reproduce_paper_evaluates_every_paper_classifier_on_the_data(
    fake_bone_marrow, tiny_backbone_directory, tmp_path, capsys
):
    out_dir = tmp_path / "results"
    code = load_example("06_reproduce_paper").main(
        [
            "--dataset",
            "bone-marrow",
            "--root",
            str(fake_bone_marrow),
            "--pretrained",
            str(tiny_backbone_directory),
            "--n-per-class",
            "1",
            "3",
            "--n-repeats",
            "2",
            "--verbose",
            "0",
            "--out",
            str(out_dir),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "12 labeled images in 2 classes" in out
    for name in ("svm", "logistic_regression", "knn"):
        assert (out_dir / f"few_shot_curve_{name}.csv").read_text().startswith("n_per_class,")
    assert (out_dir / "few_shot_curve.png").read_bytes().startswith(PNG_SIGNATURE)
