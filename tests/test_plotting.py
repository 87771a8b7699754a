"""Figures: the few-shot curve (paper Figure 1) and the confusion matrix (paper Figure 3)."""

import sys
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from sparsam.plotting import plot_confusion_matrix, plot_few_shot_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def curve(mean, std=0.05, n_per_class=(1, 5, 10, 25)):
    """A stand-in for a few-shot curve result with the attributes the plot reads."""
    return SimpleNamespace(
        n_per_class=np.array(n_per_class),
        mean=np.array(mean, dtype=float),
        std=np.full(len(mean), std),
        scoring="balanced_accuracy",
    )


@pytest.fixture
def two_methods():
    return {
        "DINO + SVC": curve([0.40, 0.62, 0.71, 0.80]),
        "ImageNet + SVC": curve([0.30, 0.50, 0.60, 0.70]),
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def assert_is_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5_000


def test_few_shot_curve_renders_to_png(tmp_path, two_methods):
    ax = plot_few_shot_curve(two_methods, reference_lines={"supervised, all labels": 0.85})
    ax.figure.savefig(tmp_path / "curve.png")
    assert_is_png(tmp_path / "curve.png")


def test_few_shot_curve_draws_one_line_per_method_and_reference(two_methods):
    ax = plot_few_shot_curve(two_methods, reference_lines={"supervised, all labels": 0.85})
    assert len(ax.get_lines()) == 3


def test_few_shot_curve_draws_one_std_band_per_method(two_methods):
    ax = plot_few_shot_curve(two_methods)
    assert len(ax.collections) == 2
    assert all(band.get_alpha() == pytest.approx(0.2) for band in ax.collections)


def test_few_shot_curve_legend_names_methods_and_references(two_methods):
    ax = plot_few_shot_curve(two_methods, reference_lines={"supervised, all labels": 0.85})
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["DINO + SVC", "ImageNet + SVC", "supervised, all labels"]


def test_few_shot_curve_reference_line_is_dashed_and_horizontal(two_methods):
    ax = plot_few_shot_curve(two_methods, reference_lines={"supervised, all labels": 0.85})
    reference = ax.get_lines()[-1]
    assert reference.get_linestyle() == "--"
    assert set(reference.get_ydata()) == {0.85}


def test_few_shot_curve_labels_axes_from_scoring(two_methods):
    ax = plot_few_shot_curve(two_methods)
    assert ax.get_ylabel() == "Balanced accuracy"
    assert ax.get_xlabel() == "Labeled images per class"


def test_few_shot_curve_ticks_log_x_axis_at_the_n_values(two_methods):
    ax = plot_few_shot_curve(two_methods)
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [1, 5, 10, 25]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["1", "5", "10", "25"]


def test_few_shot_curve_linear_x_axis_when_log_x_is_false(two_methods):
    ax = plot_few_shot_curve(two_methods, log_x=False)
    assert ax.get_xscale() == "linear"


def test_few_shot_curve_keeps_y_limits_within_zero_and_one():
    ax = plot_few_shot_curve({"near perfect": curve([0.02, 0.5, 0.97, 0.99], std=0.1)})
    low, high = ax.get_ylim()
    assert 0.0 <= low < high <= 1.0


def test_few_shot_curve_sets_title_and_grid(two_methods):
    ax = plot_few_shot_curve(two_methods, title="Bone marrow")
    assert ax.get_title() == "Bone marrow"
    assert any(line.get_visible() for line in ax.xaxis.get_gridlines())


def test_few_shot_curve_draws_into_given_axes(two_methods):
    _, (left, right) = plt.subplots(1, 2)
    assert plot_few_shot_curve(two_methods, ax=right) is right
    assert not left.get_lines()


def test_few_shot_curve_rejects_empty_results():
    with pytest.raises(ValueError, match="at least one"):
        plot_few_shot_curve({})


def test_few_shot_curve_rejects_mixed_scorings(two_methods):
    two_methods["ImageNet + SVC"].scoring = "accuracy"
    with pytest.raises(ValueError, match="one scoring"):
        plot_few_shot_curve(two_methods)


def test_few_shot_curve_names_a_result_with_misaligned_arrays():
    broken = curve([0.4, 0.5, 0.6, 0.7])
    broken.std = np.array([0.1, 0.1])
    with pytest.raises(ValueError, match="'broken'"):
        plot_few_shot_curve({"broken": broken})


@pytest.fixture
def predictions():
    y_true = np.array([0] * 10 + [1] * 30 + [2] * 60)
    y_pred = y_true.copy()
    y_pred[:3] = 1
    y_pred[10:20] = 2
    return y_true, y_pred


def test_confusion_matrix_renders_to_png(tmp_path, predictions):
    ax = plot_confusion_matrix(*predictions, class_names=["blast", "lymphocyte", "myelocyte"])
    ax.figure.savefig(tmp_path / "matrix.png")
    assert_is_png(tmp_path / "matrix.png")


def test_confusion_matrix_rows_sum_to_one_when_normalized(predictions):
    ax = plot_confusion_matrix(*predictions)
    matrix = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_confusion_matrix_shows_counts_without_normalize(predictions):
    ax = plot_confusion_matrix(*predictions, normalize=False)
    matrix = np.asarray(ax.images[0].get_array())
    assert matrix.sum() == 100
    assert matrix[1, 2] == 10


def test_confusion_matrix_annotates_cells_in_percent(predictions):
    ax = plot_confusion_matrix(*predictions)
    cells = [text.get_text() for text in ax.texts]
    assert len(cells) == 9
    assert cells[:3] == ["70%", "30%", "0%"]


def test_confusion_matrix_shows_class_frequencies_beside_rows(predictions):
    ax = plot_confusion_matrix(*predictions)
    ax.figure.canvas.draw()
    texts = {text.get_text() for text in ax.figure.findobj(matplotlib.text.Text)}
    assert {"n=10", "n=30", "n=60"} <= texts


def test_confusion_matrix_names_classes_on_both_axes(predictions):
    names = ["blast", "lymphocyte", "myelocyte"]
    ax = plot_confusion_matrix(*predictions, class_names=names)
    assert [label.get_text() for label in ax.get_xticklabels()] == names
    assert [label.get_text() for label in ax.get_yticklabels()] == names


def test_confusion_matrix_follows_given_label_order(predictions):
    ax = plot_confusion_matrix(*predictions, labels=[2, 1, 0])
    assert [label.get_text() for label in ax.get_yticklabels()] == ["2", "1", "0"]
    assert np.asarray(ax.images[0].get_array())[0, 0] == 1.0


def test_confusion_matrix_rejects_wrong_number_of_class_names(predictions):
    with pytest.raises(ValueError, match="one name per class"):
        plot_confusion_matrix(*predictions, class_names=["a", "b"])


def test_plotting_without_matplotlib_says_how_to_install_it(monkeypatch, two_methods):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "sparsam\[plot\]"'):
        plot_few_shot_curve(two_methods)
