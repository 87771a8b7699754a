"""fit(X, y): labels choose the DINO snapshot (the starting weights included), and nothing else."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from sparsam import DinoFeaturizer
from sparsam import selection as selection_module
from sparsam.data import load_images
from sparsam.dino import DinoTrainer
from sparsam.training.callbacks import Callback


@pytest.fixture
def params(small_xcit_params):
    # XCiT: BatchNorm statistics are part of a snapshot too.
    return {**small_xcit_params, "epochs": 3}


@pytest.fixture
def scripted_scores(monkeypatch):
    """Make labeled_score return the given scores in turn (starting weights first)."""

    def script(scores):
        remaining = list(scores)
        calls = []

        def labeled_score(features, labels):
            calls.append((features.shape, labels.copy()))
            return remaining.pop(0)

        monkeypatch.setattr(selection_module, "labeled_score", labeled_score)
        return calls

    return script


def weights(featurizer):
    return featurizer.backbone_.state_dict()


def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_the_best_snapshot_is_kept_and_ties_go_to_the_later_epoch(
    params, tiny_images, tiny_labels, scripted_scores
):
    calls = scripted_scores([0.5, 0.9, 0.7, 0.9])
    featurizer = DinoFeaturizer(**params).fit(tiny_images, tiny_labels)
    assert featurizer.initial_selection_score_ == 0.5
    assert featurizer.history_["selection_score"] == [0.9, 0.7, 0.9]
    assert featurizer.selected_epoch_ == 3
    assert len(calls) == 4
    plain = DinoFeaturizer(**params).fit(tiny_images)
    assert_same_weights(weights(featurizer), weights(plain))


def test_a_middle_epoch_can_win(params, tiny_images, tiny_labels, scripted_scores, tmp_path):
    scripted_scores([0.5, 0.6, 0.9, 0.7])
    chosen = DinoFeaturizer(**params).fit(tiny_images, tiny_labels)
    assert chosen.selected_epoch_ == 2
    # The same run's teacher after its second epoch (2 steps per epoch: step 4).
    DinoFeaturizer(**params, checkpoint_dir=tmp_path, checkpoint_every=None).fit(tiny_images)
    state = torch.load(tmp_path / "dino_checkpoint_000000004.pt", weights_only=True)
    teacher = {
        name.removeprefix("backbone."): value
        for name, value in state["teacher"].items()
        if name.startswith("backbone.")
    }
    assert_same_weights(weights(chosen), teacher)


def test_the_starting_weights_can_win(params, tiny_images, tiny_labels, scripted_scores):
    scripted_scores([0.9, 0.5, 0.6, 0.7])
    chosen = DinoFeaturizer(**params).fit(tiny_images, tiny_labels)
    assert chosen.selected_epoch_ == 0
    with pytest.warns(UserWarning, match="epochs=0"):
        untrained = DinoFeaturizer(**{**params, "epochs": 0}).fit(tiny_images)
    assert_same_weights(weights(chosen), weights(untrained))


@pytest.mark.parametrize("labels", [None, "all unlabeled"], ids=["none", "all-minus-one"])
def test_without_labels_fit_is_what_it_was(params, tiny_images, labels, scripted_scores):
    calls = scripted_scores([])
    y = None if labels is None else np.full(len(tiny_images), -1)
    featurizer = DinoFeaturizer(**params).fit(tiny_images, y)
    assert calls == []
    assert "selection_score" not in featurizer.history_
    assert np.isnan(featurizer.initial_selection_score_)
    assert featurizer.selected_epoch_ == params["epochs"]
    assert_same_weights(weights(featurizer), weights(DinoFeaturizer(**params).fit(tiny_images)))


def test_only_the_labeled_images_are_scored_with_their_labels(
    params, tiny_images, tiny_labels, scripted_scores
):
    calls = scripted_scores([0.5] * 4)
    y = tiny_labels.copy()
    y[::2] = -1
    DinoFeaturizer(**params).fit(tiny_images, y)
    (shape, labels), *_ = calls
    assert shape[0] == len(tiny_images) // 2
    np.testing.assert_array_equal(labels, tiny_labels[1::2])


def test_too_few_labels_per_class_warn_and_keep_the_last_epoch(
    params, tiny_images, tiny_labels, scripted_scores
):
    calls = scripted_scores([])
    y = np.full(len(tiny_images), -1)
    y[0], y[-1] = tiny_labels[0], tiny_labels[-1]
    with pytest.warns(UserWarning, match="at least 2 classes of at least 2 labeled images"):
        featurizer = DinoFeaturizer(**params).fit(tiny_images, y)
    assert calls == [] and featurizer.selected_epoch_ == params["epochs"]


def test_inside_cross_validate_the_test_folds_labels_never_choose(
    params, tiny_images, tiny_labels, monkeypatch
):
    scored = []
    original = selection_module.SnapshotScorer.__init__

    def recording_init(self, images, labels, *args, **kwargs):
        scored.append((np.asarray(images.items), labels.copy()))
        original(self, images, labels, *args, **kwargs)

    monkeypatch.setattr(selection_module.SnapshotScorer, "__init__", recording_init)
    folds = list(StratifiedKFold(n_splits=2).split(tiny_images, tiny_labels))
    pipeline = make_pipeline(DinoFeaturizer(**{**params, "epochs": 1}), SVC())
    cross_validate(pipeline, tiny_images, tiny_labels, cv=folds, error_score="raise")
    assert len(scored) == len(folds)
    for (train, test), (pixels, labels) in zip(folds, scored, strict=True):
        np.testing.assert_array_equal(labels, tiny_labels[train])
        decoded = load_images(tiny_images, 16).permute(0, 2, 3, 1).numpy()
        assert {image.tobytes() for image in pixels} == {
            image.tobytes() for image in decoded[train]
        }
        assert not {image.tobytes() for image in pixels} & {
            image.tobytes() for image in decoded[test]
        }


def test_a_resumed_run_keeps_the_best_snapshot_of_the_epochs_before_the_interruption(
    params, tiny_images, tiny_labels, tmp_path, monkeypatch, scripted_scores
):
    # Epoch 1 wins. Interrupted in epoch 2, the resumed run scores only the starting weights
    # again and epochs 2 and 3: it must take epoch 1's snapshot from the checkpoint.
    scripted_scores([0.5, 0.9, 0.6, 0.7])
    uninterrupted = DinoFeaturizer(**params).fit(tiny_images, tiny_labels)
    assert uninterrupted.selected_epoch_ == 1
    resumable = {**params, "checkpoint_dir": tmp_path, "checkpoint_every": 1}
    original, steps = DinoTrainer.train_step, []

    def interrupted_step(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    scripted_scores([0.5, 0.9])
    monkeypatch.setattr(DinoTrainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        DinoFeaturizer(**resumable).fit(tiny_images, tiny_labels)
    monkeypatch.setattr(DinoTrainer, "train_step", original)
    scripted_scores([0.5, 0.6, 0.7])
    resumed = DinoFeaturizer(**resumable).fit(tiny_images, tiny_labels)
    assert resumed.selected_epoch_ == 1
    assert resumed.history_["selection_score"] == [0.9, 0.6, 0.7]
    assert_same_weights(weights(resumed), weights(uninterrupted))


def test_a_checkpoint_of_other_labels_is_not_resumed(params, tiny_images, tiny_labels, tmp_path):
    resumable = {**params, "checkpoint_dir": tmp_path, "epochs": 1}
    DinoFeaturizer(**resumable).fit(tiny_images, tiny_labels)
    with pytest.raises(ValueError, match="other labels"):
        DinoFeaturizer(**resumable).fit(tiny_images, tiny_labels[::-1].copy())


# --- kNN accuracy per epoch (DINO's eval_knn), on the labeled images only ---


def test_knn_accuracy_is_leave_one_out_weighted_knn_as_sklearn_computes_it():
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    labels = np.repeat([3, 5, 7], 12)
    features = rng.normal(size=(36, 6)) + labels[:, None] * 0.15
    reference = KNeighborsClassifier(
        n_neighbors=20,
        metric="cosine",
        algorithm="brute",
        # Cosine distance is 1 - similarity: DINO's weight exp(similarity / 0.07).
        weights=lambda distances: np.exp((1 - distances) / 0.07),
    )
    predicted = cross_val_predict(reference, features, labels, cv=LeaveOneOut())
    expected = np.mean(predicted == labels)
    assert 0.2 < expected < 1
    assert selection_module.knn_accuracy(features, labels) == pytest.approx(expected)


def test_knn_accuracy_never_counts_an_image_as_its_own_neighbour():
    # Each image's nearest other image is of the other class.
    angles = np.radians([0, 1, 90, 91])
    features = np.c_[np.cos(angles), np.sin(angles)]
    assert selection_module.knn_accuracy(features, np.array([0, 1, 0, 1]), n_neighbors=1) == 0


def test_knn_accuracy_is_of_the_features_transform_returns_for_the_labeled_images(
    params, tiny_images, tiny_labels, scripted_scores
):
    scripted_scores([0.1, 0.2, 0.3, 0.4])  # the last epoch is kept
    y = tiny_labels.copy()
    y[::3] = -1
    featurizer = DinoFeaturizer(**params).fit(tiny_images, y)
    knn = featurizer.history_["knn_accuracy"]
    assert len(knn) == params["epochs"] and all(0 <= value <= 1 for value in knn)
    labeled = y != -1
    features = featurizer.transform(tiny_images[labeled])
    assert knn[-1] == pytest.approx(selection_module.knn_accuracy(features, y[labeled]))


class RecordWeights(Callback):
    """The student's and teacher's weights at the end of every epoch."""

    def __init__(self):
        self.states = []

    def on_epoch_end(self, trainer, epoch, row):
        for model in (trainer.student, trainer.backbone):
            self.states.append({k: v.clone() for k, v in model.state_dict().items()})


def test_scoring_the_labeled_images_changes_no_weight_of_any_epoch(
    params, tiny_images, tiny_labels
):
    with_labels, without = RecordWeights(), RecordWeights()
    scored = DinoFeaturizer(**params, callbacks=[with_labels]).fit(tiny_images, tiny_labels)
    plain = DinoFeaturizer(**params, callbacks=[without]).fit(tiny_images)
    assert "knn_accuracy" in scored.history_ and "knn_accuracy" not in plain.history_
    assert len(with_labels.states) == len(without.states) == 2 * params["epochs"]
    for first, second in zip(with_labels.states, without.states, strict=True):
        assert_same_weights(first, second)


def test_the_epoch_log_line_shows_the_knn_accuracy(params, tiny_images, tiny_labels, capsys):
    featurizer = DinoFeaturizer(**{**params, "epochs": 1, "verbose": 2})
    featurizer.fit(tiny_images, tiny_labels)
    knn = featurizer.history_["knn_accuracy"][0]
    assert f"kNN accuracy {knn:.3f}" in capsys.readouterr().err
