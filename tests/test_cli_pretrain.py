"""`sparsam pretrain` and `sparsam embed`: DINO on a folder or list of images, embeddings."""

import contextlib
import io
import json
import logging
import socket
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch.distributed
from conftest import count_calls
from PIL import Image

from sparsam import DinoFeaturizer, load_backbone
from sparsam.cli import main
from sparsam.cli.images import resolve_images
from sparsam.dino.trainer import DinoTrainer
from sparsam.training import distributed
from sparsam.training.checkpoints import list_checkpoints

# A 2-block, 32-wide ViT on 16 px images (depth 2 so drop-path runs): a 1-epoch fit on 24
# images takes well under a second on two cores.
TINY_BACKBONE = ["--backbone", "vit_tiny_patch16_224", "--backbone-kwargs"]
TINY_BACKBONE += [json.dumps({"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2})]
TINY_OPTIONS = [*TINY_BACKBONE, "--image-size", "16", "--local-crop-size", "8"]
TINY_OPTIONS += ["--local-crops", "2", "--batch-size", "8", "--epochs", "1", "--out-dim", "64"]
TINY_OPTIONS += ["--precision", "fp32", "--quiet"]
N_IMAGES = 24


def write_images(folder: Path, relative_paths: list[str], seed: int = 0) -> list[Path]:
    """16x16 RGB noise PNGs (any suffix PIL knows) at ``folder / path``."""
    rng = np.random.default_rng(seed)
    written = []
    for relative in relative_paths:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="PNG")
        written.append(path)
    return written


def nested_names(n_images: int) -> list[str]:
    folders = ["", "class_a/", "class_a/deeper/", "class_b/"]
    return [f"{folders[index % 4]}image_{index:02d}.png" for index in range(n_images)]


def run(arguments: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``sparsam ARGUMENTS`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        # One epoch on noise is too short to escape a CollapseWarning.
        warnings.simplefilter("ignore")
        code = main(arguments)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """24 PNGs at depths 0 to 2, plus files and folders that must be skipped."""
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, nested_names(N_IMAGES))
    write_images(folder, [".hidden.png", ".thumbnails/image.png"], seed=1)
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def pretrained(image_folder, tmp_path_factory) -> tuple[Path, str]:
    """Output directory and stdout of one `sparsam pretrain` on the image folder."""
    out = tmp_path_factory.mktemp("pretrain") / "model"
    code, stdout, stderr = run(["pretrain", str(image_folder), "--out", str(out), *TINY_OPTIONS])
    assert code == 0, stderr
    return out, stdout


@pytest.fixture(scope="module")
def embedded(pretrained, image_folder, tmp_path_factory) -> Path:
    """FILE.npy written by `sparsam embed` with the saved featurizer, 5 images per chunk."""
    out, _ = pretrained
    embeddings = tmp_path_factory.mktemp("embed") / "features.npy"
    arguments = ["embed", str(image_folder), "--backbone", str(out / "featurizer.joblib")]
    code, _, stderr = run([*arguments, "--out", str(embeddings), "--chunk-size", "5", "--quiet"])
    assert code == 0, stderr
    return embeddings


def test_folder_is_searched_recursively_in_sorted_order_skipping_hidden_and_non_images(
    image_folder,
):
    images = resolve_images(image_folder)
    expected = sorted(image_folder.absolute() / name for name in nested_names(N_IMAGES))
    assert images == expected


def test_folder_suffixes_are_compared_case_insensitively(tmp_path):
    write_images(tmp_path, ["upper.PNG", "scan.Tif", "photo.JPEG"])
    assert [path.name for path in resolve_images(tmp_path)] == [
        "photo.JPEG",
        "scan.Tif",
        "upper.PNG",
    ]


def test_text_list_paths_are_relative_to_the_list_and_comments_are_skipped(tmp_path):
    first, second = write_images(tmp_path / "data", ["a/one.png", "two.png"])
    listing = tmp_path / "data" / "list.txt"
    listing.write_text(f"# training images\n\na/one.png\n  {second}  \n")
    assert resolve_images(listing) == [first, second]


def test_csv_list_reads_the_path_column_relative_to_the_csv(tmp_path):
    first, second = write_images(tmp_path / "data", ["one.png", "sub/two.png"])
    table = tmp_path / "data" / "images.csv"
    table.write_text("label,path\n1,sub/two.png\n0,one.png\n")
    assert resolve_images(table) == [second, first]


def test_csv_list_without_a_path_column_reads_the_first_column(tmp_path):
    (image,) = write_images(tmp_path, ["one.png"])
    table = tmp_path / "images.csv"
    table.write_text("location,label\none.png,3\n")
    assert resolve_images(table) == [image]


def test_dataset_name_loads_through_sparsam_datasets():
    images = resolve_images("demo")
    assert isinstance(images, np.ndarray) and len(images) == 1797


def test_missing_image_in_a_list_names_the_list_line_and_path(tmp_path):
    write_images(tmp_path, ["present.png"])
    listing = tmp_path / "list.txt"
    listing.write_text("present.png\n# comment\nabsent.png\n")
    code, _, stderr = run(["pretrain", str(listing), "--out", str(tmp_path / "out")])
    assert code == 1
    assert stderr.startswith("sparsam pretrain: error:")
    assert f"{listing}, line 3" in stderr and "absent.png" in stderr
    assert "does not exist" in stderr


def test_missing_data_path_is_named_with_what_was_expected(tmp_path):
    missing = tmp_path / "nowhere"
    code, _, stderr = run(["pretrain", str(missing), "--out", str(tmp_path / "out")])
    assert code == 1
    assert str(missing) in stderr and "does not exist" in stderr
    assert "expected a folder of images" in stderr
    assert not (tmp_path / "out").exists()


def test_empty_folder_is_refused_naming_the_folder_and_the_suffixes(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    code, _, stderr = run(["pretrain", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert code == 1
    assert str(tmp_path / "empty") in stderr and "holds no image" in stderr and ".png" in stderr


def test_empty_text_list_is_refused(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# nothing yet\n\n")
    arguments = ["embed", str(listing), "--backbone", "bm", "--out", str(tmp_path / "x.npy")]
    code, _, stderr = run(arguments)
    assert code == 1
    assert str(listing) in stderr and "names no image" in stderr


def test_root_with_a_path_is_refused(image_folder, tmp_path):
    out = tmp_path / "out"
    arguments = ["pretrain", str(image_folder), "--root", str(tmp_path), "--out", str(out)]
    code, _, stderr = run(arguments)
    assert code == 1 and "--root goes with a data set name" in stderr
    assert not out.exists()


def test_backbone_kwargs_must_be_a_json_object(capsys):
    with pytest.raises(SystemExit) as error:
        main(["pretrain", "data", "--out", "x", "--backbone-kwargs", "[4]"])
    assert error.value.code == 2
    assert "--backbone-kwargs" in capsys.readouterr().err


def test_pretrain_writes_a_backbone_that_load_backbone_reads(pretrained):
    out, _ = pretrained
    backbone = load_backbone(out)
    assert backbone.num_features == 32
    assert (out / "README.md").exists()


def test_pretrain_writes_the_fitted_featurizer_with_the_given_options(pretrained):
    out, _ = pretrained
    featurizer = joblib.load(out / "featurizer.joblib")
    assert isinstance(featurizer, DinoFeaturizer)
    assert featurizer.out_dim == 64 and featurizer.backbone_kwargs["depth"] == 2
    assert featurizer.checkpoint_dir == out / "checkpoints"
    assert len(featurizer.history_["loss"]) == 1


def test_pretrain_keeps_featurizer_defaults_for_options_not_given(pretrained):
    out, _ = pretrained
    featurizer = joblib.load(out / "featurizer.joblib")
    defaults = DinoFeaturizer().get_params()
    for name in ("lr", "koleo_weight", "num_workers", "device", "teacher_momentum"):
        assert featurizer.get_params()[name] == defaults[name]


def test_pretrain_prints_where_things_went_and_a_training_summary(pretrained):
    out, stdout = pretrained
    assert str(out / "featurizer.joblib") in stdout and str(out / "checkpoints") in stdout
    assert f"DINO on {N_IMAGES} images" in stdout
    assert "1 epochs" in stdout and "final loss" in stdout and "ln(out_dim) = 4.16" in stdout


def test_pretrain_leaves_checkpoints_in_the_default_checkpoint_dir(pretrained):
    out, _ = pretrained
    assert list_checkpoints(out / "checkpoints")


def test_embed_equals_the_saved_featurizers_transform(pretrained, embedded, image_folder):
    out, _ = pretrained
    featurizer = joblib.load(out / "featurizer.joblib").set_params(verbose=0)
    expected = featurizer.transform(resolve_images(image_folder))
    embeddings = np.load(embedded)
    assert embeddings.dtype == np.float32 and embeddings.shape == (N_IMAGES, 32)
    np.testing.assert_array_equal(embeddings, expected)


def test_embed_with_the_pretrain_directory_equals_its_featurizer(
    pretrained, embedded, image_folder, tmp_path
):
    out, _ = pretrained
    target = tmp_path / "from_directory.npy"
    arguments = ["embed", str(image_folder), "--backbone", str(out), "--out", str(target)]
    code, _, stderr = run([*arguments, "--precision", "fp32", "--quiet"])
    assert code == 0, stderr
    np.testing.assert_allclose(np.load(target), np.load(embedded), rtol=1e-5, atol=1e-6)


def test_embed_reads_out_the_pooling_and_blocks_asked_for(pretrained, image_folder, tmp_path):
    out, _ = pretrained
    target = tmp_path / "read_out.npy"
    arguments = ["embed", str(image_folder), "--backbone", str(out / "featurizer.joblib")]
    options = ["--pooling", "cls+mean", "--n-last-blocks", "2", "--quiet"]
    code, _, stderr = run([*arguments, "--out", str(target), *options])
    assert code == 0, stderr
    featurizer = joblib.load(out / "featurizer.joblib").set_params(
        verbose=0, pooling="cls+mean", n_last_blocks=2
    )
    expected = featurizer.transform(resolve_images(image_folder))
    assert expected.shape == (N_IMAGES, 2 * 2 * 32)
    np.testing.assert_array_equal(np.load(target), expected)


def test_embed_lists_the_inputs_in_row_order_beside_the_embeddings(embedded, image_folder):
    listed = embedded.with_suffix(".txt").read_text().splitlines()
    assert listed == [str(path) for path in resolve_images(image_folder)]


def test_embed_leaves_no_temporary_file(embedded):
    assert sorted(path.name for path in embedded.parent.iterdir()) == [
        "features.npy",
        "features.txt",
    ]


def test_embed_refuses_to_overwrite_existing_files(pretrained, embedded, image_folder):
    out, _ = pretrained
    before = embedded.read_bytes()
    arguments = ["embed", str(image_folder), "--backbone", str(out / "featurizer.joblib")]
    arguments += ["--out", str(embedded), "--quiet"]
    code, _, stderr = run(arguments)
    assert code == 1
    assert str(embedded) in stderr and "--overwrite" in stderr
    assert embedded.read_bytes() == before


def test_embed_overwrites_with_overwrite(pretrained, image_folder, tmp_path):
    out, _ = pretrained
    target = tmp_path / "features.npy"
    target.write_bytes(b"old")
    target.with_suffix(".txt").write_text("old\n")
    listing = tmp_path / "two.txt"
    listing.write_text("\n".join(str(path) for path in resolve_images(image_folder)[:2]))
    arguments = ["embed", str(listing), "--backbone", str(out / "featurizer.joblib")]
    code, _, stderr = run([*arguments, "--out", str(target), "--overwrite", "--quiet"])
    assert code == 0, stderr
    assert np.load(target).shape == (2, 32)
    assert len(target.with_suffix(".txt").read_text().splitlines()) == 2


def test_embed_that_fails_midway_leaves_no_output_and_no_temporary_file(
    pretrained, image_folder, tmp_path
):
    out, _ = pretrained
    broken = tmp_path / "images" / "zz_broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"not a png")
    images = resolve_images(image_folder)[:6]
    listing = tmp_path / "images" / "list.txt"
    listing.write_text("\n".join([*map(str, images), str(broken)]))
    target = tmp_path / "result" / "features.npy"
    arguments = ["embed", str(listing), "--backbone", str(out / "featurizer.joblib")]
    code, _, stderr = run([*arguments, "--out", str(target), "--chunk-size", "4", "--quiet"])
    assert code == 1 and "zz_broken.png" in stderr
    assert list(target.parent.iterdir()) == []


def test_embed_refuses_an_out_file_that_is_not_npy(pretrained, image_folder, tmp_path):
    out, _ = pretrained
    target = tmp_path / "features.csv"
    arguments = ["embed", str(image_folder), "--backbone", str(out), "--out", str(target)]
    code, _, stderr = run(arguments)
    assert code == 1 and "features.csv" in stderr and ".npy" in stderr


def test_resume_without_checkpoints_is_refused(image_folder, tmp_path):
    arguments = ["pretrain", str(image_folder), "--out", str(tmp_path / "out"), "--resume"]
    code, _, stderr = run([*arguments, *TINY_OPTIONS])
    assert code == 1
    assert "--resume" in stderr and str(tmp_path / "out" / "checkpoints") in stderr
    assert not (tmp_path / "out" / "featurizer.joblib").exists()


def test_new_run_into_a_checkpoint_dir_with_checkpoints_is_refused(pretrained, image_folder):
    out, _ = pretrained
    before = (out / "featurizer.joblib").read_bytes()
    code, _, stderr = run(["pretrain", str(image_folder), "--out", str(out), *TINY_OPTIONS])
    assert code == 1
    assert "--resume" in stderr and "--checkpoint-dir" in stderr and str(out) in stderr
    assert (out / "featurizer.joblib").read_bytes() == before


def test_resume_of_a_finished_run_returns_the_same_model(
    pretrained, image_folder, tmp_path, caplog
):
    out, _ = pretrained
    again = tmp_path / "again"
    arguments = ["pretrain", str(image_folder), "--out", str(again), "--resume"]
    arguments += ["--checkpoint-dir", str(out / "checkpoints"), *TINY_OPTIONS]
    caplog.set_level(logging.INFO, logger="sparsam")
    code, stdout, stderr = run(arguments)
    assert code == 0, stderr
    newest = list_checkpoints(out / "checkpoints")[0]
    assert f"resuming from {newest}" in stdout
    # Training from scratch with the same seed would give the same model: check it resumed.
    assert any("Resuming DINO" in record.getMessage() for record in caplog.records)
    first = load_backbone(out).state_dict()
    second = load_backbone(again).state_dict()
    assert all(np.array_equal(first[name], second[name]) for name in first)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(image_folder, tmp_path, caplog):
    options = [*TINY_OPTIONS, "--epochs", "2", "--checkpoint-every", "1"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(["pretrain", str(image_folder), "--out", str(whole), *options])[0] == 0
    # An interrupted run: its checkpoint directory holds only its earliest checkpoint.
    checkpoints = list_checkpoints(whole / "checkpoints")
    assert len(checkpoints) >= 2
    (resumed / "checkpoints").mkdir(parents=True)
    checkpoints[-1].rename(resumed / "checkpoints" / checkpoints[-1].name)
    arguments = ["pretrain", str(image_folder), "--out", str(resumed), "--resume", *options]
    caplog.set_level(logging.INFO, logger="sparsam")
    code, _, stderr = run(arguments)
    assert code == 0, stderr
    resumed_from = [record for record in caplog.records if "Resuming DINO" in record.getMessage()]
    assert len(resumed_from) == 1 and checkpoints[-1].name in resumed_from[0].getMessage()
    first, second = load_backbone(whole).state_dict(), load_backbone(resumed).state_dict()
    assert all(np.array_equal(first[name], second[name]) for name in first)


def test_in_memory_no_trains_from_a_csv_list(image_folder, tmp_path):
    table = tmp_path / "images.csv"
    rows = [str(path.relative_to(image_folder)) for path in resolve_images(image_folder)]
    table.write_text("path\n" + "\n".join(f"{image_folder / row}" for row in rows) + "\n")
    out = tmp_path / "out"
    arguments = ["pretrain", str(table), "--out", str(out), "--in-memory", "no", *TINY_OPTIONS]
    code, _, stderr = run(arguments)
    assert code == 0, stderr
    featurizer = joblib.load(out / "featurizer.joblib")
    assert featurizer.in_memory is False
    assert len(featurizer.history_["loss"]) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_under_torchrun_pretrain_joins_and_leaves_the_process_group(
    image_folder, tmp_path, monkeypatch
):
    torchrun = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    torchrun |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    world_sizes = []
    original_fit = DinoFeaturizer.fit

    def recording_fit(self, X, y=None):
        world_sizes.append(distributed.world_size())
        return original_fit(self, X, y)

    monkeypatch.setattr(DinoFeaturizer, "fit", recording_fit)
    out = tmp_path / "out"
    arguments = ["pretrain", str(image_folder), "--out", str(out), "--device", "cpu"]
    code, stdout, stderr = run([*arguments, *TINY_OPTIONS])
    assert code == 0, stderr
    assert world_sizes == [1]  # fit ran inside a process group of one
    assert not torch.distributed.is_initialized()
    assert (out / "featurizer.joblib").exists()
    assert "1 processes" in stdout


def test_only_rank_0_writes_the_output_and_prints(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    out = tmp_path / "out"
    code, stdout, stderr = run(["pretrain", str(image_folder), "--out", str(out), *TINY_OPTIONS])
    assert code == 0, stderr
    assert stdout == ""
    assert not (out / "featurizer.joblib").exists() and not (out / "config.json").exists()


# `sparsam pretrain` in a child process that sends itself SIGINT (Ctrl-C) right after its first
# checkpoint: the interruption lands at the same place on every machine, and a run of a few
# epochs cannot end before it arrives.
CTRL_C_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from sparsam.cli import main
from sparsam.dino.trainer import DinoTrainer

save = DinoTrainer._save_checkpoint
sent = []

def save_then_interrupt(self, *args, **kwargs):
    path = save(self, *args, **kwargs)
    if path is not None and not sent:
        sent.append(path)
        os.kill(os.getpid(), signal.SIGINT)
    return path

DinoTrainer._save_checkpoint = save_then_interrupt
sys.exit(main(sys.argv[1:]))
"""
CTRL_C_EPOCHS = 4


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(
    image_folder, tmp_path, caplog, monkeypatch
):
    import os
    import subprocess
    import sys

    out = tmp_path / "model"
    options = list(TINY_OPTIONS)
    options[options.index("--epochs") + 1] = str(CTRL_C_EPOCHS)
    arguments = ["pretrain", str(image_folder), "--out", str(out), *options]
    arguments += ["--checkpoint-every", "2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.run(
        [sys.executable, "-c", CTRL_C_AFTER_FIRST_CHECKPOINT, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    stderr = process.stderr
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "saved" in stderr and "--resume" in stderr, stderr
    saved = list_checkpoints(out / "checkpoints")[0]
    state = torch.load(saved, weights_only=True)
    # Interrupted right after the checkpoint of step 2: it stopped there, with nothing to add.
    assert saved.name == "dino_checkpoint_000000002.pt"
    assert not (out / "featurizer.joblib").exists()

    # Resumed, not restarted: the run names the checkpoint and trains only the steps left.
    steps = count_calls(monkeypatch, DinoTrainer, "train_step")
    with caplog.at_level("INFO", logger="sparsam"):
        code, _, stderr = run([*arguments, "--resume"])
    assert code == 0, stderr
    assert (out / "featurizer.joblib").is_file()
    resumed = [r.getMessage() for r in caplog.records if "Resuming DINO" in r.getMessage()]
    assert len(resumed) == 1 and saved.name in resumed[0], resumed
    steps_per_epoch = N_IMAGES // 8
    # The checkpoint's position: "epoch" epochs done, then "step" steps of the next one.
    done = int(state["epoch"]) * steps_per_epoch + int(state["step"])
    assert 0 < done and len(steps) == CTRL_C_EPOCHS * steps_per_epoch - done
