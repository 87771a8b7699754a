"""Training logs and progress: history.csv, TensorBoard, the step-level progress, the CPU estimate,
what a piped stderr gets, and -v after the command."""

import csv
import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import count_calls
from PIL import Image
from test_callbacks import CLASSIFIER, StopAfterFirstEpoch, fit_classifier, fit_dino

import sparsam.training.loop
from sparsam import DinoFeaturizer
from sparsam._progress import TrainingProgress
from sparsam.training.logs import CSVLogger, TensorBoardLogger

# 40 tiny images in batches of 16: 2 DINO steps per epoch.
STEPS_PER_EPOCH = 2
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(autouse=True)
def _no_collapse_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs on noise look collapsed
        yield


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def assert_table_is_history(path: Path, history: dict[str, list[float]]) -> None:
    """``path`` holds ``history``: one row per epoch, ``epoch`` then the history's names."""
    rows = read_table(path)
    assert list(rows[0]) == ["epoch", *history]
    assert [int(row["epoch"]) for row in rows] == list(range(1, len(history["loss"]) + 1))
    for name, values in history.items():
        assert [float(row[name]) for row in rows] == [float(value) for value in values], name


# history.csv


def test_history_csv_beside_the_checkpoints_has_a_row_per_epoch(tiny_params, tiny_images, tmp_path):
    featurizer = fit_dino({**tiny_params, "epochs": 2, "checkpoint_dir": tmp_path}, tiny_images)

    assert_table_is_history(tmp_path / "history.csv", featurizer.history_)
    assert {"loss", "teacher_entropy", "rankme", "lr", "seconds"} <= set(featurizer.history_)


def test_a_resumed_dino_run_lists_every_epoch_of_history_csv_once(
    tiny_params, tiny_images, tmp_path
):
    params = {**tiny_params, "epochs": 3, "checkpoint_dir": tmp_path}
    with pytest.raises(RuntimeError, match="killed"):
        fit_dino(params, tiny_images, [StopAfterFirstEpoch()])
    assert len(read_table(tmp_path / "history.csv")) == 1

    resumed = fit_dino(params, tiny_images)

    assert len(resumed.history_["loss"]) == 3
    assert_table_is_history(tmp_path / "history.csv", resumed.history_)


def test_a_resumed_fine_tuning_run_lists_every_epoch_of_history_csv_once(
    tiny_images, tiny_labels, tmp_path
):
    params = {**CLASSIFIER, "checkpoint_dir": tmp_path}
    with pytest.raises(RuntimeError, match="killed"):
        fit_classifier(params, tiny_images, tiny_labels, [StopAfterFirstEpoch()])

    resumed = fit_classifier(params, tiny_images, tiny_labels)

    assert "validation_balanced_accuracy" in resumed.history_
    assert_table_is_history(tmp_path / "history.csv", resumed.history_)


def test_a_history_csv_sparsam_did_not_write_is_refused_before_training(
    tiny_params, tiny_images, tmp_path
):
    theirs = tmp_path / "history.csv"
    theirs.write_text("name,value\nmine,1\n")

    with pytest.raises(ValueError, match=r"history\.csv.*not a history table sparsam wrote"):
        fit_dino({**tiny_params, "checkpoint_dir": tmp_path}, tiny_images)
    with pytest.raises(ValueError, match="CSVLogger"):
        CSVLogger(theirs)
    assert theirs.read_text() == "name,value\nmine,1\n"


def test_csv_logger_writes_the_history_anywhere_without_checkpoints(
    tiny_params, tiny_images, tmp_path
):
    path = tmp_path / "logs" / "run.csv"

    featurizer = fit_dino({**tiny_params, "epochs": 2}, tiny_images, [CSVLogger(path)])

    assert_table_is_history(path, featurizer.history_)


# TensorBoard


def test_tensorboard_logger_writes_every_history_value_as_a_scalar_per_epoch(
    tiny_params, tiny_images, tmp_path
):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    featurizer = fit_dino({**tiny_params, "epochs": 2}, tiny_images, [logger])

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(featurizer.history_)
    for name, values in featurizer.history_.items():
        scalars = events.Scalars(name)
        assert [scalar.step for scalar in scalars] == [1, 2]
        np.testing.assert_allclose([s.value for s in scalars], values, rtol=1e-6)
    # The writer is closed and dropped: the estimator with its callback still clones.
    from sklearn.base import clone

    clone(featurizer)


def test_tensorboard_logger_names_the_extra_when_tensorboard_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)

    with pytest.raises(ImportError, match=r"sparsam\[tensorboard\]"):
        TensorBoardLogger("runs")


# Step-level progress and the CPU estimate


def test_the_progress_hears_of_every_step_once(tiny_params, tiny_images, monkeypatch):
    starts = count_calls(monkeypatch, TrainingProgress, "start")
    steps = count_calls(monkeypatch, TrainingProgress, "step")

    fit_dino({**tiny_params, "epochs": 3}, tiny_images)

    assert [args[1:] for args in starts] == [(0, 3 * STEPS_PER_EPOCH)]
    assert len(steps) == 3 * STEPS_PER_EPOCH


def test_a_resumed_run_starts_the_progress_at_the_steps_done(
    tiny_params, tiny_images, tmp_path, monkeypatch
):
    params = {**tiny_params, "epochs": 3, "checkpoint_dir": tmp_path}
    with pytest.raises(RuntimeError, match="killed"):
        fit_dino(params, tiny_images, [StopAfterFirstEpoch()])
    starts = count_calls(monkeypatch, TrainingProgress, "start")
    steps = count_calls(monkeypatch, TrainingProgress, "step")

    fit_dino(params, tiny_images)

    assert [args[1:] for args in starts] == [(STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH)]
    assert len(steps) == 2 * STEPS_PER_EPOCH


def test_fine_tuning_prints_a_line_per_epoch_where_stderr_is_no_terminal(
    tiny_images, tiny_labels, capsys
):
    fit_classifier({**CLASSIFIER, "verbose": 1}, tiny_images, tiny_labels)

    stderr = capsys.readouterr().err
    assert "\r" not in stderr and "|" not in stderr
    lines = stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"fine-tuning epoch {epoch}/3" for epoch in (1, 2, 3)
    ]
    assert lines[-1].endswith("00:00 left")


@pytest.fixture
def fast_clock(monkeypatch):
    """One timed step after the first is enough to estimate the run."""
    monkeypatch.setattr(sparsam.training.loop, "TIMED_STEPS", 1)


def test_a_long_cpu_run_warns_once_and_names_the_small_data_recipe(
    tiny_params, tiny_images, caplog, monkeypatch, fast_clock
):
    monkeypatch.setattr(sparsam.training.loop, "LONG_CPU_RUN_SECONDS", 0.0)

    with caplog.at_level(logging.INFO, logger="sparsam"):
        fit_dino({**tiny_params, "epochs": 2, "device": "cpu"}, tiny_images)

    estimates = [r for r in caplog.records if "on the CPU: about" in r.getMessage()]
    assert len(estimates) == 1 and estimates[0].levelno == logging.WARNING
    message = estimates[0].getMessage()
    assert "small_data_recipe" in message and "--recipe small" in message
    assert f"for the {2 * STEPS_PER_EPOCH} steps left" in message


def test_a_short_cpu_run_only_logs_its_estimate(tiny_params, tiny_images, caplog, fast_clock):
    with caplog.at_level(logging.INFO, logger="sparsam"):
        fit_dino({**tiny_params, "epochs": 2, "device": "cpu"}, tiny_images)

    estimates = [r for r in caplog.records if "on the CPU: about" in r.getMessage()]
    assert len(estimates) == 1 and estimates[0].levelno == logging.INFO
    assert "small_data_recipe" not in estimates[0].getMessage()


# The command: history.csv in --out, TensorBoard, a piped stderr, -v after the command

PIPED_EPOCHS = 2


@pytest.fixture(scope="module")
def piped_pretrain(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``sparsam pretrain ... -v`` (with --tensorboard where installed), stderr piped."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(16):
        pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{index}.png")
    out = folder / "out"
    backbone = json.dumps({"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2})
    arguments = ["pretrain", str(folder), "--out", str(out), "--backbone", "vit_tiny_patch16_224"]
    arguments += ["--backbone-kwargs", backbone, "--image-size", "16", "--local-crop-size", "8"]
    arguments += ["--local-crops", "1", "--batch-size", "8", "--epochs", str(PIPED_EPOCHS)]
    arguments += ["--out-dim", "16", "--precision", "fp32", "--device", "cpu", "-v"]
    if HAS_TENSORBOARD:
        arguments += ["--tensorboard"]
    process = subprocess.run(
        [sys.executable, "-m", "sparsam", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    return out, process


def test_pretrain_writes_history_csv_to_out(piped_pretrain):
    out, process = piped_pretrain

    featurizer = _load_featurizer(out)
    assert_table_is_history(out / "history.csv", featurizer.history_)
    assert str(out / "history.csv") in process.stdout
    # The loggers are this run's, not part of the saved recipe.
    assert featurizer.callbacks is None


def test_pretrain_tensorboard_writes_the_scalars_to_out(piped_pretrain):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = piped_pretrain
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [scalar.step for scalar in events.Scalars("loss")] == [1, 2]


def test_a_piped_stderr_gets_one_progress_line_per_epoch_and_no_bar(piped_pretrain):
    _, process = piped_pretrain

    assert "\r" not in process.stderr
    lines = [line for line in process.stderr.splitlines() if line.startswith("DINO epoch")]
    assert len(lines) == PIPED_EPOCHS, process.stderr
    assert lines[0].startswith(f"DINO epoch 1/{PIPED_EPOCHS}: loss ")
    assert "steps/s" in lines[0] and "left" in lines[0]


def test_verbose_is_accepted_after_the_command(piped_pretrain):
    _, process = piped_pretrain

    logged = [line for line in process.stderr.splitlines() if "INFO sparsam: DINO epoch" in line]
    assert len(logged) == PIPED_EPOCHS, process.stderr


def test_pretrain_tensorboard_without_tensorboard_fails_in_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16)).save(images / "one.png")
    hide = "import sys; sys.modules['tensorboard'] = None; from sparsam.cli import main; "
    command = [sys.executable, "-c", hide + "sys.exit(main(sys.argv[1:]))"]
    process = subprocess.run(
        [*command, "pretrain", str(images), "--out", str(tmp_path / "out"), "--tensorboard"],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert process.returncode == 1
    assert process.stderr.strip().splitlines() == [
        "sparsam pretrain: error: --tensorboard: TensorBoard logging needs the tensorboard "
        "package, which is not installed: pip install 'sparsam[tensorboard]' (or pip install "
        "tensorboard)."
    ]


def _load_featurizer(out: Path) -> DinoFeaturizer:
    import joblib

    return joblib.load(out / "featurizer.joblib")
