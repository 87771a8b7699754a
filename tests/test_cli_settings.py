"""`sparsam pretrain --config/--recipe/--dry-run`, params.json and --resume, run as a user would.

The main paths run the real command in a subprocess (``python -m sparsam``) on PNGs the tests
write; their variants call ``sparsam.cli.main`` in this process, which parses and runs the same
way without paying for a fresh interpreter (10 s each on two busy cores).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsam import DinoFeaturizer
from sparsam.cli import main
from sparsam.recipes import paper_recipe

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 24
# A 2-block, 32-wide ViT at 16 px (depth 2 so drop-path runs), as TOML.
TINY_TOML = """\
backbone = "vit_tiny_patch16_224"
backbone_kwargs = {patch_size = 4, depth = 2, embed_dim = 32, num_heads = 2}
image_size = 16
local_crop_size = 8
local_crops = 2
batch_size = 8
epochs = 1
out_dim = 64
head_hidden_dim = 32
head_bottleneck_dim = 16
precision = "fp32"
global_crop_scale = [0.4, 1.0]
verbose = 0
"""


def sparsam(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m sparsam ARGUMENTS`` with this checkout's sparsam, one torch thread."""
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
    }
    return subprocess.run(
        [sys.executable, "-m", "sparsam", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )


def write_pngs(folder: Path, n_images: int, seed: int = 0) -> list[Path]:
    """``n_images`` 16x16 RGB noise PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n_images):
        path = folder / f"image_{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder with ``images/`` (24 PNGs) and ``run.toml`` (the tiny ViT)."""
    folder = tmp_path_factory.mktemp("project")
    write_pngs(folder / "images", N_IMAGES)
    (folder / "run.toml").write_text(TINY_TOML)
    return folder


@pytest.fixture(scope="module")
def trained(project) -> Path:
    """``--out`` of one `sparsam pretrain --config run.toml --epochs 2`."""
    result = sparsam(
        "pretrain", "images", "--out", "run", "--config", "run.toml", "--epochs", "2", cwd=project
    )
    assert result.returncode == 0, result.stderr
    return project / "run"


def test_config_value_of_the_wrong_type_names_the_file_and_the_key(project):
    (project / "bad.toml").write_text(TINY_TOML.replace("epochs = 1", 'epochs = "ten"'))
    result = sparsam("pretrain", "images", "--out", "bad", "--config", "bad.toml", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "bad.toml: key 'epochs': must be an int in the range [0, inf), got 'ten'" in (
        result.stderr
    )
    assert not (project / "bad").exists()


def pretrain_here(project: Path, *options: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``sparsam pretrain images --out dry OPTIONS`` run by
    ``sparsam.cli.main`` in this process, paths relative to ``project``."""
    import contextlib
    import io
    import warnings

    out, err = io.StringIO(), io.StringIO()
    arguments = ["pretrain", str(project / "images"), "--out", str(project / "dry")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main([*arguments, *options])
    return code, out.getvalue(), err.getvalue()


def test_config_tuple_check_names_the_file_and_the_key(project):
    config = project / "scale.toml"
    config.write_text("local_crop_scale = [0.5, 0.1]\n")
    code, _, stderr = pretrain_here(project, "--config", str(config))
    assert code == 1
    assert f"{config}: key 'local_crop_scale': must be (low, high)" in stderr


def test_config_unknown_key_is_refused_with_the_closest_parameter(project):
    config = project / "typo.toml"
    config.write_text("epoch = 3\n")
    code, _, stderr = pretrain_here(project, "--config", str(config))
    assert code == 1
    assert f"{config}: key 'epoch': not a parameter of DinoFeaturizer; did you mean 'epochs'?" in (
        stderr
    )


def test_config_of_another_suffix_is_refused(project):
    config = project / "run.json"
    config.write_text("{}")
    code, _, stderr = pretrain_here(project, "--config", str(config))
    assert code == 1
    assert f"--config {str(config)!r}: expected a file ending in .toml, .yaml, .yml" in stderr


def test_config_option_error_names_the_option(project):
    code, _, stderr = pretrain_here(project, "--epochs", "-1", "--dry-run")
    assert code == 1
    assert "option --epochs: must be an int in the range [0, inf), got -1" in stderr


def test_dry_run_prints_steps_per_epoch_and_an_estimate_and_writes_nothing(project):
    before = sorted(path.name for path in project.iterdir())
    result = sparsam(
        "pretrain", "images", "--out", "dry", "--config", "run.toml", "--dry-run", cwd=project
    )
    assert result.returncode == 0, result.stderr
    # 24 images, 8 per step.
    assert "Steps per epoch: 3" in result.stdout
    assert f"Images found: {N_IMAGES}" in result.stdout
    assert "Estimated time (an estimate, from 3 timed training steps" in result.stdout
    assert sorted(path.name for path in project.iterdir()) == before


def test_command_line_option_overrides_the_config_file(project):
    result = sparsam(
        "pretrain",
        "images",
        "--out",
        "dry",
        "--config",
        "run.toml",
        "--epochs",
        "7",
        "--dry-run",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert "epochs                            = 7  [command line]" in result.stdout
    assert "batch_size                        = 8  [run.toml]" in result.stdout


def test_yaml_config_is_read_and_overrides_the_recipe(project):
    config = project / "run.yaml"
    config.write_text("batch_size: 12\nvertical_flip: 0.25\nepochs: 1\n")
    code, stdout, stderr = pretrain_here(
        project, "--recipe", "small", "--config", str(config), "--dry-run"
    )
    assert code == 0, stderr
    assert f"vertical_flip                     = 0.25  [{config}]" in stdout
    # The small-data recipe sized for 16 px images, where the file says nothing.
    assert "image_size                        = 16  [recipe 'small']" in stdout
    assert "Steps per epoch: 2" in stdout
    assert not (project / "dry").exists()


def test_pretrain_writes_params_json_with_settings_sources_versions_and_command_line(trained):
    record = json.loads((trained / "params.json").read_text())
    assert record["settings"]["epochs"] == 2
    assert record["sources"]["epochs"] == "command line"
    assert record["sources"]["batch_size"] == "run.toml"
    assert record["settings"]["global_crop_scale"] == [0.4, 1.0]
    assert record["run"]["n_images"] == N_IMAGES
    assert set(record["versions"]) >= {"sparsam", "torch", "timm", "python"}
    assert record["command_line"][:3] == ["sparsam", "pretrain", "images"]
    assert "--epochs" in record["command_line"]


def test_resume_with_a_changed_setting_is_refused_naming_the_key(project, trained):
    result = sparsam(
        "pretrain",
        "images",
        "--out",
        "run",
        "--config",
        "run.toml",
        "--epochs",
        "3",
        "--lr",
        "0.001",
        "--resume",
        cwd=project,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "epochs: 2 → 3" in result.stderr
    assert "lr: 0.0005 → 0.001" in result.stderr
    assert str(Path("run") / "params.json") in result.stderr


def test_resume_may_change_what_does_not_identify_the_run(project, trained):
    config = str(project / "run.toml")
    options = ["--config", config, "--epochs", "2", "--num-workers", "1", "--resume"]
    code, stdout, stderr = pretrain_here(project, *options, "--out", str(trained))
    assert code == 0, stderr
    assert "resuming from" in stdout


def test_paper_recipe_passes_the_featurizers_checks():
    featurizer = DinoFeaturizer(**paper_recipe())
    featurizer._validate_params()
    featurizer._validate_tuples()
    assert featurizer.get_params()["out_dim"] == 65536
