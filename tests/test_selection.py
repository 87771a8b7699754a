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
