"""`sparsam evaluate`: the paper's few-shot experiment in one command."""

import contextlib
import csv
import io

import joblib
import matplotlib
import pytest

matplotlib.use("Agg")

from sparsam import save_backbone
from sparsam.cli import main

model_selection = pytest.importorskip("sparsam.model_selection")
pytest.importorskip("sparsam.datasets")
if not hasattr(model_selection, "few_shot_curve"):
    pytest.skip("sparsam.model_selection.few_shot_curve is not there yet", allow_module_level=True)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_backbone(fitted_featurizer, tmp_path_factory):
    """The tiny fitted featurizer's teacher, saved in timm's Hub format."""
    return save_backbone(fitted_featurizer, tmp_path_factory.mktemp("backbone") / "bb")


@pytest.fixture(scope="module")
def evaluated(tiny_backbone, tmp_path_factory):
    """Output directory and stdout of one evaluate run on the demo set."""
    out = tmp_path_factory.mktemp("evaluate")
    arguments = ["evaluate", "--dataset", "demo", "--pretrained", str(tiny_backbone)]
    arguments += ["--image-size", "16", "--n-per-class", "1", "5", "--repeats", "2"]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main([*arguments, "--out", str(out), "--quiet"])
    return code, out, output.getvalue()


def test_evaluate_succeeds(evaluated):
    code, _, _ = evaluated
    assert code == 0


def test_evaluate_writes_one_csv_row_per_labels_per_class(evaluated):
    _, out, _ = evaluated
    with open(out / "few_shot_curve.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["n_per_class"]) for row in rows] == [1, 5]
    assert all(0.0 <= float(row["mean"]) <= 1.0 for row in rows)


def test_evaluate_writes_the_curve_as_png(evaluated):
    _, out, _ = evaluated
    png = (out / "few_shot_curve.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    assert len(png) > 5_000


def test_evaluate_prints_the_table(evaluated):
    _, _, output = evaluated
    assert "balanced_accuracy" in output
    assert "1797 images" in output


def test_evaluate_accepts_a_joblib_featurizer(fitted_featurizer, tmp_path, capsys):
    path = tmp_path / "featurizer.joblib"
    joblib.dump(fitted_featurizer, path)
    arguments = ["evaluate", "--dataset", "demo", "--featurizer", str(path)]
    assert main([*arguments, "--n-per-class", "1", "--repeats", "1", "--classifier", "knn"]) == 0
    assert "classifier: knn" in capsys.readouterr().out


def test_evaluate_needs_root_for_a_downloaded_dataset(tiny_backbone, capsys):
    arguments = ["evaluate", "--dataset", "isic2019", "--pretrained", str(tiny_backbone)]
    assert main(arguments) == 1
    assert "needs --root" in capsys.readouterr().err


def test_evaluate_refuses_pretrained_and_featurizer_together(capsys):
    arguments = ["evaluate", "--dataset", "demo", "--pretrained", "a", "--featurizer", "b"]
    with pytest.raises(SystemExit) as error:
        main(arguments)
    assert error.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_evaluate_refuses_training_a_saved_featurizer(fitted_featurizer, tmp_path, capsys):
    path = tmp_path / "featurizer.joblib"
    joblib.dump(fitted_featurizer, path)
    arguments = ["evaluate", "--dataset", "demo", "--featurizer", str(path), "--epochs", "1"]
    assert main(arguments) == 1
    assert "start from pretrained weights" in capsys.readouterr().err
