"""`sparsam embed` under torchrun: two gloo processes write one file, rows in input order.

Each test starts ``python -m torch.distributed.run --nproc-per-node 2`` (torchrun), as
``test_distributed.py`` does, on 21 PNG files (an odd number, so the shards are unequal: 11
and 10) with a saved 2-block XCiT (BatchNorm) at 16 px, 4 images per chunk. The files are
embedded one image per batch: the single process then runs exactly the batches the two
processes run, and its file must be equal byte for byte, not only close.
"""

import contextlib
import io
import json
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_XCIT_PARAMS, torchrun_two_processes
from PIL import Image

from sparsam import DinoFeaturizer, save_backbone
from sparsam.cli import main

N_IMAGES = 21
EMBED_OPTIONS = ["--batch-size", "1", "--chunk-size", "4", "--device", "cpu"]
EMBED_OPTIONS += ["--precision", "fp32", "--quiet"]

# `sparsam embed` as `python -m sparsam` runs it, in a process group joined beforehand, so
# that every rank records what it saw before any rank leaves (torchrun stops the others as soon
# as one exits with an error): the files it embedded in every transform call, and its errors.
RECORDING_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    import sparsam.featurizer as featurizer_module
    from sparsam.cli import main
    from sparsam.training.distributed import init_from_environment

    init_from_environment("cpu")
    record_folder, arguments = sys.argv[1], sys.argv[2:]
    record = {"calls": []}
    batched_outputs = featurizer_module.batched_outputs

    def recording_outputs(model, source, *args, **kwargs):
        record["calls"].append([os.path.basename(path) for path in source.items])
        return batched_outputs(model, source, *args, **kwargs)

    featurizer_module.batched_outputs = recording_outputs
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        record["code"] = main(arguments)
    record["stderr"] = stderr.getvalue()
    with open(os.path.join(record_folder, f"rank{dist.get_rank()}.json"), "w") as file:
        json.dump(record, file)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def torchrun_recording(arguments: list[str], record_folder: Path) -> list[dict]:
    """`sparsam ARGUMENTS` in 2 gloo processes; what each rank recorded (RECORDING_SCRIPT)."""
    script = record_folder / "recording_script.py"
    script.write_text(RECORDING_SCRIPT)
    result = torchrun_two_processes([str(script), str(record_folder), *arguments])
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((record_folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def run_here(arguments: list[str]) -> tuple[int, str]:
    """Exit code and stderr of ``sparsam ARGUMENTS`` in this process."""
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main(arguments)
    return code, stderr.getvalue()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """21 PNGs of 16 px RGB noise, named in their sorted order."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(N_IMAGES):
        pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{index:02d}.png")
    return folder


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, image_folder) -> Path:
    """The conftest's small XCiT, fitted for one epoch and saved with save_backbone."""
    images = [np.asarray(Image.open(path)) for path in sorted(image_folder.iterdir())]
    with warnings.catch_warnings():
        # One epoch on noise is too short to escape a CollapseWarning.
        warnings.simplefilter("ignore")
        featurizer = DinoFeaturizer(**SMALL_XCIT_PARAMS).fit(np.stack(images))
    return save_backbone(featurizer, tmp_path_factory.mktemp("backbone") / "xcit")


@pytest.fixture(scope="module")
def one_process_file(image_folder, backbone, tmp_path_factory) -> Path:
    """FILE.npy written by `sparsam embed` in this one process."""
    out = tmp_path_factory.mktemp("one_process") / "features.npy"
    arguments = ["embed", str(image_folder), "--backbone", str(backbone), "--out", str(out)]
    code, stderr = run_here([*arguments, *EMBED_OPTIONS])
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def two_process_run(image_folder, backbone, tmp_path_factory):
    """FILE.npy written by `python -m sparsam embed` under torchrun, and the run's output."""
    out = tmp_path_factory.mktemp("two_processes") / "features.npy"
    arguments = ["embed", str(image_folder), "--backbone", str(backbone), "--out", str(out)]
    result = torchrun_two_processes(["-m", "sparsam", *arguments, *EMBED_OPTIONS])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_embed_on_two_processes_writes_the_file_of_one_process(two_process_run, one_process_file):
    out, _ = two_process_run
    assert np.load(out).shape == (N_IMAGES, 32)
    assert out.read_bytes() == one_process_file.read_bytes()


def test_embed_on_two_processes_lists_the_inputs_as_one_process_does(
    two_process_run, one_process_file
):
    out, _ = two_process_run
    listing = out.with_suffix(".txt").read_text()
    assert listing == one_process_file.with_suffix(".txt").read_text()
    assert len(listing.splitlines()) == N_IMAGES


def test_embed_on_two_processes_leaves_only_its_two_files(two_process_run):
    out, _ = two_process_run
    assert sorted(path.name for path in out.parent.iterdir()) == ["features.npy", "features.txt"]


def test_embed_on_two_processes_prints_once(two_process_run):
    _, result = two_process_run
    assert result.stdout.count("Wrote 21 embeddings of 32 features") == 1, result.stdout
    assert "2 processes (torchrun)" in result.stdout


def test_each_process_embeds_only_its_own_rows_chunk_by_chunk(image_folder, backbone, tmp_path):
    out = tmp_path / "features.npy"
    arguments = ["embed", str(image_folder), "--backbone", str(backbone), "--out", str(out)]
    records = torchrun_recording([*arguments, *EMBED_OPTIONS], tmp_path)
    assert [record["code"] for record in records] == [0, 0]
    names = [f"image_{index:02d}.png" for index in range(N_IMAGES)]
    # Chunks of 4: rank 0 embeds images 0 to 10, rank 1 images 11 to 20.
    assert records[0]["calls"] == [names[0:4], names[4:8], names[8:11]]
    assert records[1]["calls"] == [names[11:15], names[15:19], names[19:21]]


@pytest.mark.parametrize("broken_rank", [0, 1])
def test_embed_that_fails_on_one_process_fails_on_both_and_leaves_no_file(
    image_folder, backbone, tmp_path, broken_rank
):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = sorted(image_folder.iterdir())
    # The broken image is the first of rank 0's rows, or the last of rank 1's.
    paths.insert(0 if broken_rank == 0 else len(paths), broken)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{path}\n" for path in paths))
    out = tmp_path / "result" / "features.npy"
    arguments = ["embed", str(listing), "--backbone", str(backbone), "--out", str(out)]
    records = torchrun_recording([*arguments, *EMBED_OPTIONS], tmp_path)
    assert [record["code"] for record in records] == [1, 1]
    assert "broken.png') could not be decoded" in records[broken_rank]["stderr"]
    told = records[1 - broken_rank]["stderr"]
    # ImageDecodeError: the ValueError of a file that cannot be decoded.
    assert f"rank {broken_rank} of 2 failed with ImageDecodeError" in told
    assert "broken.png" in told
    assert list(out.parent.iterdir()) == []
