"""The `sparsam` command line and the README's quickstart run as documented."""

import json
import logging
import re
import runpy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sparsam
from sparsam.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_demo_prints_a_few_shot_table_for_three_methods(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch is too short to escape a CollapseWarning
        assert main(["demo", "--epochs", "1", "--quiet"]) == 0
    output = capsys.readouterr().out
    for row in ("DINO features + SVC", "untrained backbone + SVC", "raw pixels + SVC"):
        assert re.search(rf"^{re.escape(row)}(\s+\d\.\d{{3}} ± \d\.\d{{3}}){{4}}$", output, re.M)
    assert "N=1" in output and "N=25" in output


def test_demo_is_reachable_as_python_dash_m_sparsam(monkeypatch, capsys):
    # What `python -m sparsam demo --help` runs, in this process (no interpreter start-up).
    monkeypatch.setattr(sys, "argv", ["sparsam", "demo", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("sparsam", run_name="__main__")
    assert exit_.value.code == 0
    assert "--epochs" in capsys.readouterr().out


def test_unknown_command_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as error:
        main(["nonsense"])
    assert error.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_version_option_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"sparsam {sparsam.__version__}"


def test_help_describes_the_commands_with_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "The ``sparsam`` command line" not in help_text
    assert "DINO" in help_text and "example:" in help_text and "sparsam pretrain " in help_text
    for command in ("demo", "pretrain", "embed", "evaluate", "convert", "push"):
        assert re.search(rf"^\s+{command}\s+\S", help_text, re.M), command
    assert "--verbose" in help_text and "--version" in help_text


@pytest.fixture
def restore_sparsam_log_level():
    logger = logging.getLogger("sparsam")
    previous = logger.level
    yield
    logger.setLevel(previous)


def pretrain_tiny(folder: Path, options: list[str]) -> int:
    """``sparsam [OPTIONS] pretrain`` for one epoch of a 1-block ViT on 8 noise images."""
    rng = np.random.default_rng(0)
    for index in range(8):
        pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{index}.png")
    backbone = json.dumps({"patch_size": 4, "depth": 1, "embed_dim": 16, "num_heads": 2})
    arguments = [*options, "pretrain", str(folder), "--out", str(folder / "out")]
    arguments += ["--backbone", "vit_tiny_patch16_224", "--backbone-kwargs", backbone]
    arguments += ["--image-size", "16", "--local-crop-size", "8", "--local-crops", "1"]
    arguments += ["--batch-size", "4", "--epochs", "1", "--out-dim", "16", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch on noise looks collapsed
        return main(arguments)


@pytest.mark.parametrize("option", ["-v", "--verbose"])
def test_verbose_logs_one_line_per_dino_epoch(option, tmp_path, caplog, restore_sparsam_log_level):
    assert pretrain_tiny(tmp_path, [option]) == 0
    epochs = [r for r in caplog.records if r.getMessage().startswith("DINO epoch 1/1: loss")]
    assert len(epochs) == 1 and epochs[0].levelno == logging.INFO


def test_without_verbose_the_epoch_lines_stay_hidden(tmp_path, caplog, restore_sparsam_log_level):
    logging.getLogger("sparsam").setLevel(logging.NOTSET)
    (tmp_path / "verbose").mkdir()
    (tmp_path / "quiet").mkdir()
    assert pretrain_tiny(tmp_path / "verbose", ["-v"]) == 0
    assert logging.getLogger("sparsam").level == logging.NOTSET, "-v lasts one command"
    caplog.clear()
    assert pretrain_tiny(tmp_path / "quiet", []) == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("DINO epoch")]
