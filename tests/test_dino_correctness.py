"""DINO as the reference does it, on the structures the paper trains: XCiT with BatchNorm,
drop-path, pretrained starts (facebookresearch/dino main_dino.py, DINOv2 ssl_meta_arch.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from sparsam import DinoFeaturizer, save_backbone
from sparsam.backbones import create_backbone, load_backbone
from sparsam.dino import DinoHead, DinoLoss, DinoTrainer, MultiCropAugmentation, TrainingConfig
from sparsam.dino import trainer as trainer_module

OUT_DIM = 32
STEP_VALUES = {
    "lr": 1e-3,
    "weight_decay": 0.04,
    "teacher_momentum": 0.9,
    "teacher_temperature": 0.04,
}


def small_xcit(drop_path_rate: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return create_backbone(
        "xcit_small_12_p8_224",
        image_size=16,
        backbone_kwargs={"embed_dim": 32, "depth": 2, "num_heads": 2},
        drop_path_rate=drop_path_rate,
    )


def trainer_for(backbone: nn.Module, **config) -> DinoTrainer:
    head = DinoHead(backbone.num_features, out_dim=OUT_DIM, hidden_dim=16, bottleneck_dim=8)
    augmentation = MultiCropAugmentation(
        global_crop_size=16, local_crop_size=8, local_crops=2, rotation=0.0
    )
    settings = {"epochs": 1, "batch_size": 8, "warmup_epochs": 0, **config}
    return DinoTrainer(
        backbone,
        head,
        augmentation,
        DinoLoss(OUT_DIM),
        TrainingConfig(**settings),
        torch.device("cpu"),
    )


def images(n: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=generator)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def drop_paths(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if float(getattr(m, "drop_prob", 0.0)) > 0]


# --- 1. The teacher's BatchNorm -------------------------------------------------------------


def test_xcit_teacher_and_student_agree_at_step_zero():
    # Same weights at step 0: a teacher normalising with its initial running statistics (0/1)
    # instead of the batch's gave cosine similarity 0.81 here.
    trainer = trainer_for(small_xcit())
    crops = trainer.augmentation(images(8), torch.Generator().manual_seed(0))[:2]
    with torch.no_grad():
        _, teacher_output = trainer.teacher(crops)
        _, student_output = trainer.student(crops)
    similarity = nn.functional.cosine_similarity(teacher_output, student_output, dim=-1)
    assert similarity.min().item() > 0.9999


@pytest.mark.filterwarnings("ignore::sparsam.dino.CollapseWarning")
def test_xcit_teacher_running_statistics_follow_the_training_images():
    trainer = trainer_for(small_xcit())
    assert batch_norms(trainer.teacher), "the small XCiT must contain BatchNorm"
    before = [bn.running_mean.clone() for bn in batch_norms(trainer.teacher)]
    trainer.fit(images(), torch.Generator().manual_seed(0))
    after = [bn.running_mean for bn in batch_norms(trainer.teacher)]
    assert all(not torch.equal(old, new) for old, new in zip(before, after, strict=True))


def test_transform_uses_batchnorm_statistics_learned_on_the_training_images(
    small_xcit_params, tiny_images
):
    featurizer = DinoFeaturizer(**small_xcit_params).fit(tiny_images)
    norms = batch_norms(featurizer.backbone_)
    assert norms and not any(bn.training for bn in norms)
    assert all(bn.running_mean.abs().max() > 0 for bn in norms)
    assert all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)) for bn in norms)


def test_teacher_runs_without_drop_path_and_student_with_it():
    trainer = trainer_for(small_xcit(drop_path_rate=0.2))
    assert drop_paths(trainer.student.backbone)
    assert all(m.training for m in drop_paths(trainer.student.backbone))
    assert not any(m.training for m in drop_paths(trainer.teacher.backbone))
    assert all(bn.training for bn in batch_norms(trainer.teacher))


# --- 2. Pretrained and saved starts train in train mode --------------------------------------


def record_modes(monkeypatch) -> list[dict[str, bool]]:
    seen: list[dict[str, bool]] = []
    original = DinoTrainer.train_step

    def train_step(self, *args, **kwargs):
        seen.append(
            {
                "student": all(module.training for module in self.student.modules()),
                "teacher_drop_path": any(m.training for m in drop_paths(self.teacher)),
                "teacher_batch_norm": all(bn.training for bn in batch_norms(self.teacher)),
            }
        )
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DinoTrainer, "train_step", train_step)
    return seen


def test_student_from_saved_weights_trains_in_train_mode(
    tmp_path, monkeypatch, small_xcit_params, tiny_images
):
    save_backbone(small_xcit(), tmp_path / "saved")
    assert not load_backbone(tmp_path / "saved").training  # loaded for inference
    seen = record_modes(monkeypatch)
    params = {
        k: v for k, v in small_xcit_params.items() if k not in ("backbone", "backbone_kwargs")
    }
    DinoFeaturizer(**params, pretrained=str(tmp_path / "saved")).fit(tiny_images)
    assert seen
    assert all(step["student"] for step in seen)
    assert not any(step["teacher_drop_path"] for step in seen)
    assert all(step["teacher_batch_norm"] for step in seen)


def test_trainer_puts_an_eval_mode_backbone_into_train_mode():
    trainer = trainer_for(small_xcit(drop_path_rate=0.1).eval())
    assert all(module.training for module in trainer.student.modules())


# --- 3. KoLeo as in DINOv2 ------------------------------------------------------------------


def test_koleo_term_is_summed_over_the_global_crops(monkeypatch):
    # DINOv2: sum(koleo_loss(p) for p in student_cls_tokens.chunk(2)). A stand-in KoLeo of 1
    # per crop makes the reduction visible: 2 for a sum, 1 for a mean.
    def unit_koleo(view):
        return view.sum() * 0 + 1.0

    monkeypatch.setattr(trainer_module, "koleo_loss", unit_koleo)
    trainer = trainer_for(small_xcit(), koleo_weight=0.1)
    stats = trainer.train_step(images(8), torch.Generator().manual_seed(0), 1, STEP_VALUES)
    assert stats["koleo"] == pytest.approx(2.0)


# --- 4. Gradient clipping as in DINO --------------------------------------------------------


def gradient_norms(trainer: DinoTrainer) -> torch.Tensor:
    return torch.stack([p.grad.norm() for p in trainer.student.parameters() if p.grad is not None])


def test_gradients_are_clipped_per_parameter_by_default():
    clip = 1e-3
    trainer = trainer_for(small_xcit(), clip_grad=clip)
    assert trainer.config.clip_grad_mode == "per_parameter"
    trainer.train_step(images(8), torch.Generator().manual_seed(0), 1, STEP_VALUES)
    norms = gradient_norms(trainer)
    assert norms.max().item() <= clip * (1 + 1e-4)
    # Each clipped parameter keeps a norm of clip, so all together exceed it by far.
    assert norms.norm().item() > 3 * clip


def test_per_parameter_clipping_leaves_gradients_below_the_bound_unchanged():
    # DINO's clip scales a gradient down only: a scale of max_norm / norm above 1 would
    # enlarge every small gradient to the bound.
    trainer = trainer_for(small_xcit(), clip_grad=1.0)
    parameters = [p for p in trainer.student.parameters() if p.ndim == 2][:2]
    small = torch.full_like(parameters[0], 1e-4)
    large = torch.ones_like(parameters[1])
    parameters[0].grad, parameters[1].grad = small.clone(), large.clone()
    trainer._clip_gradients(1.0)
    torch.testing.assert_close(parameters[0].grad, small)
    assert parameters[1].grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(parameters[1].grad, large / large.norm(), rtol=1e-5, atol=0)


def test_koleo_term_reaches_the_gradient():
    # KoLeo on by default: the gradients must be those of DINO's loss + weight x KoLeo, not
    # of DINO's loss alone with KoLeo only reported.
    gradients = {}
    for weight in (0.0, 0.5, 1.0):
        trainer = trainer_for(small_xcit(), koleo_weight=weight, clip_grad=None)
        trainer.train_step(images(8), torch.Generator().manual_seed(0), 1, STEP_VALUES)
        gradients[weight] = torch.cat(
            [p.grad.flatten() for p in trainer.student.parameters() if p.grad is not None]
        )
    koleo_gradient = gradients[1.0] - gradients[0.0]
    assert koleo_gradient.norm() > 1e-3 * gradients[0.0].norm()
    # Linear in the weight: half the weight, half the KoLeo part of the gradient.
    torch.testing.assert_close(
        gradients[0.5] - gradients[0.0], 0.5 * koleo_gradient, rtol=1e-3, atol=1e-6
    )


def test_global_clipping_bounds_the_norm_of_all_gradients_together():
    clip = 1e-3
    trainer = trainer_for(small_xcit(), clip_grad=clip, clip_grad_mode="global")
    trainer.train_step(images(8), torch.Generator().manual_seed(0), 1, STEP_VALUES)
    assert gradient_norms(trainer).norm().item() <= clip * (1 + 1e-4)


def test_unknown_clipping_mode_is_refused():
    with pytest.raises(ValueError, match="clip_grad_mode"):
        trainer_for(small_xcit(), clip_grad_mode="layerwise")


# --- 5. Perspective as in the original sparsam recipe ---------------------------------------


def test_default_perspective_is_the_original_sparsam_recipe():
    assert MultiCropAugmentation().perspective == 0.5
    assert MultiCropAugmentation().perspective_p == (0.75, 0.5, 0.5)
    params = DinoFeaturizer().get_params()
    assert (params["perspective"], tuple(params["perspective_p"])) == (0.5, (0.75, 0.5, 0.5))


def test_perspective_probability_applies_per_crop_kind():
    batch = images(8)

    def crops(perspective_p):
        augmentation = MultiCropAugmentation(
            global_crop_size=16,
            local_crop_size=8,
            local_crops=2,
            perspective=0.5,
            perspective_p=perspective_p,
        )
        return augmentation(batch, torch.Generator().manual_seed(0))

    plain = crops((0.0, 0.0, 0.0))
    first_only = crops((1.0, 0.0, 0.0))
    assert not torch.equal(plain[0], first_only[0])
    assert all(torch.equal(a, b) for a, b in zip(plain[1:], first_only[1:], strict=True))
    locals_only = crops((0.0, 0.0, 1.0))
    assert all(torch.equal(a, b) for a, b in zip(plain[:2], locals_only[:2], strict=True))
    assert not torch.equal(plain[2], locals_only[2])


def test_perspective_probabilities_are_validated(tiny_params, tiny_images):
    with pytest.raises(ValueError, match="perspective_p"):
        DinoFeaturizer(**tiny_params, perspective_p=(0.5, 0.5)).fit(tiny_images)
    with pytest.raises(ValueError, match="perspective_p"):
        DinoFeaturizer(**tiny_params, perspective_p=(0.5, 1.5, 0.5)).fit(tiny_images)


# --- 6. KoLeo needs two images ---------------------------------------------------------------


def test_training_on_one_image_with_koleo_is_refused():
    trainer = trainer_for(small_xcit(), koleo_weight=0.1)
    with pytest.raises(ValueError, match="at least 2 images per batch"):
        trainer.fit(images(1), torch.Generator().manual_seed(0))


def test_featurizer_refuses_one_image_with_koleo(tiny_params):
    with pytest.raises(ValueError, match="koleo_weight=0"):
        DinoFeaturizer(**tiny_params).fit(np.zeros((1, 12, 12), dtype=np.uint8))


def test_one_image_trains_without_koleo(tiny_params):
    tiny_params.update(koleo_weight=0.0)
    featurizer = DinoFeaturizer(**tiny_params).fit(np.zeros((1, 12, 12), dtype=np.uint8))
    assert len(featurizer.history_["loss"]) == 1
