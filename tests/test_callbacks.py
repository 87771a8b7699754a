"""Per-epoch callbacks of both training loops: when they are called, what they see, no effect."""

import numpy as np
import pytest
import torch
from conftest import SMALL_XCIT_PARAMS, TINY_PARAMS

from sparsam import DinoFeaturizer, SupervisedClassifier
from sparsam.training.callbacks import Callback
from sparsam.training.checkpoints import list_checkpoints

# The tiny ViT, 2 blocks (drop-path runs), as a classifier: 40 images, 12 of them validation,
# 28 in batches of 8 = 4 steps per epoch.
CLASSIFIER = {
    "backbone": TINY_PARAMS["backbone"],
    "backbone_kwargs": {**TINY_PARAMS["backbone_kwargs"], "depth": 2},
    "image_size": 16,
    "drop_path_rate": 0.2,
    "batch_size": 8,
    "epochs": 3,
    "warmup_epochs": 1,
    "random_state": 0,
    "verbose": 0,
}


class Recorder(Callback):
    """Records every hook call and the trainer's backbone weights at each."""

    def __init__(self):
        self.calls = []
        self.weights = []

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(("start", epoch))
        self.weights.append(self._weights(trainer))

    def on_epoch_end(self, trainer, epoch, row):
        assert row == {name: values[-1] for name, values in trainer.history.items()}
        self.calls.append(("end", epoch))
        self.weights.append(self._weights(trainer))

    @staticmethod
    def _weights(trainer):
        return {name: value.clone() for name, value in trainer.backbone.state_dict().items()}


class StopAfterFirstEpoch(Callback):
    """Stands for a killed process: fails once the first epoch's checkpoint is written."""

    def on_epoch_end(self, trainer, epoch, row):
        raise RuntimeError("killed")


def every_epoch(epochs):
    return [(hook, epoch) for epoch in epochs for hook in ("start", "end")]


def fit_dino(params, images, callbacks=None):
    return DinoFeaturizer(**params, callbacks=callbacks).fit(images)


def fit_classifier(params, images, labels, callbacks=None):
    return SupervisedClassifier(**params, callbacks=callbacks).fit(images, labels)


@pytest.fixture
def dino_params(tiny_params):
    return {**tiny_params, "epochs": 3}


def test_dino_calls_both_hooks_once_per_epoch_in_order(dino_params, tiny_images):
    recorder = Recorder()
    fit_dino(dino_params, tiny_images, [recorder])
    assert recorder.calls == every_epoch(range(3))


def test_fine_tuning_calls_both_hooks_once_per_epoch_in_order(tiny_images, tiny_labels):
    recorder = Recorder()
    fit_classifier(CLASSIFIER, tiny_images, tiny_labels, [recorder])
    assert recorder.calls == every_epoch(range(3))


def test_every_callback_is_called_in_the_order_given(dino_params, tiny_images):
    order = []

    class Named(Callback):
        def __init__(self, name):
            self.name = name

        def on_epoch_end(self, trainer, epoch, row):
            order.append(self.name)

    fit_dino({**dino_params, "epochs": 1}, tiny_images, [Named("first"), Named("second")])
    assert order == ["first", "second"]


def changed(before, after):
    return any(not torch.equal(before[name], after[name]) for name in before)


def test_dino_callbacks_see_the_teacher_backbone_train(dino_params, tiny_images):
    recorder = Recorder()
    fitted = fit_dino(dino_params, tiny_images, [recorder])
    first_start, first_end, *_, last_end = recorder.weights
    assert changed(first_start, first_end)
    final = fitted.backbone_.state_dict()
    assert not changed(last_end, {name: value for name, value in final.items()})


def test_fine_tuning_callbacks_see_the_backbone_train(tiny_images, tiny_labels):
    recorder = Recorder()
    fit_classifier({**CLASSIFIER, "n_iter_no_change": None}, tiny_images, tiny_labels, [recorder])
    first_start, _, _, second_end, *_ = recorder.weights
    # The zero head sends no gradient into the backbone at the first step; later steps do.
    assert changed(first_start, second_end)


def test_a_resumed_dino_run_calls_the_hooks_for_the_remaining_epochs_only(
    dino_params, tiny_images, tmp_path
):
    params = {**dino_params, "checkpoint_dir": tmp_path, "checkpoint_every": 1}
    with pytest.raises(RuntimeError, match="killed"):
        fit_dino(params, tiny_images, [StopAfterFirstEpoch()])
    recorder = Recorder()
    resumed = fit_dino(params, tiny_images, [recorder])
    assert recorder.calls == every_epoch([1, 2])
    # Mid-epoch: 2 steps per epoch, so step 5 of 6 is the middle of the last epoch.
    for newer in list_checkpoints(tmp_path)[:1]:
        newer.unlink()
    assert list_checkpoints(tmp_path)[0].name == "dino_checkpoint_000000005.pt"
    recorder = Recorder()
    fit_dino(params, tiny_images, [recorder])
    assert recorder.calls == every_epoch([2])
    # Callbacks are no part of the run identity, and did not change the result.
    uninterrupted = fit_dino(dino_params, tiny_images)
    assert np.array_equal(resumed.transform(tiny_images), uninterrupted.transform(tiny_images))


def test_a_resumed_fine_tuning_run_calls_the_hooks_for_the_remaining_epochs_only(
    tiny_images, tiny_labels, tmp_path
):
    params = {**CLASSIFIER, "checkpoint_dir": tmp_path}
    with pytest.raises(RuntimeError, match="killed"):
        fit_classifier(params, tiny_images, tiny_labels, [StopAfterFirstEpoch()])
    recorder = Recorder()
    resumed = fit_classifier(params, tiny_images, tiny_labels, [recorder])
    assert recorder.calls == every_epoch([1, 2])
    uninterrupted = fit_classifier(CLASSIFIER, tiny_images, tiny_labels)
    assert np.array_equal(
        resumed.predict_proba(tiny_images), uninterrupted.predict_proba(tiny_images)
    )


def test_a_callback_does_not_change_dino_bit_for_bit(tiny_images):
    # The small XCiT: BatchNorm in the teacher and drop-path, the state a hook could disturb.
    params = {**SMALL_XCIT_PARAMS, "epochs": 2}
    watched = fit_dino(params, tiny_images, [Recorder()])
    plain = fit_dino(params, tiny_images)
    assert torch.equal(
        torch.as_tensor(watched.transform(tiny_images)),
        torch.as_tensor(plain.transform(tiny_images)),
    )
    assert watched.history_["loss"] == plain.history_["loss"]


def test_a_callback_does_not_change_fine_tuning_bit_for_bit(tiny_images, tiny_labels):
    watched = fit_classifier(CLASSIFIER, tiny_images, tiny_labels, [Recorder()])
    plain = fit_classifier(CLASSIFIER, tiny_images, tiny_labels)
    assert np.array_equal(watched.predict_proba(tiny_images), plain.predict_proba(tiny_images))
    assert watched.history_["loss"] == plain.history_["loss"]
