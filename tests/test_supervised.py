"""SupervisedClassifier: the paper's fine-tuned baseline as a scikit-learn classifier."""

import contextlib
import os
import pickle
import signal

import numpy as np
import pytest
import torch
from conftest import SMALL_XCIT_PARAMS, TINY_PARAMS
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_validate

from sparsam import (
    DinoFeaturizer,
    FewShotSplit,
    SupervisedClassifier,
    few_shot_curve,
    save_backbone,
)
from sparsam._estimator import build_backbone
from sparsam.data.training import TrainingImages
from sparsam.supervised import FineTuneConfig, FineTuneTrainer
from sparsam.supervised.trainer import ClassifierModel, balanced_accuracy
from sparsam.training.augment import MultiCropAugmentation
from sparsam.training.callbacks import Callback
from sparsam.training.checkpoints import list_checkpoints

# The conftest's small XCiT (BatchNorm, drop-path 0.2, depth 2) as a classifier: 40 images,
# 12 of them validation, 28 in batches of 8 = 4 steps per epoch.
XCIT = {
    "backbone": SMALL_XCIT_PARAMS["backbone"],
    "backbone_kwargs": SMALL_XCIT_PARAMS["backbone_kwargs"],
    "image_size": 16,
    "drop_path_rate": 0.2,
    "batch_size": 8,
    "epochs": 3,
    "warmup_epochs": 1,
    "random_state": 0,
    "verbose": 0,
}
VIT = {
    **XCIT,
    "backbone": TINY_PARAMS["backbone"],
    "backbone_kwargs": {**TINY_PARAMS["backbone_kwargs"], "depth": 2},
}


def same_model(first, second):
    first, second = first.model_.state_dict(), second.model_.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def fitted(tiny_images, tiny_labels):
    return SupervisedClassifier(**XCIT).fit(tiny_images, tiny_labels)


# --- what it returns ---------------------------------------------------------------------


def test_fitted_attributes_describe_the_run(fitted):
    assert fitted.classes_.tolist() == [0, 1]
    assert fitted.n_iter_ == 3 == len(fitted.history_["loss"])
    assert set(fitted.history_) == {
        "loss",
        "lr",
        "seconds",
        "validation_loss",
        "validation_balanced_accuracy",
    }
    assert fitted.early_stopping_
    scores = list(
        zip(
            fitted.history_["validation_balanced_accuracy"],
            [-loss for loss in fitted.history_["validation_loss"]],
            strict=True,
        )
    )
    assert fitted.best_epoch_ == max(range(3), key=lambda epoch: scores[epoch])
    assert not fitted.model_.training
    assert fitted.data_config_["image_size"] == 16


def test_predict_proba_is_a_distribution_over_classes_and_agrees_with_predict(fitted, tiny_images):
    probabilities = fitted.predict_proba(tiny_images)
    assert probabilities.shape == (40, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(
        fitted.predict(tiny_images), fitted.classes_[probabilities.argmax(axis=1)]
    )


def test_binary_decision_function_is_one_column_signed_towards_the_second_class(
    fitted, tiny_images
):
    scores = fitted.decision_function(tiny_images)
    assert scores.shape == (40,)
    np.testing.assert_array_equal(fitted.predict(tiny_images), fitted.classes_[(scores > 0) * 1])


def test_string_labels_come_back_as_strings(tiny_images, tiny_labels):
    names = np.array(["blast", "lymphocyte"])[tiny_labels]
    clf = SupervisedClassifier(**{**VIT, "epochs": 1}).fit(tiny_images, names)
    assert clf.classes_.tolist() == ["blast", "lymphocyte"]
    assert set(clf.predict(tiny_images)) <= {"blast", "lymphocyte"}


def test_unlabeled_images_are_left_out_with_a_message(tiny_images, tiny_labels):
    labels = tiny_labels.copy()
    labels[::4] = -1
    with pytest.warns(UserWarning, match=r"10 of 40 images are labeled -1 \(unlabeled\)"):
        clf = SupervisedClassifier(**{**VIT, "epochs": 1}).fit(tiny_images, labels)
    assert clf.classes_.tolist() == [0, 1]


def test_class_weights_are_inverse_counts_normalised_to_the_number_of_classes(tiny_images):
    labels = np.array([0] * 30 + [1] * 10)
    clf = SupervisedClassifier(**{**VIT, "epochs": 1, "validation_fraction": None})
    clf.fit(tiny_images, labels)
    np.testing.assert_allclose(clf.class_weight_, [0.5, 1.5])
    assert clf.class_weight_.sum() == pytest.approx(2)


def test_one_label_per_class_trains_every_epoch_on_all_labels_and_says_so(tiny_images):
    labels = np.full(40, -1)
    labels[[0, 39]] = [0, 1]
    with pytest.warns(UserWarning, match=r"Class .* has 1 label: early stopping needs 2"):
        clf = SupervisedClassifier(**{**VIT, "epochs": 4, "n_iter_no_change": 1}).fit(
            tiny_images, labels
        )
    assert not clf.early_stopping_
    assert clf.n_iter_ == 4 and clf.best_epoch_ == 3
    assert "validation_loss" not in clf.history_


# --- training ----------------------------------------------------------------------------


def test_the_training_loss_is_the_class_weighted_cross_entropy():
    trainer = scripted_trainer([], patience=None)
    generator = torch.Generator().manual_seed(0)
    torch.nn.init.normal_(trainer.model.head.weight, std=1.0, generator=generator)
    crops = torch.randn(6, 3, 16, 16, generator=generator)
    labels = torch.tensor([0, 0, 0, 0, 0, 1])
    weights = torch.tensor([0.6, 3.0])
    trainer.model.train()
    torch.manual_seed(2)  # the same drop-path draws in both forward passes
    loss = trainer._forward_backward(crops, labels, weights)
    torch.manual_seed(2)
    with torch.no_grad():
        logits = trainer.model(crops)
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
    torch.testing.assert_close(loss, expected)
    assert abs(expected - torch.nn.functional.cross_entropy(logits, labels)) > 1e-2


def scripted_trainer(scores, patience, epochs=6):
    """A ViT trainer whose validation reports ``scores`` (balanced accuracy) epoch by epoch."""
    torch.manual_seed(0)
    backbone = build_backbone(VIT["backbone"], VIT["backbone_kwargs"], None, 16, 0.2)
    trainer = FineTuneTrainer(
        backbone,
        2,
        MultiCropAugmentation(global_crops=1, local_crops=0, global_crop_size=16),
        FineTuneConfig(epochs=epochs, batch_size=8, warmup_epochs=0, patience=patience),
        torch.device("cpu"),
    )
    remaining = list(scores)
    trainer._validate = lambda *args: {
        "validation_loss": 1.0,
        "validation_balanced_accuracy": remaining.pop(0),
    }
    return trainer


def test_training_stops_after_patience_epochs_without_improvement_and_restores_the_best(
    tiny_images, tiny_labels
):
    trainer = scripted_trainer([0.5, 0.8, 0.7, 0.8, 0.6, 0.9], patience=3)
    images = torch.as_tensor(np.array(tiny_images))[:, None].expand(-1, 3, -1, -1)
    images = torch.nn.functional.interpolate(images.float(), size=16).to(torch.uint8)
    snapshots = []

    class Snapshots(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer.callbacks = [Snapshots()]
    trainer.fit(
        images,
        torch.as_tensor(tiny_labels),
        torch.arange(28),
        torch.arange(28, 40),
        torch.ones(2),
        torch.Generator().manual_seed(0),
    )
    # Best at epoch 1 (0.8; a later tie does not replace it); epochs 2, 3, 4 bring nothing.
    assert len(trainer.history["loss"]) == 5
    assert trainer.best_epoch == 1
    restored = trainer.model.state_dict()
    assert all(torch.equal(restored[k], snapshots[1][k]) for k in restored)
    assert not all(torch.equal(restored[k], snapshots[-1][k]) for k in restored)


def test_equal_validation_accuracy_is_broken_by_the_lower_loss(tiny_images, tiny_labels):
    trainer = scripted_trainer([], patience=None, epochs=4)
    rows = [(0.5, 1.0), (0.8, 0.9), (0.8, 0.7), (0.8, 0.8)]
    trainer._validate = lambda *args: dict(
        zip(("validation_balanced_accuracy", "validation_loss"), rows.pop(0), strict=True)
    )
    images = torch.zeros(40, 3, 16, 16, dtype=torch.uint8)
    trainer.fit(
        images, torch.as_tensor(tiny_labels), torch.arange(28), torch.arange(28, 40),
        torch.ones(2), torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert trainer.best_epoch == 2


def test_validation_runs_in_eval_mode_and_training_resumes_in_train_mode(tiny_labels):
    trainer = scripted_trainer([], patience=None)
    del trainer._validate  # the real one
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.nn.init.normal_(trainer.model.head.weight, generator=torch.Generator().manual_seed(1))
    trainer.model.train()
    arguments = (TrainingImages(None, 16, images), torch.as_tensor(tiny_labels),
                 torch.arange(40), torch.ones(2))  # fmt: skip
    # Drop-path (0.2) would make two passes differ in train mode.
    assert trainer._validate(*arguments) == trainer._validate(*arguments)
    assert trainer.model.training


def test_each_fine_tuning_step_sets_weight_decay_on_weights_only(tiny_labels):
    trainer = scripted_trainer([], patience=None)
    images = torch.zeros(8, 3, 16, 16, dtype=torch.uint8)
    trainer.train_step(images, torch.as_tensor(tiny_labels[:8]), torch.ones(2),
                       torch.Generator().manual_seed(0), 1e-3)  # fmt: skip
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == trainer.config.weight_decay > 0
    assert no_decay["weight_decay"] == 0.0
    assert decay["lr"] == no_decay["lr"] == 1e-3


def test_the_same_random_state_gives_the_same_model_bit_for_bit(tiny_images, tiny_labels, fitted):
    again = SupervisedClassifier(**XCIT).fit(tiny_images, tiny_labels)
    assert same_model(again, fitted)
    np.testing.assert_array_equal(
        again.predict_proba(tiny_images), fitted.predict_proba(tiny_images)
    )
    other = SupervisedClassifier(**{**XCIT, "random_state": 1}).fit(tiny_images, tiny_labels)
    assert not same_model(other, fitted)


def test_fit_leaves_torchs_global_generator_alone(tiny_images, tiny_labels):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    SupervisedClassifier(**{**VIT, "epochs": 1}).fit(tiny_images, tiny_labels)
    assert torch.equal(torch.rand(3), expected)


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    logits = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])
    labels = torch.tensor([0, 0, 1, 1])
    assert balanced_accuracy(logits, labels) == pytest.approx(0.75)
    # Imbalanced: always predicting the majority is 75 % accurate but 50 % balanced.
    always_zero = torch.tensor([[1.0, 0]] * 4)
    assert balanced_accuracy(always_zero, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.5)


def test_a_new_head_gives_every_class_equal_odds_and_no_gradient_to_the_backbone():
    torch.manual_seed(0)
    backbone = build_backbone(VIT["backbone"], VIT["backbone_kwargs"], None, 16, 0.0)
    model = ClassifierModel(backbone, 3)
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    logits = model(images)
    assert torch.equal(logits, torch.zeros(4, 3))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is None or not p.grad.any() for p in backbone.parameters())


# --- checkpoints -------------------------------------------------------------------------


@pytest.fixture
def checkpointed(tmp_path):
    return {**XCIT, "epochs": 4, "checkpoint_dir": tmp_path / "run"}


@contextlib.contextmanager
def counting_steps(monkeypatch):
    """``with counting_steps(monkeypatch) as steps:`` lists one entry per fine-tuning step."""
    original, steps = FineTuneTrainer.train_step, []

    def counted(self, *args):
        steps.append(1)
        return original(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(FineTuneTrainer, "train_step", counted)
        yield steps


def test_checkpoints_after_every_epoch_keep_the_newest_three(
    checkpointed, tiny_images, tiny_labels
):
    SupervisedClassifier(**checkpointed).fit(tiny_images, tiny_labels)
    names = [path.name for path in list_checkpoints(checkpointed["checkpoint_dir"], "supervised")]
    assert names == [f"supervised_checkpoint_{step:09d}.pt" for step in (16, 12, 8)]


def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_model(
    checkpointed, tiny_images, tiny_labels, monkeypatch
):
    original = FineTuneTrainer._save_checkpoint

    def crash_after_second_epoch(self, epochs_done, *args):
        path = original(self, epochs_done, *args)
        if epochs_done == 2:
            raise RuntimeError("killed")
        return path

    monkeypatch.setattr(FineTuneTrainer, "_save_checkpoint", crash_after_second_epoch)
    with pytest.raises(RuntimeError, match="killed"):
        SupervisedClassifier(**checkpointed).fit(tiny_images, tiny_labels)
    monkeypatch.setattr(FineTuneTrainer, "_save_checkpoint", original)
    with counting_steps(monkeypatch) as steps:
        resumed = SupervisedClassifier(**checkpointed).fit(tiny_images, tiny_labels)
    assert len(steps) == 2 * 4, "only epochs 3 and 4 are trained again"
    uninterrupted = SupervisedClassifier(**{**checkpointed, "checkpoint_dir": None})
    uninterrupted.fit(tiny_images, tiny_labels)
    assert same_model(resumed, uninterrupted)
    assert resumed.history_["validation_loss"] == uninterrupted.history_["validation_loss"]
    assert resumed.best_epoch_ == uninterrupted.best_epoch_


def test_ctrl_c_finishes_the_epoch_saves_and_says_how_to_resume(
    checkpointed, tiny_images, tiny_labels, monkeypatch, caplog
):
    original = FineTuneTrainer.train_step
    calls = []

    def interrupted_step(self, *args):
        calls.append(1)
        if len(calls) == 6:  # the second step of the second epoch
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args)

    monkeypatch.setattr(FineTuneTrainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt, match=r"after epoch 2/4.*To resume, call fit again"):
        SupervisedClassifier(**checkpointed).fit(tiny_images, tiny_labels)
    assert len(calls) == 8, "the interrupted epoch finishes, no further epoch starts"
    monkeypatch.setattr(FineTuneTrainer, "train_step", original)
    with counting_steps(monkeypatch) as steps:
        resumed = SupervisedClassifier(**checkpointed).fit(tiny_images, tiny_labels)
    assert len(steps) == 2 * 4, "only epochs 3 and 4 are trained again"
    uninterrupted = SupervisedClassifier(**{**checkpointed, "checkpoint_dir": None})
    assert same_model(resumed, uninterrupted.fit(tiny_images, tiny_labels))


def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(
    checkpointed, tiny_images, tiny_labels
):
    SupervisedClassifier(**{**checkpointed, "epochs": 1}).fit(tiny_images, tiny_labels)
    with pytest.raises(ValueError, match=r"belongs to another run \(.*seed: another random_state"):
        SupervisedClassifier(**{**checkpointed, "epochs": 1, "random_state": 1}).fit(
            tiny_images, tiny_labels
        )
    with pytest.raises(ValueError, match=r"labels: other labels"):
        SupervisedClassifier(**{**checkpointed, "epochs": 1}).fit(tiny_images, 1 - tiny_labels)


# --- starting points ---------------------------------------------------------------------


def test_starts_from_a_fitted_featurizer_without_changing_or_refitting_it(tiny_images, tiny_labels):
    featurizer = DinoFeaturizer(**{**SMALL_XCIT_PARAMS, "epochs": 1}).fit(tiny_images)
    before = {k: v.clone() for k, v in featurizer.backbone_.state_dict().items()}
    clf = SupervisedClassifier(
        **{**XCIT, "epochs": 1, "lr": 1e-12, "weight_decay": 0.0}, pretrained=featurizer
    )
    assert clone(clf).pretrained is featurizer, "clone shares the fitted starting point"
    clf.fit(tiny_images, tiny_labels)
    after = featurizer.backbone_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    tuned = dict(clf.model_.backbone.named_parameters())
    for name, parameter in featurizer.backbone_.named_parameters():
        torch.testing.assert_close(tuned[name], parameter, rtol=0, atol=1e-6)
    assert clf.data_config_ == featurizer.data_config_


def test_starts_from_a_saved_backbone_directory_offline(tmp_path, tiny_images, tiny_labels):
    featurizer = DinoFeaturizer(**{**SMALL_XCIT_PARAMS, "epochs": 1}).fit(tiny_images)
    save_backbone(featurizer, tmp_path / "dino")
    clf = SupervisedClassifier(**{**XCIT, "epochs": 1}, pretrained=tmp_path / "dino")
    clf.fit(tiny_images, tiny_labels)
    assert type(clf.model_.backbone).__name__ == "Xcit"
    assert clf.model_.backbone.num_features == 32


def test_an_unfitted_featurizer_as_starting_point_is_refused(tiny_images, tiny_labels):
    clf = SupervisedClassifier(**VIT, pretrained=DinoFeaturizer())
    with pytest.raises(Exception, match=r"not fitted"):
        clf.fit(tiny_images, tiny_labels)


# --- scikit-learn ------------------------------------------------------------------------


def test_pickles_and_predicts_the_same_after_unpickling(fitted, tiny_images):
    restored = pickle.loads(pickle.dumps(fitted))
    assert next(restored.model_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(restored.predict(tiny_images), fitted.predict(tiny_images))


def test_works_in_cross_validate_and_grid_search_with_few_shot_splits(tiny_images, tiny_labels):
    clf = SupervisedClassifier(**{**VIT, "epochs": 1})
    cv = FewShotSplit(n_per_class=5, n_repeats=2, random_state=0)
    scores = cross_validate(clf, tiny_images, tiny_labels, cv=cv, scoring="balanced_accuracy")
    assert scores["test_score"].shape == (2,)
    search = GridSearchCV(clf, {"lr": [1e-4, 1e-3]}, cv=cv, scoring="balanced_accuracy")
    search.fit(tiny_images, tiny_labels)
    # The search's lr=1e-4 (the classifier's own) scores each split as cross_validate did.
    first = list(search.cv_results_["params"]).index({"lr": 1e-4})
    np.testing.assert_array_equal(
        [search.cv_results_[f"split{i}_test_score"][first] for i in range(2)],
        scores["test_score"],
    )


def test_few_shot_curve_scores_the_classifier(tiny_images, tiny_labels):
    result = few_shot_curve(
        SupervisedClassifier(**{**VIT, "epochs": 1}),
        tiny_images,
        tiny_labels,
        n_per_class=(1, 5),
        n_repeats=2,
        random_state=0,
    )
    assert result.n_per_class.tolist() == [1, 5]
    assert all(np.isfinite(result.scores[n]).all() for n in (1, 5))


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "labels", "message"),
    [
        ({}, np.zeros(40), r"1 class\(es\) among its labeled images"),
        ({}, np.linspace(0, 1, 40), r"y\[1\] = .* is not a class label"),
        ({}, np.arange(39) % 2, r"X has 40 images, y has 39 labels"),
        ({"crop_scale": (0.9, 0.5)}, None, r"crop_scale must be \(low, high\)"),
        ({"device": "gpu"}, None, r"device='gpu' is not a device torch knows"),
        ({"image_size": 18}, None, r"image_size=18 is not a multiple of .* patch size 4"),
    ],
)
def test_bad_input_fails_naming_what_was_expected(
    change, labels, message, tiny_images, tiny_labels, monkeypatch
):
    monkeypatch.setattr(
        "sparsam._estimator.training_images",
        lambda *args, **kwargs: pytest.fail("images were decoded before the checks"),
    )
    with pytest.raises(ValueError, match=message):
        SupervisedClassifier(**{**VIT, **change}).fit(
            tiny_images, tiny_labels if labels is None else labels
        )


# --- GPU ---------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_gpu_fit_in_bf16_predicts_and_unpickles_on_the_cpu(tiny_images, tiny_labels, monkeypatch):
    clf = SupervisedClassifier(**{**XCIT, "device": "cuda", "precision": "auto"})
    clf.fit(tiny_images, tiny_labels)
    assert next(clf.model_.parameters()).device.type == "cuda"
    on_gpu = clf.predict_proba(tiny_images)
    payload = pickle.dumps(clf)
    assert next(clf.model_.parameters()).device.type == "cuda", "pickling moves a copy"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = pickle.loads(payload).set_params(device="auto")
    on_cpu = restored.predict_proba(tiny_images)
    assert np.isfinite(on_gpu).all()
    # bf16 on the GPU against fp32 on the CPU: the same model, not the same rounding.
    np.testing.assert_allclose(on_cpu, on_gpu, atol=0.05)
