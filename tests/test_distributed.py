"""DINO under torchrun: two gloo processes on the CPU, as NCCL runs them on GPUs.

The tests start real processes with ``python -m torch.distributed.run`` (torchrun): the small
XCiT of the conftest (BatchNorm, drop-path 0.2) on the conftest's 40 tiny images, 2 ranks x 8
images per step, 2 epochs of 2 steps each. One launch fits several runs in turn (each process
imports torch once): the uninterrupted run, the run without checkpoints and the run killed
mid-epoch share one; the resumed run needs a second.
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
    from sparsam.training.distributed import init_from_environment, rank

    init_from_environment("cpu")
    record = {}
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
    import sparsam.training.checkpoints as checkpoints_module

    atomic_write = checkpoints_module.atomic_write

    def recording_write(path, *args, **kwargs):
        record["written"].append(os.path.basename(path))
        return atomic_write(path, *args, **kwargs)

    checkpoints_module.atomic_write = recording_write
    save = DinoTrainer._save_checkpoint
    kill_at = None

    def save_then_die(self, position, *args, **kwargs):
        path = save(self, position, *args, **kwargs)
        if rank() == 0 and [position.epoch, position.step] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    DinoTrainer._save_checkpoint = save_then_die
    rng = np.random.default_rng(0)
    images = rng.integers(0, 128, size=(40, 12, 12), dtype=np.uint8)
    images[20:] += 128
    # Every run in turn: {"out": folder, "params": DinoFeaturizer's, "kill_at": [epoch, step]}.
    for run in json.loads(sys.argv[1]):
        out, kill_at = run["out"], run.get("kill_at")
        record.clear()
        record.update(lr=[], batches=[], written=[])
        featurizer = DinoFeaturizer(**run["params"]).fit(images)
        state = {"teacher": featurizer.backbone_.state_dict(), "history": featurizer.history_}
        torch.save(state, os.path.join(out, f"rank{rank()}.pt"))
        with open(os.path.join(out, f"rank{rank()}.json"), "w") as file:
            json.dump(record, file)
        if rank() == 0:
            save_backbone(featurizer.backbone_, os.path.join(out, "backbone"))
    dist.destroy_process_group()
    """
)


def torchrun(tmp_path, runs):
    """Fit ``runs`` ({name: (params, kill_at)}) in turn in one launch of 2 gloo processes.

    Returns the launch's result and each run's output folder, tmp_path/name.
    """
    outs = {name: tmp_path / name for name in runs}
    for out in outs.values():
        out.mkdir()
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    plan = [
        {"out": str(outs[name]), "params": params, "kill_at": kill_at}
        for name, (params, kill_at) in runs.items()
    ]
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        *(str(script), json.dumps(plan)),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    return result, outs


def params_for(small_xcit_params, **changes):
    # A head warm-up epoch: DistributedDataParallel then trains with the backbone's gradients
    # dropped rather than switched off.
    return {**small_xcit_params, "batch_size": 8, "epochs": 2, "head_warmup_epochs": 1, **changes}


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One launch: the uninterrupted run with checkpoints after every step, the same run
    without checkpoints, and the same run killed (SIGKILL, rank 0) after its checkpoint of
    epoch 1, step 1, which ends the launch."""
    from conftest import SMALL_XCIT_PARAMS

    tmp_path = tmp_path_factory.mktemp("distributed")
    params = params_for(SMALL_XCIT_PARAMS, checkpoint_every=1)
    runs = {
        "uninterrupted": ({**params, "checkpoint_dir": str(tmp_path / "checkpoints")}, None),
        "without_checkpoints": ({**params, "checkpoint_dir": None, "checkpoint_every": None}, None),
        "killed": ({**params, "checkpoint_dir": str(tmp_path / "killed_checkpoints")}, [1, 1]),
    }
    result, outs = torchrun(tmp_path, runs)
    for name in ("uninterrupted", "without_checkpoints"):
        assert (outs[name] / "rank1.json").is_file(), result.stderr[-3000:]
    return {"result": result, "outs": outs, "params": {n: p for n, (p, _) in runs.items()}}


@pytest.fixture(scope="module")
def two_rank_run(launch):
    """The uninterrupted run's parameters and output folder."""
    return launch["params"]["uninterrupted"], launch["outs"]["uninterrupted"]


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
    # checkpoint_every=1 over 4 steps; the newest three are kept, no temporary files left;
    # rank 0 also keeps the history of the epochs beside them.
    assert names == [*(f"dino_checkpoint_{step:09d}.pt" for step in (2, 3, 4)), "history.csv"]


def test_checkpoints_do_not_change_the_model(launch):
    # Per-rank BatchNorm statistics (no SyncBatchNorm on the CPU) must not be merged only when
    # a checkpoint is written: the run without checkpoints ends with the same teacher.
    expected, _ = load_rank(launch["outs"]["uninterrupted"], 0)
    for rank in (0, 1):
        state, _ = load_rank(launch["outs"]["without_checkpoints"], rank)
        for name, tensor in state["teacher"].items():
            assert torch.equal(tensor, expected["teacher"][name]), name


def test_two_rank_run_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(launch, tmp_path):
    killed = launch["result"]
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr or str(-signal.SIGKILL) in killed.stderr, killed.stderr[
        -2000:
    ]
    assert not (launch["outs"]["killed"] / "rank0.pt").exists()
    resumed, outs = torchrun(tmp_path, {"resumed": (launch["params"]["killed"], None)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in (0, 1):
        state, record = load_rank(outs["resumed"], rank)
        assert len(record["lr"]) == 1, "only the step after the kill is trained again"
        expected, _ = load_rank(launch["outs"]["uninterrupted"], rank)
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
    names = sorted(path.name for path in (tmp_path / "out" / "checkpoints").iterdir())
    assert names == ["dino_checkpoint_000000003.pt", "history.csv"]
