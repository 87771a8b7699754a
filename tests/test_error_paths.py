"""Every error path ends in one line that names the file and what was expected (issue 22).

The commands run for real, ``python -m sparsam ...`` in a subprocess, on files the tests
write: exit status 1, no traceback, the file named, and never torch's advice to load with
``weights_only=False`` (which would let the file run arbitrary code). The library errors
behind them raise a ValueError or OSError whose message names the path.
"""

from __future__ import annotations

import fractions
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image

from sparsam import DinoFeaturizer, load_backbone, save_backbone
from sparsam._files import check_writable_directory
from sparsam.backbones import BackboneNotFoundError, convert_checkpoint
from sparsam.cli import main
from sparsam.data.cache import CACHE_DIRECTORY
from sparsam.training.checkpoints import read_checkpoint

REPOSITORY = Path(__file__).resolve().parents[1]
TORCH_ADVICE = "weights_only=False"
# A pickle (protocol 2) of an instance of a class that this sparsam does not have: what a
# featurizer.joblib written by a newer sparsam looks like to an older one.
FROM_A_NEWER_SPARSAM = b"\x80\x02csparsam.featurizer\nDinoFeaturizerOfTheFuture\n)\x81}b."


def run_sparsam(arguments: list[str], **environment: str) -> subprocess.CompletedProcess:
    """``python -m sparsam ARGUMENTS`` with this checkout's sparsam first on the path."""
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "sparsam", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **environment},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, path: Path) -> str:
    """Exit status 1, one error line naming ``path``, no traceback; returns that line.

    Lines before it may only be warnings that another package prints at import (timm 1.0.16
    under torch 2.14: a FutureWarning and its source line), as at the lowest versions CI tests.
    """
    stderr = result.stderr
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert TORCH_ADVICE not in stderr, stderr
    *before, line = stderr.strip().splitlines()
    assert all(
        re.search(r":\d+: \w*Warning: ", other) or other[:1].isspace() for other in before
    ), stderr
    assert line.startswith(f"sparsam {command}: error: "), stderr
    assert str(path) in line, stderr
    return line


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello, this is not a checkpoint\n")
    return path


@pytest.fixture
def random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


# sparsam convert


def test_convert_of_a_text_file_says_it_was_not_written_by_torch_save(text_file, tmp_path):
    result = run_sparsam(["convert", str(text_file), str(tmp_path / "out")])
    line = assert_one_line_error(result, "convert", text_file)
    assert "not a file written by torch.save" in line
    assert not (tmp_path / "out").exists()


def test_convert_of_random_bytes_never_advises_weights_only_false(random_bytes, tmp_path):
    result = run_sparsam(["convert", str(random_bytes), str(tmp_path / "out")])
    line = assert_one_line_error(result, "convert", random_bytes)
    assert "paper's DINO checkpoints" in line


def test_convert_of_a_pickled_object_names_it_and_does_not_build_it(tmp_path, capsys):
    path = tmp_path / "object.pt"
    torch.save({"backbone.scale": fractions.Fraction(1, 3)}, path)
    assert main(["convert", str(path), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert str(path) in error and "fractions.Fraction" in error and TORCH_ADVICE not in error


def test_convert_of_a_truncated_checkpoint_says_so(tmp_path):
    path = tmp_path / "truncated.pt"
    torch.save({"backbone.weight": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"truncated\.pt .*truncated or damaged") as error:
        convert_checkpoint(path, tmp_path / "out")
    assert TORCH_ADVICE not in str(error.value)


def test_convert_of_a_tensor_says_a_dict_was_expected(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match=r"tensor.pt holds a Tensor, not a dict of tensors"):
        convert_checkpoint(path, tmp_path / "out")


# sparsam evaluate --featurizer


def _evaluate_featurizer(path: Path) -> subprocess.CompletedProcess:
    arguments = ["evaluate", "--dataset", "demo", "--featurizer", str(path)]
    return run_sparsam([*arguments, "--n-per-class", "1", "--repeats", "1", "--quiet"])


def test_evaluate_featurizer_that_is_a_text_file_is_not_a_joblib_file(text_file):
    line = assert_one_line_error(_evaluate_featurizer(text_file), "evaluate", text_file)
    assert "not a file written by joblib.dump" in line and "fitted DinoFeaturizer" in line


def test_evaluate_featurizer_of_random_bytes_is_not_a_joblib_file(random_bytes):
    line = assert_one_line_error(_evaluate_featurizer(random_bytes), "evaluate", random_bytes)
    assert "not a file written by joblib.dump" in line


def test_evaluate_featurizer_holding_another_object_names_its_type(tmp_path):
    path = tmp_path / "settings.joblib"
    joblib.dump({"epochs": 3}, path)
    line = assert_one_line_error(_evaluate_featurizer(path), "evaluate", path)
    assert "holds a dict; expected a fitted DinoFeaturizer" in line


def test_evaluate_featurizer_never_fitted_says_so(tmp_path):
    path = tmp_path / "unfitted.joblib"
    joblib.dump(DinoFeaturizer(), path)
    line = assert_one_line_error(_evaluate_featurizer(path), "evaluate", path)
    assert "never fitted" in line


def test_featurizer_from_another_sparsam_names_the_missing_class(tmp_path, capsys):
    path = tmp_path / "featurizer.joblib"
    path.write_bytes(FROM_A_NEWER_SPARSAM)
    arguments = ["embed", str(_image_folder(tmp_path)), "--out", str(tmp_path / "x.npy")]
    assert main([*arguments, "--backbone", str(path)]) == 1
    error = capsys.readouterr().err
    assert str(path) in error and "DinoFeaturizerOfTheFuture" in error
    assert "another version of sparsam" in error


# sparsam push


def test_push_without_a_network_names_the_hub_and_the_repository(tmp_path):
    directory = tmp_path / "backbone"
    save_backbone(_tiny_backbone(), directory)
    # Port 9 (discard) on the loopback refuses the connection: a network that is down.
    result = run_sparsam(
        ["push", str(directory), "someone/tiny", "--token", "hf_not_a_real_token"],
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_OFFLINE="0",
        HF_HOME=str(tmp_path / "hf-home"),
    )
    line = assert_one_line_error(result, "push", directory)
    assert "could not reach the Hugging Face Hub (http://127.0.0.1:9" in line
    assert "'someone/tiny'" in line and "HF_ENDPOINT" in line and "token" in line


# memory=


@pytest.fixture(scope="module")
def featurizer(tiny_images):
    params = {
        "backbone": "vit_tiny_patch16_224",
        "backbone_kwargs": {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2},
        "image_size": 16,
        "epochs": 0,
        "verbose": 0,
    }
    return DinoFeaturizer(**params).fit(tiny_images[:2])


def test_memory_whose_store_is_a_file_names_the_file(featurizer, tiny_images, tmp_path):
    (tmp_path / CACHE_DIRECTORY).write_text("mine")
    featurizer = featurizer.set_params(memory=tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / CACHE_DIRECTORY} is a file")):
        featurizer.transform(tiny_images[:2])
    assert (tmp_path / CACHE_DIRECTORY).read_text() == "mine"


def test_memory_with_a_file_inside_the_store_names_that_file(featurizer, tiny_images, tmp_path):
    featurizer = featurizer.set_params(memory=tmp_path)
    featurizer.transform(tiny_images[:1])
    (namespace,) = (tmp_path / CACHE_DIRECTORY).iterdir()
    for entry in namespace.iterdir():
        for file in entry.iterdir():
            file.unlink()
        entry.rmdir()
    namespace.rmdir()
    namespace.write_text("mine")
    with pytest.raises(ValueError, match=re.escape(f"memory: {namespace} is a file")) as error:
        featurizer.transform(tiny_images[:2])
    assert "another memory= directory" in str(error.value)


def test_memory_below_a_file_names_the_file(featurizer, tiny_images, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    featurizer = featurizer.set_params(memory=blocker / "cache")
    with pytest.raises(
        ValueError,
        match=r"memory=.*not a writable directory \(" + re.escape(f"{blocker} is a file"),
    ):
        featurizer.transform(tiny_images[:2])


def test_writable_directory_check_names_the_file_in_the_way(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"--out=.*\(" + re.escape(f"{blocker} is a file)")):
        check_writable_directory(blocker / "a" / "b", "--out")


# Backbones that are files, directories that are not backbones, configs from elsewhere


def _image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * index, dtype=np.uint8)).save(
            folder / f"{index}.png"
        )
    return folder


def _tiny_backbone():
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224",
        num_classes=0,
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
    )


def test_a_file_of_a_backbone_directory_names_the_directory_to_pass(tmp_path, capsys):
    directory = tmp_path / "backbone"
    save_backbone(_tiny_backbone(), directory)
    weights = directory / "model.safetensors"
    with pytest.raises(
        BackboneNotFoundError, match=re.escape(f"pass the directory that holds it, {directory}")
    ):
        load_backbone(str(weights))
    arguments = ["embed", str(_image_folder(tmp_path)), "--out", str(tmp_path / "x.npy")]
    assert main([*arguments, "--backbone", str(weights)]) == 1
    assert f"pass its directory, {directory}" in capsys.readouterr().err


def test_a_pickle_where_a_backbone_directory_belongs_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(1)}, path)
    with pytest.raises(BackboneNotFoundError, match=r"weights\.pt is a pickle file.*safetensors"):
        load_backbone(str(path))


def test_config_with_arguments_this_timm_lacks_names_the_config(tmp_path):
    directory = tmp_path / "backbone"
    save_backbone(_tiny_backbone(), directory)
    config = json.loads((directory / "config.json").read_text())
    config["model_args"]["argument_of_a_newer_timm"] = 1
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: timm .* cannot build") as error:
        load_backbone(directory)
    assert "argument_of_a_newer_timm" in str(error.value)


def test_a_text_file_as_checkpoint_is_named_not_a_key_error(text_file):
    with pytest.raises(
        ValueError, match=re.escape(f"Checkpoint {text_file} cannot be read")
    ) as error:
        read_checkpoint(text_file, torch.device("cpu"), ["teacher"])
    assert "delete it" in str(error.value) and TORCH_ADVICE not in str(error.value)


def test_push_refused_by_the_hub_names_the_repository_and_the_token(tmp_path, monkeypatch):
    from huggingface_hub.utils import HfHubHTTPError

    import sparsam.backbones.push

    class Unauthorized(HfHubHTTPError):
        def __init__(self):
            # Not HfHubHTTPError's own __init__: its arguments differ between versions.
            Exception.__init__(self, "401 Client Error: Unauthorized for url: .../repos/create")

    class RefusingHfApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, *args, **kwargs):
            raise Unauthorized()

    monkeypatch.setattr(sparsam.backbones.push, "HfApi", RefusingHfApi)
    directory = tmp_path / "backbone"
    save_backbone(_tiny_backbone(), directory)
    with pytest.raises(OSError, match="the Hub refused \\(Unauthorized: 401") as error:
        sparsam.backbones.push.push_backbone(directory, "someone/tiny")
    assert str(directory) in str(error.value) and "'someone/tiny'" in str(error.value)
    assert "token" in str(error.value)
