"""Labels from a spreadsheet: `read_labels`, `sparsam classify`, `sparsam evaluate --labels`.

The main path runs the real command in a subprocess (``python -m sparsam``); its variants call
``sparsam.cli.main`` in this process, which parses and runs the same way.
"""

import contextlib
import csv
import io
import json
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from test_cli_settings import sparsam, write_pngs

from sparsam import DinoFeaturizer, save_backbone
from sparsam.cli import main
from sparsam.data.labels import class_indices, read_labels
from sparsam.evaluation.classifiers import paper_classifiers

N_IMAGES = 18
CLASSES = ("benign", "malignant", "normal")


def run_here(*arguments: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``sparsam ARGUMENTS`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(list(arguments))
    return code, out.getvalue(), err.getvalue()


def write_labels(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("path", "label"), *rows])
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_params_module) -> Path:
    """``images/`` (18 PNGs), ``labels.csv`` (9 labeled in 3 classes, 2 rows without a label,
    7 images not listed) and ``backbone/``, a tiny ViT saved with save_backbone."""
    folder = tmp_path_factory.mktemp("classify")
    images = write_pngs(folder / "images", N_IMAGES)
    rows = [(f"images/{path.name}", CLASSES[index % 3]) for index, path in enumerate(images[:9])]
    rows += [(f"images/{images[9].name}", ""), (f"images/{images[10].name}", " ")]
    write_labels(folder / "labels.csv", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights are the point here
        featurizer = DinoFeaturizer(**tiny_params_module).fit(images[:1])
    save_backbone(featurizer, folder / "backbone")
    return folder


@pytest.fixture(scope="module")
def tiny_params_module():
    return {
        "backbone": "vit_tiny_patch16_224",
        "backbone_kwargs": {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2},
        "image_size": 16,
        "epochs": 0,
        "pretrained": None,
        "verbose": 0,
        "random_state": 0,
    }


@pytest.fixture(scope="module")
def classified(project) -> Path:
    """``predictions.csv`` of one ``sparsam classify`` with the default SVM."""
    result = sparsam(
        "classify",
        "images",
        "--labels",
        "labels.csv",
        "--backbone",
        "backbone",
        "--out",
        "out/predictions.csv",
        "--quiet",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    return project / "out" / "predictions.csv"


def read_predictions(path: Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Paths, predicted classes, probabilities and the classes of the probability columns."""
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    columns = [name for name in rows[0] if name.startswith("proba_")]
    probabilities = np.array(
        [[float(row[name]) if row[name] else np.nan for name in columns] for row in rows]
    )
    classes = [name.removeprefix("proba_") for name in columns]
    return (
        [row["path"] for row in rows],
        [row["prediction"] for row in rows],
        probabilities,
        classes,
    )


def test_classify_argmax_of_the_probabilities_equals_the_saved_pipelines_predict(classified):
    paths, predicted, probabilities, classes = read_predictions(classified)
    model = joblib.load(classified.with_suffix(".joblib"))
    expected = model.predict(paths)
    assert list(np.asarray(classes)[probabilities.argmax(axis=1)]) == list(expected)
    assert predicted == list(expected)


def test_classify_writes_one_row_per_unlabeled_image_and_a_probability_per_class(
    classified, project
):
    paths, _, probabilities, classes = read_predictions(classified)
    images = sorted((project / "images").iterdir())
    # 9 of 18 are labeled; the rows with an empty label and the images not listed are not.
    assert paths == [str(path) for path in images[9:]]
    assert classes == list(CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_classify_records_its_settings_beside_the_predictions(classified):
    record = json.loads(classified.with_suffix(".params.json").read_text())
    assert record["command"] == "classify"
    assert record["run"]["n_labeled"] == 9
    assert record["settings"]["classifier"] == "svm"


def test_classify_finetune_predictions_agree_with_its_pipeline(project):
    config = project / "finetune.toml"
    config.write_text('epochs = 2\nbatch_size = 4\nprecision = "fp32"\nvertical_flip = 0.0\n')
    out = project / "finetune" / "predictions.csv"
    code, _, stderr = run_here(
        "classify",
        str(project / "images"),
        "--labels",
        str(project / "labels.csv"),
        "--backbone",
        str(project / "backbone"),
        "--classifier",
        "finetune",
        "--config",
        str(config),
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0, stderr
    paths, predicted, probabilities, classes = read_predictions(out)
    model = joblib.load(out.with_suffix(".joblib"))
    assert predicted == list(model.predict(paths))
    assert list(np.asarray(classes)[probabilities.argmax(axis=1)]) == list(model.predict(paths))
    assert model[-1].vertical_flip == 0.0
    record = json.loads(out.with_suffix(".params.json").read_text())
    assert record["sources"]["epochs"] == str(config)


def test_classify_skips_unreadable_files_with_on_error_skip_and_lists_them(project):
    folder = project / "with_bad_files"
    images = folder / "images"
    images.mkdir(parents=True)
    for path in sorted((project / "images").glob("*.png"))[:12]:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken_labeled.png").write_bytes(b"not a png")
    (images / "broken_unlabeled.png").write_bytes(b"not a png either")
    rows = [(f"images/image_{index:02d}.png", CLASSES[index % 3]) for index in range(9)]
    write_labels(folder / "labels.csv", [*rows, ("images/broken_labeled.png", "benign")])
    out = folder / "out" / "predictions.csv"
    arguments = ["classify", str(images), "--labels", str(folder / "labels.csv")]
    arguments += ["--backbone", str(project / "backbone"), "--classifier", "knn"]
    code, _, stderr = run_here(*arguments, "--out", str(out), "--quiet", "--on-error", "skip")

    assert code == 0, stderr
    paths, predicted, probabilities, _ = read_predictions(out)
    broken = paths.index(str(images / "broken_unlabeled.png"))
    assert predicted[broken] == "" and np.isnan(probabilities[broken]).all()
    readable = [index for index in range(len(paths)) if index != broken]
    assert all(predicted[index] in CLASSES for index in readable)
    with open(out.parent / "skipped.csv", newline="") as file:
        skipped = {Path(row["path"]).name for row in csv.DictReader(file)}
    assert skipped == {"broken_labeled.png", "broken_unlabeled.png"}
    code, _, _ = run_here(*arguments, "--out", str(folder / "raised.csv"), "--quiet")
    assert code == 1


def test_evaluate_with_on_error_skip_leaves_an_unreadable_labeled_image_out_and_lists_it(
    project,
):
    folder = project / "evaluate_bad_file"
    images = folder / "images"
    images.mkdir(parents=True)
    for path in sorted((project / "images").glob("*.png"))[:9]:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken.png").write_bytes(b"not a png")
    rows = [(f"images/image_{index:02d}.png", CLASSES[index % 3]) for index in range(9)]
    write_labels(folder / "labels.csv", [*rows, ("images/broken.png", "normal")])
    arguments = ["evaluate", str(images), "--labels", str(folder / "labels.csv")]
    arguments += ["--pretrained", str(project / "backbone"), "--n-per-class", "1"]
    arguments += ["--repeats", "2", "--quiet"]

    code, _, stderr = run_here(*arguments, "--out", str(folder / "out"), "--on-error", "skip")

    assert code == 0, stderr
    with open(folder / "out" / "skipped.csv", newline="") as file:
        assert [Path(row["path"]).name for row in csv.DictReader(file)] == ["broken.png"]
    code, _, stderr = run_here(*arguments, "--out", str(folder / "raised"))
    assert code == 1
    assert "broken.png" in stderr


def test_pretrain_with_labels_records_their_knn_accuracy_per_epoch(project):
    config = project / "pretrain_tiny.toml"
    config.write_text(
        'backbone = "vit_tiny_patch16_224"\n'
        "backbone_kwargs = {patch_size = 4, embed_dim = 32, depth = 2, num_heads = 2}\n"
        "image_size = 16\nlocal_crop_size = 8\nlocal_crops = 2\nepochs = 2\nbatch_size = 6\n"
        "out_dim = 64\n"
    )
    out = project / "pretrained_with_labels"
    code, _, stderr = run_here(
        "pretrain",
        str(project / "images"),
        "--out",
        str(out),
        "--config",
        str(config),
        "--labels",
        str(project / "labels.csv"),
        "--quiet",
    )

    assert code == 0, stderr
    with open(out / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2
    assert all(0.0 <= float(row["knn_accuracy"]) <= 1.0 for row in rows)
    record = json.loads((out / "params.json").read_text())
    assert record["run"]["n_labeled"] == 9


def test_classify_with_a_label_csv_naming_a_missing_image_names_the_row(project):
    write_labels(project / "missing.csv", [("images/image_00.png", "a"), ("images/gone.png", "b")])
    result = sparsam(
        "classify",
        "images",
        "--labels",
        "missing.csv",
        "--backbone",
        "backbone",
        "--out",
        "missing/predictions.csv",
        cwd=project,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "missing.csv, row 3: the image 'images/gone.png' does not exist" in result.stderr
    assert not (project / "missing").exists()


def test_classify_refuses_fine_tuning_options_with_a_frozen_classifier(project):
    code, _, stderr = run_here(
        "classify",
        str(project / "images"),
        "--labels",
        str(project / "labels.csv"),
        "--backbone",
        str(project / "backbone"),
        "--out",
        str(project / "refused.csv"),
        "--epochs",
        "3",
    )
    assert code == 1
    assert "--epochs set the fine-tuning of --classifier finetune" in stderr


def test_evaluate_draws_a_few_shot_curve_over_the_labeled_images_of_a_csv(project):
    code, stdout, stderr = run_here(
        "evaluate",
        str(project / "images"),
        "--labels",
        str(project / "labels.csv"),
        "--pretrained",
        str(project / "backbone"),
        "--n-per-class",
        "1",
        "2",
        "--repeats",
        "2",
        "--quiet",
    )
    assert code == 0, stderr
    assert f"{N_IMAGES} images, 9 labeled in 3 classes" in stdout


def test_read_labels_marks_unlabeled_images_with_minus_one(project):
    images = sorted((project / "images").iterdir())
    labels = read_labels(project / "labels.csv", images)
    assert labels.tolist() == [*[CLASSES[index % 3] for index in range(9)], *[-1] * 9]
    indices, names = class_indices(labels)
    assert names == list(CLASSES)
    assert indices.tolist() == [*[index % 3 for index in range(9)], *[-1] * 9]


def test_read_labels_accepts_absolute_paths(project):
    images = sorted((project / "images").iterdir())
    csv_file = write_labels(project / "absolute.csv", [(str(images[4]), "x")])
    assert read_labels(csv_file, images)[4] == "x"


def test_read_labels_refuses_a_duplicate_naming_both_rows(project):
    images = sorted((project / "images").iterdir())
    rows = [("images/image_00.png", "a"), ("images/image_01.png", "b"), ("images/image_00.png", "")]
    csv_file = write_labels(project / "twice.csv", rows)
    with pytest.raises(ValueError, match=r"twice.csv, row 4: .*image_00.png.* \(first on row 2\)"):
        read_labels(csv_file, images)


def test_read_labels_refuses_a_header_without_a_label_column(project):
    csv_file = project / "columns.csv"
    csv_file.write_text("path,diagnosis\nimages/image_00.png,a\n")
    with pytest.raises(ValueError, match=r"columns.csv, row 1: no column 'label'"):
        read_labels(csv_file, sorted((project / "images").iterdir()))


def test_read_labels_refuses_an_existing_file_that_is_not_among_the_images(project):
    images = sorted((project / "images").iterdir())
    csv_file = write_labels(project / "outside.csv", [("images/image_00.png", "a")])
    with pytest.raises(ValueError, match=r"outside.csv, row 2: .* not among the 17 images"):
        read_labels(csv_file, images[1:])


@pytest.mark.parametrize("name", ["svm", "logistic_regression", "knn"])
def test_paper_classifiers_with_probability_predict_the_most_probable_class(name):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 5)) + np.repeat(np.eye(3, 5) * 2, 10, axis=0)
    labels = np.repeat(["a", "b", "c"], 10)
    model = paper_classifiers(random_state=0, probability=True)[name].fit(features, labels)
    probabilities = model.predict_proba(features)
    assert list(model.predict(features)) == list(model.classes_[probabilities.argmax(axis=1)])
