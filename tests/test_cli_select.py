"""`sparsam select`: the images to label first, as a labels CSV to fill in and a contact sheet.

Two rounds run the real command in a subprocess (``python -m sparsam``); the refusals call
``sparsam.cli.main`` in this process, where they stop before anything is embedded.
"""

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from test_cli_classify import run_here, write_labels
from test_cli_settings import sparsam

from sparsam import DinoFeaturizer, save_backbone, select_images_to_label
from sparsam.data.cache import CACHE_DIRECTORY
from sparsam.data.labels import read_labels
from sparsam.labeling.contact_sheet import is_contact_sheet

N_IMAGES = 48
N = 8
# A 2-block, 32-wide ViT at 16 px: embeds the 48 digits in a fraction of a second.
TINY_BACKBONE = {
    "backbone": "vit_tiny_patch16_224",
    "backbone_kwargs": {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2},
    "image_size": 16,
    "epochs": 0,
    "pretrained": None,
    "verbose": 0,
    "random_state": 0,
}


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def cache_entries(folder: Path) -> dict[Path, int]:
    """Every embedding file below ``folder``'s cache, with its modification time."""
    return {path: path.stat().st_mtime_ns for path in folder.rglob(f"{CACHE_DIRECTORY}/**/*.npy")}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """``images/``: 48 digits as 32 px grey PNGs; ``backbone/``: a tiny ViT by save_backbone."""
    folder = tmp_path_factory.mktemp("select")
    digits = load_digits()
    (folder / "images").mkdir()
    for index in range(N_IMAGES):
        pixels = (digits.images[index] * 255 / 16).astype(np.uint8)
        image = Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST)
        image.save(folder / "images" / f"digit_{index:02d}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights are the point here
        featurizer = DinoFeaturizer(**TINY_BACKBONE).fit(np.zeros((1, 16, 16), np.uint8))
    save_backbone(featurizer, folder / "backbone")
    return folder


def images_of(project: Path) -> list[Path]:
    return sorted((project / "images").glob("*.png"))


@pytest.fixture(scope="module")
def first_round(project):
    """``sparsam select images --n 8 --out rounds/round1.csv`` and what it printed."""
    result = sparsam(
        *("select", "images", "--backbone", "backbone", "--n", str(N)),
        *("--out", "rounds/round1.csv", "--quiet"),
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def second_round(project, first_round):
    """Round 1 labeled, then ``sparsam select --labeled rounds/round1.csv --n 8``; the cache
    entries before and after it."""
    chosen = [row[0] for row in read_rows(project / "rounds" / "round1.csv")[1:]]
    write_labels(project / "rounds" / "round1.csv", [(path, "seen") for path in chosen])
    before = cache_entries(project / "rounds")
    result = sparsam(
        *("select", "images", "--backbone", "backbone", "--n", str(N)),
        *("--labeled", "rounds/round1.csv", "--out", "rounds/round2.csv", "--no-sheet"),
        "--quiet",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    return chosen, before, cache_entries(project / "rounds")


def test_select_writes_n_distinct_input_paths_with_an_empty_label_column(project, first_round):
    rows = read_rows(project / "rounds" / "round1.csv")
    assert rows[0] == ["path", "label"]
    paths = [Path(path) for path, label in rows[1:]]
    assert len(paths) == N and len(set(paths)) == N
    assert all(label == "" for _, label in rows[1:])
    assert all(path.is_file() for path in paths)
    assert set(paths) <= set(images_of(project))


def test_select_writes_the_images_the_library_chooses_in_its_order(project, first_round):
    images = images_of(project)
    featurizer = DinoFeaturizer(pretrained=str(project / "backbone"), epochs=0, verbose=0)
    expected = select_images_to_label(featurizer.fit(images[:1]), images, N, random_state=0)
    rows = read_rows(project / "rounds" / "round1.csv")[1:]
    assert [Path(path) for path, _ in rows] == [images[index] for index in expected]


def test_select_csv_reads_back_as_labels_of_the_chosen_images(project, first_round):
    images = images_of(project)
    labels = read_labels(project / "rounds" / "round1.csv", images)
    assert (labels == -1).all()  # the label column is for the person labeling


def test_select_writes_an_html_contact_sheet_of_the_chosen_images_beside_the_csv(
    project, first_round
):
    sheet = project / "rounds" / "round1.html"
    page = sheet.read_text(encoding="utf-8")
    assert page.count("<img") == N and is_contact_sheet(sheet)
    for path, _ in read_rows(project / "rounds" / "round1.csv")[1:]:
        assert f"</b> {Path(path).name}</figcaption>" in page


def test_select_prints_the_counts_the_method_and_where_the_files_went(first_round):
    output = first_round.stdout
    assert f"Images: {N_IMAGES} in images, 0 already labeled; chose {N} by typiclust" in output
    assert str(Path("rounds") / "round1.csv") in output
    assert str(Path("rounds") / "round1.html") in output


def test_second_round_chooses_n_new_images_none_labeled_before(project, second_round):
    first, _, _ = second_round
    rows = read_rows(project / "rounds" / "round2.csv")[1:]
    second = [path for path, _ in rows]
    assert len(second) == N and len(set(second)) == N
    assert not set(second) & set(first)
    assert not (project / "rounds" / "round2.html").exists()  # --no-sheet


def test_second_round_reads_the_embeddings_from_the_cache_of_the_first(second_round):
    _, before, after = second_round
    assert len(before) == N_IMAGES  # the first round cached every image beside its CSV
    assert after == before  # no entry added, none rewritten


def test_select_refuses_an_existing_out_without_overwrite_naming_it(project):
    out = project / "existing.csv"
    out.write_text("path,label\n")
    code, _, stderr = run_here(
        *("select", str(project / "images"), "--backbone", str(project / "backbone")),
        *("--n", "2", "--out", str(out)),
    )
    assert code == 1
    assert f"{out} exists; pass --overwrite" in stderr
    assert out.read_text() == "path,label\n"


def test_select_overwrite_never_replaces_a_csv_with_labels_filled_in(project):
    out = write_labels(project / "labeled.csv", [(str(images_of(project)[0]), "three")])
    before = out.read_text()
    code, _, stderr = run_here(
        *("select", str(project / "images"), "--backbone", str(project / "backbone")),
        *("--n", "2", "--out", str(out), "--overwrite"),
    )
    assert code == 1
    assert f"{out} exists and is not a list that sparsam select wrote" in stderr
    assert out.read_text() == before


def test_select_overwrite_replaces_its_own_list_and_sheet(project, tmp_path):
    out = tmp_path / "to_label.csv"
    arguments = [
        *("select", str(project / "images"), "--backbone", str(project / "backbone")),
        *("--out", str(out), "--sheet", str(tmp_path / "sheet.png"), "--quiet"),
    ]
    assert run_here(*arguments, "--n", "3")[0] == 0
    code, _, stderr = run_here(*arguments, "--n", "5", "--method", "random", "--overwrite")
    assert code == 0, stderr
    assert len(read_rows(out)) == 1 + 5
    assert Image.open(tmp_path / "sheet.png").size[0] > 5 * 128


def test_select_refuses_a_sheet_that_sparsam_did_not_write_even_with_overwrite(project):
    sheet = project / "notes.html"
    sheet.write_text("<html>my notes</html>")
    code, _, stderr = run_here(
        *("select", str(project / "images"), "--backbone", str(project / "backbone")),
        *("--n", "2", "--out", str(project / "notes.csv"), "--overwrite"),
    )
    assert code == 1
    assert f"{sheet} exists and is not a contact sheet that sparsam wrote" in stderr
    assert sheet.read_text() == "<html>my notes</html>"


def test_select_with_n_larger_than_the_images_left_names_the_counts(project):
    labeled = [(str(path), "x") for path in images_of(project)[:10]]
    labels = write_labels(project / "ten.csv", labeled)
    code, _, stderr = run_here(
        *("select", str(project / "images"), "--backbone", str(project / "backbone")),
        *("--n", "39", "--labeled", str(labels), "--out", str(project / "too_many.csv")),
    )
    assert code == 1
    assert "--n 39: only 38 images are left to choose from" in stderr
    assert f"{N_IMAGES} in " in stderr and "10 of them already labeled" in stderr
    assert "Traceback" not in stderr


def test_select_with_labeled_naming_a_file_not_in_data_names_the_row(project, tmp_path):
    stranger = tmp_path / "elsewhere.png"
    Image.new("L", (8, 8)).save(stranger)
    rows = [(str(images_of(project)[0]), "a"), (str(stranger), "b")]
    labels = write_labels(tmp_path / "labels.csv", rows)
    code, _, stderr = run_here(
        *("select", str(project / "images"), "--backbone", str(project / "backbone")),
        *("--n", "2", "--labeled", str(labels), "--out", str(tmp_path / "out.csv")),
    )
    assert code == 1
    assert f"{labels}, row 3: {str(stranger)!r} is not among the {N_IMAGES} images" in stderr


def test_select_refuses_a_sheet_with_another_suffix(project, tmp_path):
    code, _, stderr = run_here(
        *("select", str(project / "images"), "--backbone", str(project / "backbone")),
        *("--n", "2", "--out", str(tmp_path / "out.csv"), "--sheet", str(tmp_path / "s.jpg")),
    )
    assert code == 1
    assert "s.jpg': expected a file name ending in .html (one web page) or .png" in stderr
    assert list(tmp_path.iterdir()) == []


def test_select_refuses_a_data_set_of_arrays(project, tmp_path):
    code, _, stderr = run_here(
        *("select", "demo", "--backbone", str(project / "backbone")),
        *("--n", "2", "--out", str(tmp_path / "out.csv")),
    )
    assert code == 1
    assert "DATA='demo' is a data set of arrays" in stderr
