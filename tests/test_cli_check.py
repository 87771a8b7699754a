"""`sparsam check` and `--on-error`, run as the real command in a subprocess."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPOSITORY = Path(__file__).resolve().parents[1]
TINY_BACKBONE = ["--backbone", "vit_tiny_patch16_224", "--backbone-kwargs"]
TINY_BACKBONE += [json.dumps({"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2})]
TINY_OPTIONS = [*TINY_BACKBONE, "--image-size", "16", "--local-crop-size", "8"]
TINY_OPTIONS += ["--local-crops", "2", "--batch-size", "8", "--epochs", "1", "--out-dim", "64"]
TINY_OPTIONS += ["--precision", "fp32", "--quiet"]


def sparsam(*arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "sparsam", *map(str, arguments)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def write_pngs(folder: Path, n_images: int, size: int = 16) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(n_images):
        path = folder / f"image_{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def write_truncated_jpeg(path: Path) -> Path:
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Four good PNGs and one of each problem `check` reports."""
    folder = tmp_path_factory.mktemp("archive")
    good = write_pngs(folder, 4)
    (folder / "empty.png").write_bytes(b"")
    write_truncated_jpeg(folder / "truncated.jpg")
    Image.new("L", (4, 20)).save(folder / "tiny.png")
    Image.new("L", (40, 40)).save(folder / "large.png")
    # Sorted after image_01.png: the copy is the duplicate.
    (folder / "image_01_copy.png").write_bytes(good[1].read_bytes())
    return folder


def test_check_names_every_bad_file_writes_the_report_and_exits_1(archive, tmp_path):
    report = tmp_path / "report.csv"
    done = sparsam(
        "check", archive, "--max-pixels", 1000, "--num-workers", 2, "--report", report, "--quiet"
    )

    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    expected = {
        "image_01_copy.png": f"duplicate: the same bytes as '{archive / 'image_01.png'}'",
        "empty.png": "empty: has 0 bytes",
        "large.png": "too large: is 40x40 = 1600 pixels, more than 1000",
        "tiny.png": "tiny: is 4x20 pixels, smaller than 8 on a side",
        "truncated.jpg": "unreadable: could not be decoded (",
    }
    for name, problem in expected.items():
        assert any(line.startswith(f"{archive / name}: {problem}") for line in lines), name
    assert lines[-1] == (
        f"Checked 9 files in {archive}: 5 with a problem (1 unreadable, 1 empty, 1 tiny, "
        "1 too large, 1 duplicate)."
    )
    with open(report, newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(Path(row["path"]).name for row in rows) == sorted(expected)
    assert {row["problem"] for row in rows} == {"unreadable", "empty", "tiny", "too large",
                                                "duplicate"}  # fmt: skip


def test_check_of_a_clean_folder_exits_0(tmp_path):
    write_pngs(tmp_path, 3)

    done = sparsam("check", tmp_path, "--quiet")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Checked 3 files in {tmp_path}: no problem found."


def test_check_refuses_a_bad_option_in_one_line(tmp_path):
    write_pngs(tmp_path, 1)

    done = sparsam("check", tmp_path, "--min-size", 0)

    assert done.returncode == 1
    assert done.stderr.strip() == "sparsam check: error: --min-size 0: expected an integer >= 1."


@pytest.fixture(scope="module")
def streamed_archive(tmp_path_factory) -> tuple[Path, Path]:
    """Twelve PNGs and one truncated JPEG among them."""
    folder = tmp_path_factory.mktemp("streamed")
    write_pngs(folder, 12)
    return folder, write_truncated_jpeg(folder / "image_05b.jpg")


def test_streamed_pretrain_stops_at_a_truncated_jpeg_naming_it(streamed_archive, tmp_path):
    folder, bad = streamed_archive

    done = sparsam("pretrain", folder, "--out", tmp_path / "out", "--in-memory", "no",
                   *TINY_OPTIONS)  # fmt: skip

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"X[6] ('{bad}') could not be decoded (" in done.stderr


@pytest.fixture(scope="module")
def skipping_pretrain(
    streamed_archive, tmp_path_factory
) -> tuple[Path, subprocess.CompletedProcess]:
    """The output folder and process of a streamed pretrain with --on-error skip."""
    folder, _ = streamed_archive
    out = tmp_path_factory.mktemp("skipping") / "out"
    done = sparsam("pretrain", folder, "--out", out, "--in-memory", "no", "--on-error", "skip",
                   *TINY_OPTIONS)  # fmt: skip
    return out, done


def test_streamed_pretrain_with_on_error_skip_trains_without_it_and_lists_it(
    streamed_archive, skipping_pretrain
):
    _, bad = streamed_archive
    out, done = skipping_pretrain

    assert done.returncode == 0, done.stderr
    assert f"Skipped 1 image(s) that could not be decoded; listed in {out / 'skipped.csv'}" in (
        done.stderr
    )
    with open(out / "skipped.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["index"], row["path"]) for row in rows] == [("6", str(bad))]
    assert rows[0]["reason"].startswith("could not be decoded (")
    assert (out / "model.safetensors").is_file()


def test_embed_with_on_error_skip_writes_a_nan_row_and_lists_the_file(
    streamed_archive, skipping_pretrain, tmp_path
):
    folder, bad = streamed_archive
    featurizer = skipping_pretrain[0] / "featurizer.joblib"
    out = tmp_path / "embeddings.npy"

    done = sparsam("embed", folder, "--backbone", featurizer, "--out", out, "--on-error", "skip",
                   "--chunk-size", 5, "--quiet")  # fmt: skip

    assert done.returncode == 0, done.stderr
    embeddings = np.load(out)
    assert np.flatnonzero(np.isnan(embeddings).any(axis=1)).tolist() == [6]
    with open(tmp_path / "skipped.csv", newline="") as file:
        assert [(row["index"], row["path"]) for row in csv.DictReader(file)] == [("6", str(bad))]
