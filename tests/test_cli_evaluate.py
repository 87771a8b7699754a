"""`sparsam evaluate`: the paper's few-shot experiment in one command."""

import contextlib
import csv
import io
import warnings

import joblib
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from sparsam import DinoFeaturizer, model_selection, plotting, save_backbone
from sparsam.cli import main
from sparsam.experiments import run_evaluate

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


@contextlib.contextmanager
def _recording_evaluation():
    """Record what ``evaluate`` scores: each arm's estimator, its training draws, the figure.

    ``estimators`` lists the estimator of every ``few_shot_curve`` call; ``draws`` lists, per
    ``FewShotSplit.split`` call, ``(n_per_class, [training indices of each draw])``;
    ``axes`` lists the Axes of every ``plot_few_shot_curve`` call.
    """
    record = {"estimators": [], "draws": [], "axes": []}
    original_curve = model_selection.few_shot_curve
    original_split = model_selection.FewShotSplit.split
    original_plot = plotting.plot_few_shot_curve

    def few_shot_curve(estimator, *args, **kwargs):
        record["estimators"].append(estimator)
        return original_curve(estimator, *args, **kwargs)

    def split(self, X, y, groups=None):
        splits = list(original_split(self, X, y, groups))
        record["draws"].append((self.n_per_class, [train for train, _ in splits]))
        yield from splits

    def plot_few_shot_curve(results_by_name, ax=None, **kwargs):
        ax = original_plot(results_by_name, ax=ax, **kwargs)
        record["axes"].append(ax)
        return ax

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_selection, "few_shot_curve", few_shot_curve)
        patch.setattr(model_selection.FewShotSplit, "split", split)
        patch.setattr(plotting, "plot_few_shot_curve", plot_few_shot_curve)
        yield record


@pytest.fixture(scope="module")
def evaluated_with_supervised(tiny_backbone, tmp_path_factory):
    """Output directory, stdout and record of one ``evaluate --supervised`` run on the demo set."""
    out = tmp_path_factory.mktemp("evaluate_supervised")
    arguments = ["evaluate", "--dataset", "demo", "--pretrained", str(tiny_backbone)]
    arguments += ["--image-size", "16", "--n-per-class", "1", "5", "--repeats", "2"]
    arguments += ["--supervised", "--supervised-epochs", "1", "--batch-size", "64"]
    output = io.StringIO()
    with _recording_evaluation() as record, contextlib.redirect_stdout(output):
        with warnings.catch_warnings():
            # One label per class leaves none to validate on: the classifier says so, rightly.
            warnings.filterwarnings("ignore", "Class .* early stopping", UserWarning)
            code = main([*arguments, "--out", str(out), "--quiet"])
    return code, out, output.getvalue(), record


def _read_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_evaluate_supervised_prints_a_table_per_arm(evaluated_with_supervised):
    code, _, output, _ = evaluated_with_supervised
    assert code == 0
    assert "Frozen features:" in output
    assert "Supervised: fine-tuned from" in output
    assert output.count("balanced_accuracy") == 2


def test_evaluate_supervised_writes_a_csv_per_arm(evaluated_with_supervised):
    _, out, _, _ = evaluated_with_supervised
    for name in ("few_shot_curve.csv", "few_shot_curve_supervised.csv"):
        rows = _read_rows(out / name)
        assert [int(row["n_per_class"]) for row in rows] == [1, 5], name
        assert all(0.0 <= float(row["mean"]) <= 1.0 for row in rows), name


def test_evaluate_supervised_draws_both_curves_on_one_axis(evaluated_with_supervised):
    _, out, _, record = evaluated_with_supervised
    (ax,) = record["axes"]
    labels = [line.get_label() for line in ax.get_lines()]
    assert len(labels) == 2
    assert labels[0].endswith(" + svm")
    assert labels[1].startswith("supervised")
    assert (out / "few_shot_curve.png").read_bytes()[:8] == PNG_SIGNATURE


def test_evaluate_supervised_arm_trains_on_the_same_draws(evaluated_with_supervised):
    _, _, _, record = evaluated_with_supervised
    # One FewShotSplit per labels-per-class value and arm: the features arm's first.
    features_arm, supervised_arm = record["draws"][:2], record["draws"][2:]
    assert [n for n, _ in features_arm] == [n for n, _ in supervised_arm] == [1, 5]
    for (n, features_draws), (_, supervised_draws) in zip(
        features_arm, supervised_arm, strict=True
    ):
        assert len(features_draws) == len(supervised_draws) == 2
        for features_train, supervised_train in zip(features_draws, supervised_draws, strict=True):
            assert len(features_train) == 10 * n
            np.testing.assert_array_equal(features_train, supervised_train)


def test_evaluate_supervised_arm_starts_from_the_pretrained_spec(
    evaluated_with_supervised, tiny_backbone
):
    _, _, _, record = evaluated_with_supervised
    _, supervised = record["estimators"]
    assert str(supervised.pretrained) == str(tiny_backbone)
    assert (supervised.epochs, supervised.image_size, supervised.batch_size) == (1, 16, 64)


def test_evaluate_supervised_arm_starts_from_the_saved_featurizer(
    fitted_featurizer, tmp_path, capsys
):
    path = tmp_path / "featurizer.joblib"
    joblib.dump(fitted_featurizer, path)
    arguments = ["evaluate", "--dataset", "demo", "--featurizer", str(path), "--quiet"]
    arguments += ["--n-per-class", "2", "--repeats", "1", "--classifier", "knn"]
    with _recording_evaluation() as record:
        assert main([*arguments, "--supervised", "--supervised-epochs", "1"]) == 0
    _, supervised = record["estimators"]
    starting_point = supervised.pretrained
    assert isinstance(starting_point, DinoFeaturizer)
    expected = fitted_featurizer.backbone_.state_dict()
    for name, weights in starting_point.backbone_.state_dict().items():
        torch.testing.assert_close(weights, expected[name], rtol=0, atol=0, msg=name)
    assert f"Supervised: fine-tuned from {path}" in capsys.readouterr().out


def test_evaluate_returns_both_arms_with_supervised(fitted_featurizer, tmp_path):
    path = tmp_path / "featurizer.joblib"
    joblib.dump(fitted_featurizer, path)
    results = run_evaluate(
        "demo",
        featurizer=path,
        n_per_class=(2,),
        n_repeats=1,
        classifier="knn",
        verbose=0,
        supervised=True,
        supervised_epochs=1,
    )
    assert results.features_label == f"{path} + knn"
    assert results.supervised_label == f"supervised, fine-tuned from {path}"
    assert list(results.curves) == [results.features_label, results.supervised_label]
    assert all(result.n_per_class.tolist() == [2] for result in results.curves.values())


def test_evaluate_without_supervised_scores_only_the_frozen_features(fitted_featurizer, tmp_path):
    path = tmp_path / "featurizer.joblib"
    joblib.dump(fitted_featurizer, path)
    results = run_evaluate(
        "demo", featurizer=path, n_per_class=(2,), n_repeats=1, classifier="knn", verbose=0
    )
    assert (results.supervised, results.supervised_label) == (None, None)
    assert list(results.curves) == [f"{path} + knn"]
    assert results.features.n_per_class.tolist() == [2]


def test_evaluate_refuses_supervised_epochs_without_supervised(tiny_backbone, capsys):
    arguments = ["evaluate", "--dataset", "demo", "--pretrained", str(tiny_backbone)]
    assert main([*arguments, "--supervised-epochs", "5"]) == 1
    assert "without --supervised" in capsys.readouterr().err


def test_evaluate_refuses_a_supervised_arm_without_epochs(tiny_backbone, capsys):
    arguments = ["evaluate", "--dataset", "demo", "--pretrained", str(tiny_backbone)]
    assert main([*arguments, "--supervised", "--supervised-epochs", "0"]) == 1
    assert "supervised_epochs=0" in capsys.readouterr().err
