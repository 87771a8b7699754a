"""The "Your images, start to finish" page (docs/your_images.md) works as written.

Every ``sparsam`` command of its bash blocks runs, in the page's order, as a real command in a
subprocess, in a folder holding what the page assumes: ``scans/`` (small PNGs), ``labels.csv``
and ``run.toml``. The page's ``run.toml`` asks for the paper's backbone at 224 px; the test
writes a tiny ViT's in its place and checks the page's own file with the settings' checks.
"""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli_settings import sparsam

from sparsam import DinoFeaturizer
from sparsam.cli.settings import config_layer, resolve_settings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "your_images.md"
CLASSES = ("effusion", "normal", "nodule")
N_LABELED_PER_CLASS = 4
N_UNLABELED = 6
TINY_RUN = """\
backbone = "vit_tiny_patch16_224"
backbone_kwargs = {patch_size = 4, embed_dim = 32, depth = 2, num_heads = 2}
image_size = 16
local_crop_size = 8
local_crops = 2
epochs = 1
batch_size = 8
out_dim = 64
vertical_flip = 0.0
rotation = 10.0
"""


def page_blocks(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def page_commands() -> list[list[str]]:
    lines = [line for block in page_blocks("bash") for line in block.splitlines()]
    return [line.split() for line in lines if line.startswith("sparsam ")]


def write_scans(folder: Path) -> list[str]:
    """PNGs of three classes (a bright square at one of three places) and unlabeled ones."""
    rng = np.random.default_rng(0)
    (folder / "scans").mkdir(parents=True)
    rows = []
    for index in range(len(CLASSES) * N_LABELED_PER_CLASS + N_UNLABELED):
        pixels = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
        kind = index % len(CLASSES)
        pixels[2 + 4 * kind : 6 + 4 * kind, 4:12] = 230
        name = f"scans/patient_{index:03d}.png"
        Image.fromarray(pixels).save(folder / name)
        labeled = index < len(CLASSES) * N_LABELED_PER_CLASS
        rows.append((name, CLASSES[kind] if labeled else ""))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("path", "label"), *rows])
    return [name for name, label in rows if not label]


def test_the_page_runs_check_pretrain_embed_select_evaluate_classify_and_attention_in_order():
    names = [command[1] for command in page_commands()]
    assert names == [
        "check",
        "pretrain",
        "pretrain",
        "embed",
        "select",
        "evaluate",
        "classify",
        "attention",
    ]
    assert "--dry-run" in page_commands()[1]


def test_the_pages_run_toml_passes_the_featurizers_checks(tmp_path):
    (block,) = page_blocks("toml")
    config = tmp_path / "run.toml"
    config.write_text(block)
    settings = resolve_settings(
        DinoFeaturizer, [(str(config), config_layer(DinoFeaturizer, config))]
    )
    assert settings.params["vertical_flip"] == 0.0
    assert settings.params["color_jitter"] == (0.4, 0.4, 0.2, 0.0)


@pytest.mark.slow
def test_every_command_of_the_page_runs_on_a_small_folder(tmp_path):
    unlabeled = write_scans(tmp_path)
    (tmp_path / "run.toml").write_text(TINY_RUN)
    for command in page_commands():
        result = sparsam(*command[1:], cwd=tmp_path)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stderr[-3000:]}"
        if "--dry-run" in command:
            assert not (tmp_path / "models").exists(), "a dry run writes nothing"

    model = tmp_path / "models" / "scans"
    for name in ("params.json", "history.csv", "config.json", "model.safetensors"):
        assert (model / name).is_file(), name
    n_images = len(CLASSES) * N_LABELED_PER_CLASS + N_UNLABELED
    assert np.load(tmp_path / "features.npy").shape[0] == n_images
    with open(tmp_path / "to_label.csv", newline="", encoding="utf-8") as file:
        to_label = list(csv.DictReader(file))
    assert len(to_label) == 10
    assert all(Path(row["path"]).is_file() and row["label"] == "" for row in to_label)
    assert (tmp_path / "to_label.html").read_text(encoding="utf-8").count("<img") == 10
    assert list((tmp_path / "results").glob("*.csv"))
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as file:
        predictions = list(csv.DictReader(file))
    assert sorted(Path(row["path"]).name for row in predictions) == sorted(
        Path(name).name for name in unlabeled
    )
    assert all(row["prediction"] in CLASSES for row in predictions)
    assert len(list((tmp_path / "attention").rglob("*.png"))) == n_images
