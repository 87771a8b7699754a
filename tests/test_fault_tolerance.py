"""Long runs survive faults: step checkpoints, a truncated newest file, Ctrl-C, a NaN loss."""

import os
import signal

import numpy as np
import pytest
import torch

from sparsam import DinoFeaturizer
from sparsam.dino import DinoTrainer
from sparsam.dino.loss import DinoLoss
from sparsam.training.checkpoints import CheckpointWarning, list_checkpoints, read_checkpoint

# The conftest's 40 images in batches of 16: 2 steps per epoch, 3 epochs = 6 steps.


@pytest.fixture
def run_params(small_xcit_params, tmp_path):
    return {
        **small_xcit_params,
        "epochs": 3,
        "checkpoint_every": 1,
        "checkpoint_dir": tmp_path / "checkpoints",
    }


def same_weights(first, second):
    first, second = first.backbone_.state_dict(), second.backbone_.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_checkpoints_every_n_steps_keep_the_newest_three(run_params, tiny_images):
    DinoFeaturizer(**run_params).fit(tiny_images)
    names = [path.name for path in list_checkpoints(run_params["checkpoint_dir"])]
    assert names == [f"dino_checkpoint_{step:09d}.pt" for step in (6, 5, 4)]
    # Besides them only the history table (no temporary file left behind).
    assert sorted(os.listdir(run_params["checkpoint_dir"])) == sorted([*names, "history.csv"])


def test_checkpoints_only_at_epoch_ends_without_checkpoint_every(run_params, tiny_images):
    run_params["checkpoint_every"] = None
    DinoFeaturizer(**run_params).fit(tiny_images)
    names = [path.name for path in list_checkpoints(run_params["checkpoint_dir"])]
    assert names == [f"dino_checkpoint_{step:09d}.pt" for step in (6, 4, 2)]


def test_files_sparsam_did_not_write_are_left_alone(run_params, tiny_images):
    directory = run_params["checkpoint_dir"]
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    (directory / "dino_checkpoint.pt").write_text("not a step checkpoint")
    DinoFeaturizer(**run_params).fit(tiny_images)
    assert (directory / "notes.txt").read_text() == "mine"
    assert (directory / "dino_checkpoint.pt").read_text() == "not a step checkpoint"


def test_only_files_named_like_checkpoints_are_listed_newest_first(tmp_path):
    for step in (3, 12, 7):
        (tmp_path / f"dino_checkpoint_{step:09d}.pt").write_bytes(b"")
    (tmp_path / "dino_checkpoint_000000020.pt").mkdir()  # a directory, not a checkpoint
    (tmp_path / "dino_checkpoint_5.pt").write_bytes(b"")  # not sparsam's 9-digit name
    (tmp_path / "supervised_checkpoint_000000030.pt").write_bytes(b"")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "dino_checkpoint_000000012.pt",
        "dino_checkpoint_000000007.pt",
        "dino_checkpoint_000000003.pt",
    ]
    assert list_checkpoints(tmp_path / "missing") == []


def test_an_empty_checkpoint_is_named_as_empty(tmp_path):
    path = tmp_path / "dino_checkpoint_000000001.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"dino_checkpoint_000000001.pt is empty .*delete it"):
        read_checkpoint(path, torch.device("cpu"), ["teacher"])


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(
    run_params, tiny_images, recording_steps
):
    finished = DinoFeaturizer(**run_params).fit(tiny_images)
    newest = list_checkpoints(run_params["checkpoint_dir"])[0]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with (
        recording_steps() as steps,
        pytest.warns(CheckpointWarning, match=f"{newest.name}.*previous checkpoint"),
    ):
        resumed = DinoFeaturizer(**run_params).fit(tiny_images)
    assert steps == [2], "only the last step is trained again"
    assert same_weights(resumed, finished)


def test_ctrl_c_finishes_the_step_saves_and_says_how_to_resume(
    run_params, tiny_images, monkeypatch, recording_steps, caplog
):
    original = DinoTrainer.train_step
    calls = []

    def interrupted_step(self, images, generator, epoch, values):
        calls.append(epoch)
        if len(calls) == 3:
            # What Ctrl-C does: SIGINT to this process, in the middle of a step.
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, images, generator, epoch, values)

    monkeypatch.setattr(DinoTrainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt, match=r"To resume, call fit again"):
        DinoFeaturizer(**run_params).fit(tiny_images)
    assert len(calls) == 3, "the interrupted step finishes, no further step starts"
    assert list_checkpoints(run_params["checkpoint_dir"])[0].name == "dino_checkpoint_000000003.pt"
    assert "To resume" in caplog.text

    monkeypatch.setattr(DinoTrainer, "train_step", original)
    with recording_steps() as steps:
        resumed = DinoFeaturizer(**run_params).fit(tiny_images)
    assert steps == [1, 2, 2]
    uninterrupted = DinoFeaturizer(**{**run_params, "checkpoint_dir": None}).fit(tiny_images)
    assert same_weights(resumed, uninterrupted)


def test_ctrl_c_restores_the_previous_signal_handler(run_params, tiny_images):
    before = signal.getsignal(signal.SIGINT)
    DinoFeaturizer(**run_params).fit(tiny_images)
    assert signal.getsignal(signal.SIGINT) is before


def test_non_finite_loss_names_epoch_and_step_and_keeps_the_last_good_checkpoint(
    run_params, tiny_images, monkeypatch
):
    original = DinoLoss.forward
    calls = []

    def failing_loss(self, *args, **kwargs):
        loss, stats = original(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 4 else loss), stats

    monkeypatch.setattr(DinoLoss, "forward", failing_loss)
    with pytest.raises(FloatingPointError, match=r"at epoch 2, step 4.*last checkpoint"):
        DinoFeaturizer(**run_params).fit(tiny_images)
    newest = list_checkpoints(run_params["checkpoint_dir"])[0]
    assert newest.name == "dino_checkpoint_000000003.pt"
    state = torch.load(newest, weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["teacher"].values() if t.is_floating_point())


def test_streamed_and_in_memory_training_give_the_same_weights(run_params, tiny_images):
    run_params.update(checkpoint_dir=None, epochs=2)
    in_memory = DinoFeaturizer(**run_params, in_memory=True).fit(tiny_images)
    streamed = DinoFeaturizer(**run_params, in_memory=False).fit(tiny_images)
    assert same_weights(in_memory, streamed)
    np.testing.assert_array_equal(in_memory.transform(tiny_images), streamed.transform(tiny_images))


def test_a_checkpoint_of_the_in_memory_run_resumes_streamed(
    run_params, tiny_images, recording_steps
):
    DinoFeaturizer(**run_params, in_memory=True).fit(tiny_images)
    with recording_steps() as steps:
        DinoFeaturizer(**run_params, in_memory=False).fit(tiny_images)
    assert steps == []


# --- The loss read on the host every few steps (a GPU never waits for the CPU's reads) -------


def sparse_check_trainer(checkpoint_dir, check_every, device="cpu", architecture="vit"):
    from sparsam.backbones import create_backbone
    from sparsam.dino import DinoHead, MultiCropAugmentation, TrainingConfig

    torch.manual_seed(0)
    name, kwargs = {
        "vit": ("vit_tiny_patch16_224", {"patch_size": 4}),
        "xcit": ("xcit_small_12_p8_224", {}),
    }[architecture]
    backbone = create_backbone(
        name,
        image_size=16,
        backbone_kwargs={**kwargs, "depth": 2, "embed_dim": 32, "num_heads": 2},
        drop_path_rate=0.1,
    )
    return DinoTrainer(
        backbone,
        DinoHead(32, out_dim=32, hidden_dim=16, bottleneck_dim=8),
        MultiCropAugmentation(global_crop_size=16, local_crop_size=8, local_crops=2),
        DinoLoss(32),
        TrainingConfig(epochs=1, batch_size=2, warmup_epochs=0),
        torch.device(device),
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=2,
        check_every=check_every,
    )


def nan_at_step(monkeypatch, step):
    original, calls = DinoLoss.forward, []

    def failing_loss(self, *args, **kwargs):
        loss, stats = original(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == step else loss), stats

    monkeypatch.setattr(DinoLoss, "forward", failing_loss)


def test_with_sparse_checks_a_non_finite_loss_stops_at_the_next_read_and_no_later_checkpoint(
    tmp_path, monkeypatch
):
    trainer = sparse_check_trainer(tmp_path, check_every=4)
    nan_at_step(monkeypatch, 3)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(FloatingPointError, match=r"at epoch 1, step 3: training stopped 1 step"):
        trainer.fit(images, torch.Generator().manual_seed(0))
    # Step 4 was due for a checkpoint, but checkpoints follow a read: the newest is step 2's.
    assert [path.name for path in list_checkpoints(tmp_path)] == ["dino_checkpoint_000000002.pt"]


def test_with_sparse_checks_a_training_step_reads_nothing_on_the_host(tmp_path, monkeypatch):
    trainer = sparse_check_trainer(None, check_every=1000)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    values = {"lr": 1e-3, "weight_decay": 0.04, "teacher_momentum": 0.9}
    values["teacher_temperature"] = 0.04

    generator = torch.Generator().manual_seed(0)
    trainer.train_step(images, generator, 1, values)
    # AdamW's step counts are CPU tensors that torch's optimizer reads (the fused CUDA
    # AdamW keeps them on the GPU): the only reads allowed.
    step_counts = [state["step"] for state in trainer.optimizer.state.values()]
    originals = {}

    def host_read(name):
        def read(self, *args, **kwargs):
            if any(self is count for count in step_counts):
                return originals[name](self, *args, **kwargs)
            raise AssertionError(f"Tensor.{name} was called inside the training step")

        return read

    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        originals[name] = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, host_read(name))
    stats = trainer.train_step(images, generator, 1, values)
    monkeypatch.undo()
    assert set(stats) >= {"loss", "teacher_entropy", "kl"}
    assert all(value.ndim == 0 for value in stats.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("architecture", ["vit", "xcit"])
def test_a_cuda_training_step_never_makes_the_cpu_wait_for_the_gpu(architecture):
    trainer = sparse_check_trainer(None, 1000, device="cuda", architecture=architecture)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, device="cuda")
    values = {"lr": 1e-3, "weight_decay": 0.04, "teacher_momentum": 0.9}
    values["teacher_temperature"] = 0.04
    generator = torch.Generator().manual_seed(0)
    trainer.train_step(images, generator, 1, values)  # allocations, kernel selection
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step(images, generator, 1, values)
    finally:
        torch.cuda.set_sync_debug_mode("default")
