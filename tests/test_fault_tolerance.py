"""Long runs survive faults: step checkpoints, a truncated newest file, Ctrl-C, a NaN loss."""

import os
import signal

import numpy as np
import pytest
import torch

from sparsam import DinoFeaturizer
from sparsam.dino import DinoTrainer
from sparsam.dino.loss import DinoLoss
from sparsam.dino.trainer import CheckpointWarning, list_checkpoints

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
    assert sorted(os.listdir(run_params["checkpoint_dir"])) == sorted(names)


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
