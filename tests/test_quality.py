"""RankMe (Garrido et al. 2023), and the trainer's per-epoch measurement of the teacher with it."""

import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_XCIT_PARAMS

import sparsam.dino.trainer
from sparsam import DinoFeaturizer
from sparsam.dino import DinoTrainer
from sparsam.evaluation.quality import rankme
from sparsam.model_selection import rankme as model_selection_rankme

pytestmark = pytest.mark.filterwarnings("ignore::sparsam.dino.CollapseWarning")

# Fewer quality images than the conftest's 40, so that which images are measured matters.
QUALITY_IMAGES = 10


def quality_subset(images, count=QUALITY_IMAGES):
    """The images the trainer measures: evenly spaced indices, no random draw."""
    return images[np.linspace(0, len(images) - 1, count).round().astype(int)]


# --- rankme --------------------------------------------------------------------------------


def test_rankme_of_an_identity_is_its_rank():
    assert rankme(torch.eye(8)) == pytest.approx(8.0, abs=1e-4)


def test_rankme_of_a_rank_one_matrix_is_one():
    rng = np.random.default_rng(0)
    rank_one = np.outer(rng.normal(size=30), rng.normal(size=6))
    assert rankme(rank_one) == pytest.approx(1.0, abs=1e-4)


def test_rankme_is_the_exponential_entropy_of_the_l1_normalised_spectrum():
    # Singular values (2, 1, 1): p = (1/2, 1/4, 1/4), entropy 1.5 ln 2.
    assert rankme(torch.diag(torch.tensor([2.0, 1.0, 1.0]))) == pytest.approx(2**1.5, rel=1e-5)


def test_rankme_does_not_centre_the_embeddings():
    # Centred, these rows would be isotropic noise with an effective rank near 4.
    rng = np.random.default_rng(0)
    offset_noise = 100.0 + rng.normal(size=(200, 4))
    assert rankme(offset_noise) < 1.5


def test_rankme_is_invariant_to_scaling():
    embeddings = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    assert rankme(1000 * embeddings) == pytest.approx(rankme(embeddings), rel=1e-9)


@pytest.mark.parametrize("shape", [(2, 1), (5, 3), (3, 10), (50, 5)])
def test_rankme_lies_between_one_and_the_smaller_side(shape):
    embeddings = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert 1.0 <= rankme(embeddings) <= min(shape)


def test_rankme_accepts_arrays_and_tensors_alike():
    embeddings = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    assert rankme(embeddings) == rankme(torch.from_numpy(embeddings))


def test_rankme_of_non_finite_embeddings_is_nan():
    embeddings = torch.ones(4, 3)
    embeddings[1, 2] = math.inf
    assert math.isnan(rankme(embeddings))


@pytest.mark.parametrize("shape", [(8,), (1, 8), (2, 3, 4)])
def test_rankme_refuses_anything_but_a_matrix_of_two_rows_or_more(shape):
    with pytest.raises(ValueError, match=re.escape(f"got shape {shape}")):
        rankme(torch.ones(shape))


def test_rankme_is_available_from_model_selection():
    assert model_selection_rankme is rankme
    assert "rankme" in sparsam.model_selection.__all__


def test_rankme_is_available_from_dino():
    assert sparsam.dino.rankme is rankme
    assert "rankme" in sparsam.dino.__all__


def test_rankme_module_imports_nothing_from_scikit_learn():
    # The DINO loop measures RankMe, and dino/ imports nothing from scikit-learn (DESIGN.md).
    # The package root imports the estimators, so the child imports below it directly.
    package = Path(sparsam.__file__).parent
    code = (
        "import sys, types\n"
        f"root = types.ModuleType('sparsam'); root.__path__ = [{str(package)!r}]\n"
        "sys.modules['sparsam'] = root\n"
        "import sparsam.evaluation.quality\n"
        "assert sparsam.evaluation.quality.rankme\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'sklearn'))\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "[]"


# --- the trainer's measurement --------------------------------------------------------------


@pytest.fixture(scope="module")
def monitored(tiny_images):
    """A small XCiT (BatchNorm, drop-path) trained 2 epochs, RankMe measured on 10 images."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sparsam.dino.trainer, "QUALITY_IMAGES", QUALITY_IMAGES)
        return DinoFeaturizer(**{**SMALL_XCIT_PARAMS, "epochs": 2}).fit(tiny_images)


def test_rankme_is_recorded_after_every_epoch(monitored):
    values = monitored.history_["rankme"]
    assert len(values) == 2
    assert all(math.isfinite(value) and value > 0 for value in values)
    assert math.isfinite(monitored.initial_rankme_)


def test_last_rankme_measures_what_transform_returns(monitored, tiny_images):
    embeddings = monitored.transform(quality_subset(tiny_images))
    assert monitored.history_["rankme"][-1] == pytest.approx(rankme(embeddings), rel=1e-4)


def test_initial_rankme_measures_the_starting_backbone(monitored, tiny_images):
    with pytest.warns(UserWarning, match="epochs=0"):
        untrained = DinoFeaturizer(**{**SMALL_XCIT_PARAMS, "epochs": 0}).fit(tiny_images)
    embeddings = untrained.transform(quality_subset(tiny_images))
    assert monitored.initial_rankme_ == pytest.approx(rankme(embeddings), rel=1e-4)


def test_without_training_initial_rankme_is_nan_and_history_has_none(tiny_images):
    with pytest.warns(UserWarning, match="epochs=0"):
        untrained = DinoFeaturizer(**{**SMALL_XCIT_PARAMS, "epochs": 0}).fit(tiny_images)
    assert math.isnan(untrained.initial_rankme_)
    assert "rankme" not in untrained.history_


def test_measuring_rankme_does_not_change_training(monitored, tiny_images, monkeypatch):
    # Without the measurement: no forward pass of the teacher outside the training steps.
    monkeypatch.setattr(DinoTrainer, "_teacher_rankme", lambda self: 0.0)
    unmonitored = DinoFeaturizer(**{**SMALL_XCIT_PARAMS, "epochs": 2}).fit(tiny_images)
    expected = unmonitored.backbone_.state_dict()
    measured = monitored.backbone_.state_dict()
    assert measured.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(measured[name], tensor), name
    assert monitored.history_["loss"] == unmonitored.history_["loss"]


def test_a_resumed_run_reports_the_rankme_of_an_uninterrupted_one(
    small_xcit_params, tiny_images, tmp_path, monkeypatch, recording_steps
):
    # 40 images in batches of 16: 2 steps per epoch; Ctrl-C in step 2 stops after epoch 1.
    params = {
        **small_xcit_params,
        "epochs": 2,
        "checkpoint_dir": tmp_path,
        "checkpoint_every": None,
    }
    original = DinoTrainer.train_step
    calls = []

    def interrupted_step(self, images, generator, epoch, values):
        calls.append(epoch)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, images, generator, epoch, values)

    monkeypatch.setattr(DinoTrainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        DinoFeaturizer(**params).fit(tiny_images)
    monkeypatch.setattr(DinoTrainer, "train_step", original)

    with recording_steps() as steps:
        resumed = DinoFeaturizer(**params).fit(tiny_images)
    assert steps == [1, 1], "only epoch 2 is trained after the resumption"
    uninterrupted = DinoFeaturizer(**{**params, "checkpoint_dir": None}).fit(tiny_images)
    assert resumed.history_["rankme"] == uninterrupted.history_["rankme"]
    assert resumed.initial_rankme_ == uninterrupted.initial_rankme_
