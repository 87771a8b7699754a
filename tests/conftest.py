"""Shared fixtures: a tiny DinoFeaturizer configuration and tiny images, fast on two CPU cores."""

import contextlib
import copy
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsam import DinoFeaturizer
from sparsam.dino import DinoTrainer

# A 1-block, 32-wide ViT on 16 px images: one epoch on 40 images fits in well under a second.
TINY_PARAMS = {
    "backbone": "vit_tiny_patch16_224",
    "backbone_kwargs": {"patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2},
    "image_size": 16,
    "local_crop_size": 8,
    "local_crops": 2,
    "batch_size": 16,
    "epochs": 1,
    "out_dim": 64,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "warmup_epochs": 0,
    "random_state": 0,
    "verbose": 0,
}
N_IMAGES = 40

# The paper's default architecture, small: XCiT has BatchNorm (patch embedding and local patch
# interaction) and, at depth 2, drop-path, the code paths a 1-block ViT never reaches.
SMALL_XCIT_PARAMS = {
    **TINY_PARAMS,
    "backbone": "xcit_small_12_p8_224",
    "backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2},
    "drop_path_rate": 0.2,
}
# A ViT deep enough for stochastic depth (timm's rates grow linearly from 0 at block 0).
DEEP_VIT_PARAMS = {
    **TINY_PARAMS,
    "backbone_kwargs": {"patch_size": 4, "depth": 3, "embed_dim": 32, "num_heads": 2},
    "drop_path_rate": 0.2,
}


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    # Two intra-op threads on two busy cores made a tiny fit 30x slower (2.6 s against
    # 0.08 s) than one thread: the tensors here are far too small to gain from threads.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def count_calls(monkeypatch, owner, name):
    """Replace ``owner.name`` by a wrapper that records each call, and return the records."""
    calls = []
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


@pytest.fixture
def stderr_is_a_terminal(monkeypatch):
    """Progress bars as on a terminal, though pytest captures stderr into a file."""
    import sparsam._estimator
    import sparsam._progress

    for module in (sparsam._estimator, sparsam._progress):
        monkeypatch.setattr(module, "stderr_is_terminal", lambda: True)


@pytest.fixture
def tiny_params():
    """Keyword arguments of a DinoFeaturizer that trains in a fraction of a second."""
    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def small_xcit_params():
    """Keyword arguments of a DinoFeaturizer with a 2-block, 32-wide XCiT (BatchNorm, drop-path)."""
    return copy.deepcopy(SMALL_XCIT_PARAMS)


@pytest.fixture
def deep_vit_params():
    """Keyword arguments of a DinoFeaturizer with a 3-block ViT and drop-path 0.2."""
    return copy.deepcopy(DEEP_VIT_PARAMS)


@pytest.fixture
def tiny_width():
    """Embedding width of the tiny backbone."""
    return TINY_PARAMS["backbone_kwargs"]["embed_dim"]


@pytest.fixture(scope="session")
def tiny_labels():
    """Two balanced classes for the tiny images."""
    labels = np.repeat([0, 1], N_IMAGES // 2)
    labels.setflags(write=False)
    return labels


@pytest.fixture(scope="session")
def tiny_images(tiny_labels):
    """Read-only grayscale uint8 images (40, 12, 12); class 1 is brighter than class 0."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 128, size=(N_IMAGES, 12, 12), dtype=np.uint8)
    images[tiny_labels == 1] += 128
    images.setflags(write=False)
    return images


@pytest.fixture(scope="module")
def fitted_featurizer(tiny_images):
    """A DinoFeaturizer fitted once per module with the tiny parameters; do not modify it."""
    return DinoFeaturizer(**copy.deepcopy(TINY_PARAMS)).fit(tiny_images)


@contextlib.contextmanager
def _recording_steps():
    epochs = []
    original = DinoTrainer.train_step

    def recording_step(self, images, generator, epoch, values):
        epochs.append(epoch)
        return original(self, images, generator, epoch, values)

    DinoTrainer.train_step = recording_step
    try:
        yield epochs
    finally:
        DinoTrainer.train_step = original


@pytest.fixture
def recording_steps():
    """``with recording_steps() as epochs:`` lists the epoch of every DINO step trained inside."""
    return _recording_steps


def torchrun_two_processes(arguments: list[str]) -> subprocess.CompletedProcess:
    """``arguments`` (a script or ``-m module`` and its arguments) under torchrun, 2 processes.

    A run that hangs (ranks left waiting for each other) is killed with all its processes
    after 2 minutes, and ``subprocess.TimeoutExpired`` fails the test.
    """
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        *arguments,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Runs each README block at most once per session: ``executed(block)`` -> its namespace,
    stdout and warnings (``test_readme.run_block``). Session-wide so that the learning tests
    reuse the Quickstart's DINO training on the digits instead of training their own."""
    from test_readme import run_block

    results = {}

    def execute(block):
        if block.name not in results:
            # Blocks write relative paths (caches, saved models): into a fresh folder.
            previous = Path.cwd()
            os.chdir(tmp_path_factory.mktemp(re.sub(r"[^A-Za-z0-9_-]+", "-", block.name)))
            try:
                results[block.name] = run_block(block)
            finally:
                os.chdir(previous)
        return results[block.name]

    return execute
