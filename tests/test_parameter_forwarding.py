"""Every estimator parameter reaches what it configures, with a value that is not its default.

A parameter that `fit` forgets to pass on trains with the default silently; these tests stop
the fit when the trainer starts, and read the value back from the trainer, its loss, head,
augmentation, schedules or backbone. A new parameter fails `test_every_parameter_is_checked`
until it has a row here (or a reason in ``CHECKED_ELSEWHERE``).
"""

import inspect

import numpy as np
import pytest
import torch

from sparsam import DinoFeaturizer, SupervisedClassifier
from sparsam.dino import TrainingConfig
from sparsam.dino.config import dino_schedules
from sparsam.dino.trainer import DinoTrainer
from sparsam.supervised.trainer import FineTuneTrainer
from sparsam.training.callbacks import Callback

# A callback list reaches the trainer as it is given: the same Callback objects, in order.
CALLBACKS = [Callback(), Callback()]


class _Started(Exception):
    """Raised by the patched trainer's fit, carrying the trainer and its arguments."""

    def __init__(self, trainer, arguments):
        super().__init__("stopped when training started")
        self.trainer, self.arguments = trainer, arguments


@pytest.fixture
def started(monkeypatch):
    """``started(estimator, X, y)``: the trainer ``estimator.fit`` built, before any step."""

    def stop(self, *arguments, **keywords):
        raise _Started(self, arguments)

    monkeypatch.setattr(DinoTrainer, "fit", stop)
    monkeypatch.setattr(FineTuneTrainer, "fit", stop)

    def run(estimator, images, labels=None):
        with pytest.raises(_Started) as caught:
            estimator.fit(images, labels)
        return caught.value

    return run


def drop_probabilities(backbone: torch.nn.Module) -> list[float]:
    return [round(float(m.drop_prob), 6) for m in backbone.modules() if hasattr(m, "drop_prob")]


def linear_layers(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def augmentation(name):
    return lambda started: getattr(started.trainer.augmentation, name)


def config(name):
    return lambda started: getattr(started.trainer.config, name)


# parameter: (a value that is not the default, where the trainer holds it)
DINO = {
    "epochs": (3, config("epochs")),
    "batch_size": (8, config("batch_size")),
    "global_crops": (3, augmentation("global_crops")),
    "local_crops": (3, augmentation("local_crops")),
    "local_crop_size": (12, augmentation("local_crop_size")),
    "global_crop_scale": ((0.6, 0.9), augmentation("global_crop_scale")),
    "local_crop_scale": ((0.2, 0.3), augmentation("local_crop_scale")),
    "horizontal_flip": (0.1, augmentation("horizontal_flip")),
    "vertical_flip": (0.2, augmentation("vertical_flip")),
    "rotation": (7.0, augmentation("rotation")),
    "perspective": (0.3, augmentation("perspective")),
    "perspective_p": ((0.1, 0.2, 0.3), augmentation("perspective_p")),
    "color_jitter": ((0.1, 0.2, 0.3, 0.05), augmentation("color_jitter")),
    "grayscale": (0.3, augmentation("grayscale_p")),
    "blur": ((0.3, 0.2, 0.1), augmentation("blur_p")),
    "solarization": (0.05, augmentation("solarization_p")),
    "out_dim": (
        48,
        lambda s: (s.trainer.loss.out_dim, s.trainer.student.head.last_layer.out_features),
    ),
    "head_hidden_dim": (24, lambda s: linear_layers(s.trainer.student.head.mlp)[0].out_features),
    "head_bottleneck_dim": (12, lambda s: s.trainer.student.head.last_layer.in_features),
    "head_layers": (2, lambda s: len(linear_layers(s.trainer.student.head.mlp))),
    "student_temperature": (0.2, lambda s: s.trainer.loss.student_temperature),
    "center_momentum": (0.8, lambda s: s.trainer.loss.center_momentum),
    "teacher_temperature": (0.06, config("teacher_temperature")),
    "warmup_teacher_temperature": (0.03, config("warmup_teacher_temperature")),
    "warmup_teacher_temperature_epochs": (2, config("warmup_teacher_temperature_epochs")),
    "teacher_momentum": (0.95, config("teacher_momentum")),
    "lr": (1e-3, config("lr")),
    "min_lr": (1e-5, config("min_lr")),
    "warmup_epochs": (2, config("warmup_epochs")),
    "weight_decay": (0.02, config("weight_decay")),
    "weight_decay_end": (0.3, config("weight_decay_end")),
    "clip_grad": (1.5, config("clip_grad")),
    "clip_grad_mode": ("global", config("clip_grad_mode")),
    "freeze_last_layer_epochs": (2, config("freeze_last_layer_epochs")),
    "head_warmup_epochs": (1, config("head_warmup_epochs")),
    "koleo_weight": (0.3, config("koleo_weight")),
    "drop_path_rate": (0.3, lambda s: max(drop_probabilities(s.trainer.student.backbone))),
    "precision": ("bf16", lambda s: s.trainer.autocast_dtype),
    "checkpoint_every": (5, lambda s: s.trainer.checkpoint_every),
    "callbacks": (CALLBACKS, lambda s: s.trainer.callbacks),
}
EXPECTED = {"out_dim": (48, 48), "precision": torch.bfloat16}

SUPERVISED = {
    "epochs": (3, config("epochs")),
    "batch_size": (8, config("batch_size")),
    "lr": (1e-3, config("lr")),
    "min_lr": (1e-5, config("min_lr")),
    "warmup_epochs": (2, config("warmup_epochs")),
    "weight_decay": (0.02, config("weight_decay")),
    "n_iter_no_change": (4, config("patience")),
    # 40 labeled images: a fifth of them validate (stratified), the rest train.
    "validation_fraction": (0.2, lambda s: len(s.arguments[3])),
    "crop_scale": ((0.6, 0.9), augmentation("global_crop_scale")),
    "horizontal_flip": (0.1, augmentation("horizontal_flip")),
    "vertical_flip": (0.2, augmentation("vertical_flip")),
    "rotation": (7.0, augmentation("rotation")),
    "perspective": (0.3, augmentation("perspective")),
    "perspective_p": (0.2, lambda s: s.trainer.augmentation.perspective_p),
    "color_jitter": ((0.1, 0.2, 0.3, 0.05), augmentation("color_jitter")),
    "grayscale": (0.3, augmentation("grayscale_p")),
    "blur": (0.25, augmentation("blur_p")),
    "drop_path_rate": (0.3, lambda s: max(drop_probabilities(s.trainer.model.backbone))),
    "precision": ("bf16", lambda s: s.trainer.autocast_dtype),
    "callbacks": (CALLBACKS, lambda s: s.trainer.callbacks),
}
SUPERVISED_EXPECTED = {
    "validation_fraction": 8,
    "perspective_p": (0.2, 0.2, 0.2),
    "blur": (0.25, 0.25, 0.25),
    "precision": torch.bfloat16,
}

# Parameters whose effect other tests read from the result: which weights and architecture
# (backbone, backbone_kwargs, pretrained, image_size: test_backbones, test_featurizer_parameters),
# the read-out (test_readout), where and how it runs (device, compile, num_workers, in_memory,
# memory: test_compile, test_inputs, test_cache), checkpoint_dir (test_fault_tolerance),
# random_state (test_reproducibility), verbose (test_featurizer) and on_error (test_skipping:
# the fit without the bad files equals the fit on the good ones).
CHECKED_ELSEWHERE = {
    "backbone", "backbone_kwargs", "pretrained", "image_size", "pooling", "n_last_blocks",
    "device", "compile", "num_workers", "in_memory", "memory", "checkpoint_dir",
    "random_state", "verbose", "on_error",
}  # fmt: skip


@pytest.mark.parametrize(
    ("estimator", "table"),
    [(DinoFeaturizer, DINO), (SupervisedClassifier, SUPERVISED)],
    ids=["DinoFeaturizer", "SupervisedClassifier"],
)
def test_every_parameter_is_checked(estimator, table):
    parameters = set(inspect.signature(estimator).parameters)
    assert parameters - CHECKED_ELSEWHERE == set(table)


def reaches_the_trainer(started, estimator, table, expected, params, name, *data):
    """Fit ``estimator`` with ``name`` at its table value; the trainer must hold ``expected``."""
    value, read = table[name]
    assert value != inspect.signature(estimator).parameters[name].default
    result = started(estimator(**{**params, name: value}), *data)
    assert read(result) == expected.get(name, value)


def two_block_vit(tiny_params):
    return {**tiny_params["backbone_kwargs"], "depth": 2}


@pytest.mark.parametrize("name", sorted(DINO))
def test_dino_featurizer_parameter_reaches_the_trainer(name, tiny_params, tiny_images, started):
    params = {**tiny_params, "backbone_kwargs": two_block_vit(tiny_params)}
    reaches_the_trainer(started, DinoFeaturizer, DINO, EXPECTED, params, name, tiny_images)


@pytest.mark.parametrize("name", sorted(SUPERVISED))
def test_supervised_classifier_parameter_reaches_the_trainer(
    name, tiny_params, tiny_images, tiny_labels, started
):
    params = {
        "backbone": tiny_params["backbone"],
        "backbone_kwargs": two_block_vit(tiny_params),
        "image_size": 16,
        "epochs": 1,
        "random_state": 0,
        "verbose": 0,
    }
    reaches_the_trainer(
        started, SupervisedClassifier, SUPERVISED, SUPERVISED_EXPECTED, params, name,
        tiny_images, tiny_labels,
    )  # fmt: skip


def test_schedules_end_where_the_parameters_say():
    names = ("lr", "min_lr", "weight_decay", "weight_decay_end", "teacher_momentum",
             "teacher_temperature", "warmup_teacher_temperature")  # fmt: skip
    config = TrainingConfig(
        epochs=4,
        batch_size=64,
        warmup_epochs=1,
        warmup_teacher_temperature_epochs=2,
        **{name: DINO[name][0] for name in names},
    )
    schedules = dino_schedules(config, global_batch=256, steps_per_epoch=5)
    assert schedules["lr"][5] == pytest.approx(1e-3)  # after one epoch of warm-up; batch 256
    assert schedules["lr"][-1] == pytest.approx(1e-5)
    assert schedules["weight_decay"][0] == pytest.approx(0.02)
    assert schedules["weight_decay"][-1] == pytest.approx(0.3)
    assert schedules["teacher_momentum"][0] == pytest.approx(0.95)
    assert schedules["teacher_momentum"][-1] == pytest.approx(1.0)
    assert schedules["teacher_temperature"][0] == pytest.approx(0.03)
    np.testing.assert_allclose(schedules["teacher_temperature"][10:], 0.06)
    assert np.all(schedules["teacher_temperature"][:10] < 0.06)
