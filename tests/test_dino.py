"""Invariants of the DINO method (sparsam.dino): teacher, head, loss, centering, schedules."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist

from sparsam.backbones import create_backbone
from sparsam.dino import (
    CollapseWarning,
    DinoHead,
    DinoLoss,
    DinoTrainer,
    MultiCropAugmentation,
    MultiCropModel,
    TrainingConfig,
    cosine_schedule,
    warmup_then_constant,
)
from sparsam.dino.loss import koleo_loss
from sparsam.training.optimization import weight_decay_groups
from sparsam.training.precision import resolve_precision

OUT_DIM = 32
SCHEDULE_VALUES = {
    "lr": 1e-3,
    "weight_decay": 0.04,
    "teacher_momentum": 0.9,
    "teacher_temperature": 0.04,
}


def tiny_trainer(**config) -> DinoTrainer:
    torch.manual_seed(0)
    backbone = create_backbone(
        "vit_tiny_patch16_224",
        image_size=16,
        backbone_kwargs={"patch_size": 4, "depth": 1, "embed_dim": 16, "num_heads": 2},
    )
    head = DinoHead(16, out_dim=OUT_DIM, hidden_dim=16, bottleneck_dim=8)
    augmentation = MultiCropAugmentation(
        global_crop_size=16, local_crop_size=8, local_crops=2, rotation=0.0
    )
    return DinoTrainer(
        backbone,
        head,
        augmentation,
        DinoLoss(OUT_DIM),
        TrainingConfig(**{"epochs": 2, "batch_size": 4, "warmup_epochs": 0, **config}),
        torch.device("cpu"),
    )


def tiny_images(n: int = 8) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_teacher_receives_no_gradient_and_changes_only_by_ema():
    trainer = tiny_trainer()
    teacher_before = parameters(trainer.teacher)
    trainer.train_step(tiny_images(), torch.Generator().manual_seed(0), 1, SCHEDULE_VALUES)
    student_after = parameters(trainer.student)
    momentum = SCHEDULE_VALUES["teacher_momentum"]
    for name, parameter in trainer.teacher.named_parameters():
        assert parameter.grad is None
        assert not parameter.requires_grad
        expected = momentum * teacher_before[name] + (1 - momentum) * student_after[name]
        torch.testing.assert_close(parameter.detach(), expected)


def test_last_layer_does_not_move_during_epoch_zero():
    trainer = tiny_trainer()
    last_layer = trainer.student.head.last_layer
    before = parameters(last_layer)
    trainer.train_step(tiny_images(), torch.Generator().manual_seed(0), 0, SCHEDULE_VALUES)
    for name, parameter in last_layer.named_parameters():
        assert torch.equal(parameter.detach(), before[name])


def test_last_layer_moves_after_epoch_zero():
    trainer = tiny_trainer()
    direction = trainer.student.head.last_layer.parametrizations.weight.original1
    before = direction.detach().clone()
    trainer.train_step(tiny_images(), torch.Generator().manual_seed(0), 1, SCHEDULE_VALUES)
    assert not torch.equal(direction.detach(), before)


def test_other_student_parameters_move_during_epoch_zero():
    trainer = tiny_trainer()
    before = parameters(trainer.student.backbone)
    trainer.train_step(tiny_images(), torch.Generator().manual_seed(0), 0, SCHEDULE_VALUES)
    after = parameters(trainer.student.backbone)
    assert any(not torch.equal(after[name], before[name]) for name in before)


def test_head_last_layer_is_weight_normalised_without_deprecation_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head = DinoHead(16, out_dim=OUT_DIM, hidden_dim=16, bottleneck_dim=8)
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(OUT_DIM))


def test_multicrop_model_passes_each_resolution_through_the_backbone_once():
    calls = []
    backbone = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 8)
    )
    backbone.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    model = MultiCropModel(backbone, DinoHead(8, out_dim=OUT_DIM, hidden_dim=8, bottleneck_dim=4))
    crops = [torch.randn(3, 3, 16, 16)] * 2 + [torch.randn(3, 3, 8, 8)] * 4
    embeddings, outputs = model(crops)
    assert calls == [torch.Size([6, 3, 16, 16]), torch.Size([12, 3, 8, 8])]
    assert embeddings.shape == (18, 8) and outputs.shape == (18, OUT_DIM)


def test_loss_excludes_same_view_pairs():
    torch.manual_seed(0)
    loss_fn = DinoLoss(OUT_DIM, student_temperature=0.1)
    teacher = torch.randn(2 * 5, OUT_DIM)
    student = torch.randn(3 * 5, OUT_DIM)
    loss, _ = loss_fn(student, teacher, teacher_temperature=0.04, n_crops=3)
    teacher_probs = torch.softmax(teacher / 0.04, dim=-1).chunk(2)
    student_log_probs = torch.log_softmax(student / 0.1, dim=-1).chunk(3)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    expected = torch.stack(
        [-(teacher_probs[i] * student_log_probs[j]).sum(-1).mean() for i, j in pairs]
    ).mean()
    torch.testing.assert_close(loss, expected)


def test_centering_uses_only_teacher_outputs():
    teacher = torch.randn(2 * 4, OUT_DIM)
    centers = []
    for seed in (0, 1):
        loss_fn = DinoLoss(OUT_DIM, center_momentum=0.9)
        student = torch.randn(4 * 4, OUT_DIM, generator=torch.Generator().manual_seed(seed))
        loss_fn(student, teacher, teacher_temperature=0.04, n_crops=4)
        centers.append(loss_fn.center.clone())
    torch.testing.assert_close(centers[0], centers[1])
    torch.testing.assert_close(centers[0], 0.1 * teacher.mean(0, keepdim=True))


def test_center_update_keeps_a_decayed_share_of_the_old_center():
    loss_fn = DinoLoss(OUT_DIM, center_momentum=0.9)
    old = torch.randn(1, OUT_DIM, generator=torch.Generator().manual_seed(2))
    loss_fn.center.copy_(old)
    teacher = torch.randn(2 * 4, OUT_DIM, generator=torch.Generator().manual_seed(3))
    loss_fn.update_center(teacher)
    torch.testing.assert_close(loss_fn.center, 0.9 * old + 0.1 * teacher.mean(0, keepdim=True))


def test_teacher_softmax_subtracts_the_center_before_the_update():
    loss_fn = DinoLoss(OUT_DIM, student_temperature=0.1)
    center = torch.randn(1, OUT_DIM, generator=torch.Generator().manual_seed(4))
    loss_fn.center.copy_(center)
    teacher = torch.randn(2 * 5, OUT_DIM, generator=torch.Generator().manual_seed(5))
    student = torch.randn(2 * 5, OUT_DIM, generator=torch.Generator().manual_seed(6))
    loss, _ = loss_fn(student, teacher, teacher_temperature=0.04, n_crops=2)
    teacher_probs = torch.softmax((teacher - center) / 0.04, dim=-1).chunk(2)
    student_log_probs = torch.log_softmax(student / 0.1, dim=-1).chunk(2)
    expected = (
        -(teacher_probs[0] * student_log_probs[1]).sum(-1).mean()
        - (teacher_probs[1] * student_log_probs[0]).sum(-1).mean()
    ) / 2
    torch.testing.assert_close(loss, expected)


def test_center_is_not_all_reduced_without_a_process_group(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("all_reduce called without a process group")

    monkeypatch.setattr(dist, "all_reduce", fail)
    DinoLoss(OUT_DIM).update_center(torch.randn(4, OUT_DIM))


def test_center_is_all_reduced_when_a_process_group_is_initialised(tmp_path, monkeypatch):
    reduced = []
    all_reduce = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: reduced.append(t) or all_reduce(t))
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        loss_fn = DinoLoss(OUT_DIM, center_momentum=0.5)
        teacher = torch.randn(4, OUT_DIM)
        loss_fn.update_center(teacher)
    finally:
        dist.destroy_process_group()
    assert len(reduced) == 1
    torch.testing.assert_close(loss_fn.center, 0.5 * teacher.mean(0, keepdim=True))


def test_uniform_teacher_has_entropy_ln_out_dim():
    loss_fn = DinoLoss(OUT_DIM)
    teacher = torch.ones(2 * 4, OUT_DIM)
    _, stats = loss_fn(torch.randn(3 * 4, OUT_DIM), teacher, 0.04, n_crops=3)
    assert stats["teacher_entropy"].item() == pytest.approx(math.log(OUT_DIM), rel=1e-5)


def test_teacher_assigning_every_image_one_prototype_has_zero_mean_entropy():
    loss_fn = DinoLoss(OUT_DIM)
    teacher = torch.zeros(2 * 4, OUT_DIM)
    teacher[:, 3] = 10.0
    _, stats = loss_fn(torch.randn(3 * 4, OUT_DIM), teacher, 0.04, n_crops=3)
    assert stats["teacher_mean_entropy"].item() < 1e-3


def test_kl_is_zero_when_student_matches_teacher():
    loss_fn = DinoLoss(OUT_DIM, student_temperature=0.04)
    view = torch.randn(4, OUT_DIM)
    _, stats = loss_fn(view.repeat(2, 1), view.repeat(2, 1), 0.04, n_crops=2)
    assert abs(stats["kl"].item()) < 1e-4


def test_koleo_loss_is_lower_for_spread_than_for_clustered_embeddings():
    spread = torch.eye(8)
    clustered = torch.ones(8, 8) + 0.01 * torch.randn(
        8, 8, generator=torch.Generator().manual_seed(0)
    )
    assert koleo_loss(spread) < koleo_loss(clustered)


@pytest.mark.parametrize("warmup_steps", [0, 3])
def test_cosine_schedule_hits_start_after_warmup_and_end_at_last_step(warmup_steps):
    values = cosine_schedule(1.0, 0.1, total_steps=10, warmup_steps=warmup_steps, warmup_start=0.0)
    assert len(values) == 10
    assert values[warmup_steps] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.1)
    assert values[0] == pytest.approx(0.0 if warmup_steps else 1.0)


def test_a_warmup_longer_than_the_schedule_is_cut_to_its_length():
    values = cosine_schedule(1.0, 0.1, total_steps=4, warmup_steps=10, warmup_start=0.0)
    np.testing.assert_allclose(values, [0.0, 0.25, 0.5, 0.75])
    ramp = warmup_then_constant(0.02, 0.04, total_steps=3, warmup_steps=6)
    assert len(ramp) == 3 and np.all(ramp < 0.04)


def test_warmup_rises_in_equal_steps_to_start_at_the_first_step_after_it():
    values = cosine_schedule(1.0, 0.1, total_steps=10, warmup_steps=4, warmup_start=0.0)
    np.testing.assert_allclose(values[:5], [0.0, 0.25, 0.5, 0.75, 1.0])


def test_cosine_schedule_decreases_monotonically_after_warmup():
    values = cosine_schedule(1.0, 0.1, total_steps=50, warmup_steps=10)
    assert np.all(np.diff(values[:11]) > 0)
    assert np.all(np.diff(values[10:]) < 0)


def test_teacher_momentum_schedule_rises_monotonically_to_one():
    values = cosine_schedule(0.996, 1.0, total_steps=50)
    assert values[0] == pytest.approx(0.996) and values[-1] == pytest.approx(1.0)
    assert np.all(np.diff(values) > 0)


def test_teacher_temperature_warms_up_linearly_then_stays_constant():
    values = warmup_then_constant(0.02, 0.04, total_steps=10, warmup_steps=4)
    assert values[0] == pytest.approx(0.02)
    assert np.allclose(values[4:], 0.04)
    assert np.all(np.diff(values[:5]) > 0)


def test_each_step_sets_weight_decay_on_weights_only():
    trainer = tiny_trainer()
    trainer.train_step(tiny_images(4), torch.Generator().manual_seed(0), 1, SCHEDULE_VALUES)
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == SCHEDULE_VALUES["weight_decay"]
    assert no_decay["weight_decay"] == 0.0
    assert decay["lr"] == no_decay["lr"] == SCHEDULE_VALUES["lr"]


def test_weight_decay_spares_biases_and_normalisation_layers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    regularized, not_regularized = weight_decay_groups(model)
    assert [tuple(p.shape) for p in regularized["params"]] == [(4, 4)]
    assert len(not_regularized["params"]) == 3
    assert not_regularized["weight_decay"] == 0.0


@pytest.mark.parametrize(
    ("architecture", "backbone_kwargs"),
    [
        ("vit_tiny_patch16_224", {"patch_size": 4, "depth": 2, "embed_dim": 16, "num_heads": 2}),
        ("xcit_small_12_p8_224", {"embed_dim": 16, "depth": 2, "num_heads": 2}),
    ],
)
def test_weight_decay_groups_of_a_dino_model_are_decay_then_no_decay_as_in_dino(
    architecture, backbone_kwargs
):
    backbone = create_backbone(architecture, image_size=16, backbone_kwargs=backbone_kwargs)
    model = MultiCropModel(backbone, DinoHead(16, out_dim=OUT_DIM, hidden_dim=16, bottleneck_dim=8))
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    # DINO's rule (main_dino.py get_params_groups): no decay on biases and 1-d parameters.
    expected_decay = [p for n, p in trainable.items() if not (n.endswith(".bias") or p.ndim == 1)]
    expected_no_decay = [p for n, p in trainable.items() if n.endswith(".bias") or p.ndim == 1]
    decay, no_decay = weight_decay_groups(model)
    assert [id(p) for p in decay["params"]] == [id(p) for p in expected_decay]
    assert [id(p) for p in no_decay["params"]] == [id(p) for p in expected_no_decay]
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    frozen = model.head.last_layer.parametrizations.weight.original0
    assert all(p is not frozen for p in decay["params"] + no_decay["params"])


def test_weight_decay_groups_stay_two_when_nothing_is_exempt():
    decay, no_decay = weight_decay_groups(torch.nn.Linear(4, 4, bias=False))
    assert len(decay["params"]) == 1 and no_decay["params"] == []
    torch.optim.AdamW([decay, no_decay])  # the optimizer accepts the empty group


def test_auto_precision_is_fp32_on_cpu_and_bf16_can_be_forced():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16


def test_fit_records_one_history_row_per_epoch():
    trainer = tiny_trainer(epochs=3)
    history = trainer.fit(tiny_images(), torch.Generator().manual_seed(0))
    assert set(history) >= {"loss", "teacher_entropy", "teacher_mean_entropy", "kl", "lr"}
    assert all(len(values) == 3 for values in history.values())


def test_same_seed_gives_bit_identical_teacher():
    teachers = []
    for _ in range(2):
        trainer = tiny_trainer()
        trainer.fit(tiny_images(), torch.Generator().manual_seed(0))
        teachers.append(parameters(trainer.teacher))
    for name in teachers[0]:
        assert torch.equal(teachers[0][name], teachers[1][name])


def test_collapse_to_uniform_outputs_warns():
    trainer = tiny_trainer()
    trainer.history = {"teacher_entropy": [math.log(OUT_DIM)], "teacher_mean_entropy": [3.0]}
    with pytest.warns(CollapseWarning, match="uniform"):
        trainer._warn_if_collapsed()


def test_collapse_to_one_prototype_warns():
    trainer = tiny_trainer()
    trainer.history = {"teacher_entropy": [0.01], "teacher_mean_entropy": [0.01]}
    with pytest.warns(CollapseWarning, match="one prototype"):
        trainer._warn_if_collapsed()


def test_healthy_training_does_not_warn():
    trainer = tiny_trainer()
    trainer.history = {"teacher_entropy": [1.0], "teacher_mean_entropy": [3.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer._warn_if_collapsed()


def test_koleo_weight_adds_a_koleo_row_to_the_history():
    trainer = tiny_trainer(koleo_weight=0.1, epochs=1)
    history = trainer.fit(tiny_images(), torch.Generator().manual_seed(0))
    assert len(history["koleo"]) == 1


def test_resuming_with_other_augmentation_settings_names_them(tmp_path):
    images, generator = tiny_images(), torch.Generator().manual_seed(0)
    first = tiny_trainer(epochs=1)
    first.checkpoint_dir = tmp_path
    first.fit(images, generator)
    second = tiny_trainer(epochs=1)
    second.checkpoint_dir = tmp_path
    second.augmentation.rotation = 30.0
    with pytest.raises(
        ValueError,
        match=r"dino_checkpoint_\d+\.pt.*augmentation.rotation: 0.0 in the checkpoint, 30.0 now",
    ):
        second.fit(images, torch.Generator().manual_seed(0))


def test_backbone_stays_frozen_while_the_head_warms_up():
    trainer = tiny_trainer(head_warmup_epochs=2)
    backbone_before = parameters(trainer.student.backbone)
    head_before = parameters(trainer.student.head.mlp)
    trainer.train_step(tiny_images(), torch.Generator().manual_seed(0), 1, SCHEDULE_VALUES)
    backbone_after = parameters(trainer.student.backbone)
    assert all(torch.equal(backbone_after[n], backbone_before[n]) for n in backbone_before)
    assert any(
        not torch.equal(p.detach(), head_before[n])
        for n, p in trainer.student.head.mlp.named_parameters()
    )


def test_backbone_trains_after_the_head_warmup():
    trainer = tiny_trainer(head_warmup_epochs=2)
    before = parameters(trainer.student.backbone)
    trainer.train_step(tiny_images(), torch.Generator().manual_seed(0), 2, SCHEDULE_VALUES)
    after = parameters(trainer.student.backbone)
    assert any(not torch.equal(after[name], before[name]) for name in before)
