"""DINO under torchrun: two gloo processes on the CPU, as NCCL runs them on GPUs.

Each test starts real processes with ``python -m torch.distributed.run`` (torchrun): the small
XCiT of the conftest (BatchNorm, drop-path 0.2) on the conftest's 40 tiny images, 2 ranks x 8
images per step, 2 epochs of 2 steps each.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from sparsam import DinoFeaturizer, load_backbone
from sparsam.dino import DinoTrainer

# Every rank fits the featurizer; rank 0 saves the backbone. Each rank records its teacher, the
# learning rate of every step and the image indices of every batch it trained on.
RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    from sparsam import DinoFeaturizer, save_backbone
    from sparsam.data.training import TrainingImages
    from sparsam.dino import DinoTrainer
    from sparsam.dino.distributed import init_from_environment, rank

    init_from_environment("cpu")
    out, params, kill_at = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    record = {"lr": [], "batches": []}
    train_step = DinoTrainer.train_step

    def recording_step(self, images, generator, epoch, values):
        record["lr"].append(values["lr"])
        return train_step(self, images, generator, epoch, values)

    DinoTrainer.train_step = recording_step
    batches = TrainingImages.batches

    def recording_batches(self, indices):
        # The first call fetches the fixed RankMe images (no training); the rest are training.
        if "quality" not in record:
            record["quality"] = [index.tolist() for index in indices]
        else:
            record["batches"].extend(index.tolist() for index in indices)
        return batches(self, indices)

    TrainingImages.batches = recording_batches
    import sparsam.dino.trainer as trainer_module

    atomic_write = trainer_module.atomic_write
    record["written"] = []

    def recording_write(path, *args, **kwargs):
        record["written"].append(os.path.basename(path))
        return atomic_write(path, *args, **kwargs)

    trainer_module.atomic_write = recording_write
    if kill_at is not None:
        save = DinoTrainer._save_checkpoint

        def save_then_die(self, position, *args, **kwargs):
            path = save(self, position, *args, **kwargs)
            if rank() == 0 and [position.epoch, position.step] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return path

        DinoTrainer._save_checkpoint = save_then_die
    rng = np.random.default_rng(0)
    images = rng.integers(0, 128, size=(40, 12, 12), dtype=np.uint8)
    images[20:] += 128
    featurizer = DinoFeaturizer(**params).fit(images)
    state = {"teacher": featurizer.backbone_.state_dict(), "history": featurizer.history_}
    torch.save(state, os.path.join(out, f"rank{rank()}.pt"))
    with open(os.path.join(out, f"rank{rank()}.json"), "w") as file:
        json.dump(record, file)
    if rank() == 0:
        save_backbone(featurizer.backbone_, os.path.join(out, "backbone"))
    dist.destroy_process_group()
    """
)


def torchrun(tmp_path, name, params, kill_at=None):
    """Run RANK_SCRIPT in 2 gloo processes; their outputs go to tmp_path/name."""
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(out),
        json.dumps(params),
        json.dumps(kill_at),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    return result, out


def params_for(small_xcit_params, **changes):
    # A head warm-up epoch: DistributedDataParallel then trains with the backbone's gradients
    # dropped rather than switched off.
    return {**small_xcit_params, "batch_size": 8, "epochs": 2, "head_warmup_epochs": 1, **changes}


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """An uninterrupted 2-rank run with checkpoints after every step."""
    from conftest import SMALL_XCIT_PARAMS

    tmp_path = tmp_path_factory.mktemp("distributed")
    params = params_for(SMALL_XCIT_PARAMS, checkpoint_every=1)
    params["checkpoint_dir"] = str(tmp_path / "checkpoints")
    result, out = torchrun(tmp_path, "uninterrupted", params)
    assert result.returncode == 0, result.stderr[-3000:]
    return params, out


def load_rank(out, rank):
    state = torch.load(out / f"rank{rank}.pt", weights_only=True)
    record = json.loads((out / f"rank{rank}.json").read_text())
    return state, record


def test_every_rank_ends_with_the_same_teacher(two_rank_run):
    _, out = two_rank_run
    first, _ = load_rank(out, 0)
    second, _ = load_rank(out, 1)
    assert first["teacher"].keys() == second["teacher"].keys()
    assert any("running_mean" in name for name in first["teacher"]), "XCiT has BatchNorm"
    for name, tensor in first["teacher"].items():
        assert torch.equal(tensor, second["teacher"][name]), name
    first["history"].pop("seconds")
    second["history"].pop("seconds")
    assert first["history"] == second["history"]


def test_each_image_is_seen_once_per_epoch_across_ranks(two_rank_run):
    _, out = two_rank_run
    batches = [load_rank(out, rank)[1]["batches"] for rank in (0, 1)]
    assert [len(b) for b in batches] == [4, 4], "2 epochs x 2 steps on every rank"
    for epoch in range(2):
        steps = [
            batch for rank_batches in batches for batch in rank_batches[2 * epoch : 2 * epoch + 2]
        ]
        seen = [index for batch in steps for index in batch]
        assert all(len(batch) == 8 for batch in steps)
        assert len(set(seen)) == len(seen) == 32, "40 images, global batch 16, 2 steps"


def test_two_ranks_of_8_use_the_schedule_of_one_rank_of_16(
    two_rank_run, small_xcit_params, tiny_images, monkeypatch
):
    _, out = two_rank_run
    two_ranks = load_rank(out, 0)[1]["lr"]
    one_rank = []
    train_step = DinoTrainer.train_step

    def recording_step(self, images, generator, epoch, values):
        one_rank.append(values["lr"])
        return train_step(self, images, generator, epoch, values)

    monkeypatch.setattr(DinoTrainer, "train_step", recording_step)
    DinoFeaturizer(**params_for(small_xcit_params, batch_size=16)).fit(tiny_images)
    assert len(two_ranks) == len(one_rank) == 4
    assert two_ranks == one_rank


def test_rank_0_output_loads_with_load_backbone(two_rank_run):
    _, out = two_rank_run
    teacher, _ = load_rank(out, 0)
    loaded = load_backbone(out / "backbone")
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, teacher["teacher"][name]), name


def test_only_rank_0_writes_checkpoints(two_rank_run):
    params, out = two_rank_run
    assert load_rank(out, 0)[1]["written"] == [f"dino_checkpoint_{s:09d}.pt" for s in (1, 2, 3, 4)]
    assert load_rank(out, 1)[1]["written"] == []
    names = sorted(path.name for path in os.scandir(params["checkpoint_dir"]))
    # checkpoint_every=1 over 4 steps; the newest three are kept, no temporary files left.
    assert names == [f"dino_checkpoint_{step:09d}.pt" for step in (2, 3, 4)]


def test_checkpoints_do_not_change_the_model(two_rank_run, tmp_path):
    # Per-rank BatchNorm statistics (no SyncBatchNorm on the CPU) must not be merged only when
    # a checkpoint is written: the run without checkpoints ends with the same teacher.
    params, with_checkpoints = two_rank_run
    params = {**params, "checkpoint_dir": None, "checkpoint_every": None}
    result, out = torchrun(tmp_path, "without_checkpoints", params)
    assert result.returncode == 0, result.stderr[-3000:]
    expected, _ = load_rank(with_checkpoints, 0)
    for rank in (0, 1):
        state, _ = load_rank(out, rank)
        for name, tensor in state["teacher"].items():
            assert torch.equal(tensor, expected["teacher"][name]), name


def test_two_rank_run_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(
    two_rank_run, tmp_path
):
    params, uninterrupted = two_rank_run
    params = {**params, "checkpoint_dir": str(tmp_path / "checkpoints")}
    killed, _ = torchrun(tmp_path, "killed", params, kill_at=[1, 1])
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr or str(-signal.SIGKILL) in killed.stderr, killed.stderr[
        -2000:
    ]
    resumed, out = torchrun(tmp_path, "resumed", params)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in (0, 1):
        state, record = load_rank(out, rank)
        assert len(record["lr"]) == 1, "only the step after the kill is trained again"
        expected, _ = load_rank(uninterrupted, rank)
        for name, tensor in state["teacher"].items():
            assert torch.equal(tensor, expected["teacher"][name]), name
        np.testing.assert_array_equal(state["history"]["loss"], expected["history"]["loss"])


def test_sparsam_pretrain_under_torchrun_writes_a_loadable_backbone(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(24):
        folder = tmp_path / "images" / f"part{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    kwargs = {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2, "drop_path_rate": 0.1}
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        *("-m", "sparsam", "pretrain", str(tmp_path / "images"), "--out", str(tmp_path / "out")),
        *("--backbone", "vit_tiny_patch16_224", "--backbone-kwargs", json.dumps(kwargs)),
        *("--image-size", "16", "--local-crop-size", "8", "--local-crops", "2"),
        *("--batch-size", "4", "--epochs", "1", "--out-dim", "64", "--device", "cpu", "--quiet"),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    backbone = load_backbone(tmp_path / "out")
    assert backbone.num_features == 32
    assert (tmp_path / "out" / "featurizer.joblib").is_file()
    # 24 images, 2 ranks x 4: 3 steps, one epoch-end checkpoint.
    names = [path.name for path in (tmp_path / "out" / "checkpoints").iterdir()]
    assert names == ["dino_checkpoint_000000003.pt"]
