"""Same seed, same embeddings, bit for bit on the CPU: with drop-path, across processes, and
after a run was killed and resumed; checkpoints never resume another run."""

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import count_calls

from sparsam import DinoFeaturizer
from sparsam.dino.trainer import DinoTrainer
from sparsam.training.checkpoints import list_checkpoints

pytestmark = pytest.mark.filterwarnings("ignore::sparsam.dino.CollapseWarning")


@pytest.fixture(params=["deep_vit_params", "small_xcit_params"])
def drop_path_params(request):
    """A depth-3 ViT and a small XCiT, both with drop-path 0.2 and 2 epochs."""
    params = request.getfixturevalue(request.param)
    params["epochs"] = 2
    return params


def test_same_seed_gives_bit_identical_embeddings_with_drop_path(drop_path_params, tiny_images):
    first = DinoFeaturizer(**drop_path_params).fit(tiny_images).transform(tiny_images)
    torch.rand(100)  # the caller's global generator moves between the fits
    second = DinoFeaturizer(**drop_path_params).fit(tiny_images).transform(tiny_images)
    np.testing.assert_array_equal(first, second)


def test_other_seed_gives_other_embeddings(drop_path_params, tiny_images):
    first = DinoFeaturizer(**drop_path_params).fit(tiny_images).transform(tiny_images)
    drop_path_params["random_state"] = 1
    second = DinoFeaturizer(**drop_path_params).fit(tiny_images).transform(tiny_images)
    assert not np.array_equal(first, second)


def test_fit_restores_the_callers_global_generator(deep_vit_params, tiny_images):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DinoFeaturizer(**deep_vit_params).fit(tiny_images)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


# The subprocesses fit the same small XCiT on the conftest's tiny images.
FIT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from sparsam import DinoFeaturizer
    from sparsam.dino import DinoTrainer

    params = {params!r}
    kill_at = {kill_at!r}
    if kill_at is not None:
        save = DinoTrainer._save_checkpoint

        def save_then_die(self, position, *args, **kwargs):
            path = save(self, position, *args, **kwargs)
            if (position.epoch, position.step) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return path

        DinoTrainer._save_checkpoint = save_then_die
    rng = np.random.default_rng(0)
    images = rng.integers(0, 128, size=(40, 12, 12), dtype=np.uint8)
    images[20:] += 128
    embeddings = DinoFeaturizer(**params).fit(images).transform(images)
    np.save(sys.argv[1], embeddings)
    """
)


def run_fit(tmp_path, name, params, kill_at=None):
    """Fit in a fresh interpreter; ``kill_at=(epoch, step)`` SIGKILLs it after that checkpoint."""
    script = tmp_path / f"{name}.py"
    script.write_text(FIT_SCRIPT.format(params=params, kill_at=kill_at))
    output = tmp_path / f"{name}.npy"
    result = subprocess.run(
        [sys.executable, str(script), str(output)], capture_output=True, text=True, timeout=300
    )
    return result, output


def test_a_fresh_process_gives_bit_identical_embeddings(tmp_path, small_xcit_params, tiny_images):
    # A fresh interpreter against this one, whose global generator other tests have used.
    small_xcit_params["epochs"] = 2
    fresh, fresh_output = run_fit(tmp_path, "fresh", small_xcit_params)
    assert fresh.returncode == 0, fresh.stderr
    here = DinoFeaturizer(**small_xcit_params).fit(tiny_images).transform(tiny_images)
    np.testing.assert_array_equal(np.load(fresh_output), here)


def test_run_killed_and_resumed_equals_an_uninterrupted_run(
    tmp_path, recording_steps, small_xcit_params, tiny_images
):
    small_xcit_params["epochs"] = 3
    checkpoint_dir = tmp_path / "checkpoints"
    killed, _ = run_fit(
        tmp_path, "killed", {**small_xcit_params, "checkpoint_dir": str(checkpoint_dir)}, (2, 0)
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    saved = torch.load(list_checkpoints(checkpoint_dir)[0], weights_only=True)
    assert (saved["epoch"], saved["step"]) == (2, 0)

    with recording_steps() as steps:
        resumed = DinoFeaturizer(**small_xcit_params, checkpoint_dir=checkpoint_dir).fit(
            tiny_images
        )
    assert set(steps) == {2}, "the resumed run must train only the epoch the kill cut off"
    uninterrupted = DinoFeaturizer(**small_xcit_params).fit(tiny_images)
    np.testing.assert_array_equal(
        resumed.transform(tiny_images), uninterrupted.transform(tiny_images)
    )
    assert resumed.history_["loss"] == uninterrupted.history_["loss"]


# --- Checkpoints identify their run ----------------------------------------------------------


@pytest.fixture
def finished_checkpoint(tmp_path, deep_vit_params, tiny_images):
    """Parameters of a finished run and its checkpoint directory."""
    params = {**deep_vit_params, "checkpoint_dir": tmp_path / "run"}
    DinoFeaturizer(**params).fit(tiny_images)
    return params


def test_finished_checkpoint_of_the_same_run_is_reused(
    finished_checkpoint, tiny_images, monkeypatch
):
    steps = count_calls(monkeypatch, DinoTrainer, "train_step")
    first = DinoFeaturizer(**finished_checkpoint).fit(tiny_images)
    assert steps == [], "the finished run was trained again instead of read"
    params = {k: v for k, v in finished_checkpoint.items() if k != "checkpoint_dir"}
    fresh = DinoFeaturizer(**params).fit(tiny_images)
    np.testing.assert_array_equal(first.transform(tiny_images), fresh.transform(tiny_images))


def test_checkpoint_of_other_images_is_refused(finished_checkpoint, tiny_images):
    other = tiny_images.copy()
    other[0, 0, 0] ^= 1
    with pytest.raises(ValueError, match="images: other images") as error:
        DinoFeaturizer(**finished_checkpoint).fit(other)
    assert str(finished_checkpoint["checkpoint_dir"]) in str(error.value)


def test_checkpoint_of_another_random_state_is_refused(finished_checkpoint, tiny_images):
    finished_checkpoint["random_state"] = 1
    with pytest.raises(ValueError, match="another random_state"):
        DinoFeaturizer(**finished_checkpoint).fit(tiny_images)


def test_checkpoint_of_other_settings_names_them(finished_checkpoint, tiny_images):
    finished_checkpoint.update(lr=1e-3, drop_path_rate=0.3)
    with pytest.raises(ValueError, match=r"drop_path.*lr: 0\.0005 in the checkpoint, 0\.001 now"):
        DinoFeaturizer(**finished_checkpoint).fit(tiny_images)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"center_momentum": 0.8}, "loss.center_momentum: 0.9 in the checkpoint, 0.8 now"),
        ({"student_temperature": 0.2}, "loss.student_temperature: 0.1 in the checkpoint, 0.2 now"),
        ({"out_dim": 32}, "loss.out_dim: 64 in the checkpoint, 32 now"),
        ({"rotation": 5.0}, "augmentation.rotation: 180.0 in the checkpoint, 5.0 now"),
        ({"precision": "bf16"}, "precision: 'torch.float32' in the checkpoint"),
    ],
    ids=["center_momentum", "student_temperature", "out_dim", "rotation", "precision"],
)
def test_checkpoint_of_other_loss_augmentation_or_precision_names_them(
    finished_checkpoint, tiny_images, change, named
):
    finished_checkpoint.update(change)
    with pytest.raises(ValueError, match=re.escape(named)):
        DinoFeaturizer(**finished_checkpoint).fit(tiny_images)


def test_checkpoint_of_other_starting_weights_is_refused(finished_checkpoint, tiny_images):
    finished_checkpoint["backbone_kwargs"] = {
        **finished_checkpoint["backbone_kwargs"],
        "qkv_bias": False,
    }
    with pytest.raises(ValueError, match="other starting weights"):
        DinoFeaturizer(**finished_checkpoint).fit(tiny_images)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"not a checkpoint" * 10, id="garbage"),
    ],
)
def test_unreadable_checkpoint_names_the_file_and_the_remedy(
    finished_checkpoint, tiny_images, damage
):
    path = list_checkpoints(finished_checkpoint["checkpoint_dir"])[0]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError) as error:
        DinoFeaturizer(**finished_checkpoint).fit(tiny_images)
    message = str(error.value)
    assert str(path) in message
    assert "delete it" in message
    assert "weights_only" not in message


def test_checkpoint_that_is_not_sparsams_is_refused(finished_checkpoint, tiny_images):
    path = list_checkpoints(finished_checkpoint["checkpoint_dir"])[0]
    torch.save({"model": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="lacks epoch"):
        DinoFeaturizer(**finished_checkpoint).fit(tiny_images)


def test_unwritable_checkpoint_dir_fails_before_decoding(tmp_path, monkeypatch, tiny_params):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    def no_decoding(*args, **kwargs):
        raise AssertionError("images were decoded before checkpoint_dir was checked")

    monkeypatch.setattr("sparsam._estimator.training_images", no_decoding)
    with pytest.raises(ValueError, match=r"checkpoint_dir=.*a-file.*not a writable directory"):
        DinoFeaturizer(**tiny_params, checkpoint_dir=blocker / "run").fit(np.zeros((4, 8, 8)))


def test_checkpoint_is_written_with_the_users_umask(tmp_path, tiny_params, tiny_images):
    previous = os.umask(0o022)
    try:
        DinoFeaturizer(**tiny_params, checkpoint_dir=tmp_path / "run").fit(tiny_images)
    finally:
        os.umask(previous)
    (checkpoint,) = list_checkpoints(tmp_path / "run")
    history = tmp_path / "run" / "history.csv"
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o644
    assert stat.S_IMODE(history.stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [checkpoint.name, history.name]


def test_run_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(
    tmp_path, recording_steps, small_xcit_params, tiny_images
):
    # 40 images, batch 16: 2 steps per epoch; the kill comes after step 1 of epoch 2.
    small_xcit_params.update(epochs=3, checkpoint_every=1)
    checkpoint_dir = tmp_path / "checkpoints"
    killed, _ = run_fit(
        tmp_path, "killed", {**small_xcit_params, "checkpoint_dir": str(checkpoint_dir)}, (1, 1)
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list_checkpoints(checkpoint_dir)[0].name == "dino_checkpoint_000000003.pt"

    with recording_steps() as steps:
        resumed = DinoFeaturizer(**small_xcit_params, checkpoint_dir=checkpoint_dir).fit(
            tiny_images
        )
    assert steps == [1, 2, 2], "the second step of epoch 2, then epoch 3"
    uninterrupted = DinoFeaturizer(**small_xcit_params).fit(tiny_images)
    for name, tensor in uninterrupted.backbone_.state_dict().items():
        assert torch.equal(resumed.backbone_.state_dict()[name], tensor), name
    assert resumed.history_["loss"] == uninterrupted.history_["loss"]
