"""DinoFeaturizer.transform under torchrun: each rank embeds its shard, every rank gets all rows.

The torchrun tests start two gloo processes on the CPU with ``python -m torch.distributed.run``,
as ``test_distributed.py`` does, each transforming the same 21 images (an odd number, so the
shards are unequal: 11 and 10) with the small XCiT of the conftest (BatchNorm, 2 blocks).
They embed one image per batch: the single process then runs exactly the batches the two
processes run, and the rows must be equal bit for bit, not only close.
"""

import copy
import json
import textwrap

import joblib
import numpy as np
import pytest
from conftest import SMALL_XCIT_PARAMS, torchrun_two_processes

import sparsam.featurizer as featurizer_module
from sparsam import DinoFeaturizer
from sparsam.training.distributed import no_sharding, shard_range, sharding_active

N_IMAGES = 21

# Every rank transforms the images (rank 1 one image fewer when asked to), and records the
# images it embedded itself: each image carries its index in its first pixel.
RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import joblib
    import numpy as np
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    import sparsam.featurizer as featurizer_module
    from sparsam.training.distributed import init_from_environment, rank

    init_from_environment("cpu")
    featurizer_path, images_path, out, fewer_on_rank_1 = sys.argv[1:5]
    record = {"embedded": []}
    batched_outputs = featurizer_module.batched_outputs

    def recording_outputs(model, source, *args, **kwargs):
        record["embedded"].extend(int(image[0, 0, 0]) for image in source.items)
        return batched_outputs(model, source, *args, **kwargs)

    featurizer_module.batched_outputs = recording_outputs
    featurizer = joblib.load(featurizer_path)
    images = np.load(images_path)
    if fewer_on_rank_1 == "yes" and rank() == 1:
        images = images[:-1]
    try:
        np.save(os.path.join(out, f"rank{rank()}.npy"), featurizer.transform(images))
    except ValueError as error:
        record["error"] = str(error)
    with open(os.path.join(out, f"rank{rank()}.json"), "w") as file:
        json.dump(record, file)
    dist.destroy_process_group()
    """
)


def torchrun_transform(tmp_path, featurizer, images, fewer_on_rank_1=False):
    """Run RANK_SCRIPT in 2 gloo processes; their outputs and records, one per rank."""
    out = tmp_path / "ranks"
    out.mkdir()
    joblib.dump(featurizer, tmp_path / "featurizer.joblib")
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    result = torchrun_two_processes(
        [
            *(str(script), str(tmp_path / "featurizer.joblib"), str(tmp_path / "images.npy")),
            *(str(out), "yes" if fewer_on_rank_1 else "no"),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return out, records


@pytest.fixture(scope="module")
def numbered_images():
    """21 RGB 16 px images; image i holds i in its first pixel."""
    images = np.random.default_rng(0).integers(0, 256, size=(N_IMAGES, 16, 16, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(N_IMAGES)
    return images


@pytest.fixture(scope="module")
def featurizer(numbered_images):
    """The conftest's small XCiT fitted for one epoch, embedding one image per batch."""
    params = {**SMALL_XCIT_PARAMS, "device": "cpu", "precision": "fp32"}
    fitted = DinoFeaturizer(**params).fit(numbered_images)
    return fitted.set_params(batch_size=1)


@pytest.fixture(scope="module")
def two_rank_transform(featurizer, numbered_images, tmp_path_factory):
    """Outputs and records of a 2-rank transform without a cache."""
    return torchrun_transform(tmp_path_factory.mktemp("transform"), featurizer, numbered_images)


def test_shards_are_contiguous_in_rank_order_and_differ_by_at_most_one():
    for n_items in (0, 1, 2, 21, 22, 100):
        for n_shards in (1, 2, 3, 8):
            shards = [shard_range(n_items, shard, n_shards) for shard in range(n_shards)]
            assert [index for shard in shards for index in shard] == list(range(n_items))
            sizes = [len(shard) for shard in shards]
            assert max(sizes) - min(sizes) <= 1
            assert sizes == sorted(sizes, reverse=True)


def test_shard_range_refuses_a_shard_outside_the_group():
    with pytest.raises(ValueError, match="shard=2, n_shards=2"):
        shard_range(5, shard=2, n_shards=2)


def test_a_single_process_does_not_shard():
    assert not sharding_active()
    assert shard_range(7) == range(7)
    with no_sharding():
        assert not sharding_active()


def test_transform_on_two_ranks_returns_every_row_equal_to_one_process(
    two_rank_transform, featurizer, numbered_images
):
    out, _ = two_rank_transform
    expected = featurizer.transform(numbered_images)
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(out / f"rank{rank}.npy"), expected)


def test_transform_on_two_ranks_embeds_each_image_on_the_rank_of_its_shard_only(
    two_rank_transform,
):
    _, records = two_rank_transform
    assert records[0]["embedded"] == list(range(11))
    assert records[1]["embedded"] == list(range(11, N_IMAGES))


def test_transform_on_two_ranks_with_memory_embeds_and_stores_only_the_missing_images(
    featurizer, numbered_images, tmp_path, monkeypatch
):
    caching = copy.deepcopy(featurizer).set_params(memory=str(tmp_path / "cache"))
    caching.transform(numbered_images[[*range(6), 15, 16, 17]])
    out, records = torchrun_transform(tmp_path, caching, numbered_images)
    # Rank 0 holds images 0 to 10, rank 1 images 11 to 20.
    assert records[0]["embedded"] == [6, 7, 8, 9, 10]
    assert records[1]["embedded"] == [11, 12, 13, 14, 18, 19, 20]
    expected = featurizer.transform(numbered_images)
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(out / f"rank{rank}.npy"), expected)
    embedded_afterwards = []
    batched_outputs = featurizer_module.batched_outputs

    def recording_outputs(model, source, *args, **kwargs):
        embedded_afterwards.extend(source.items)
        return batched_outputs(model, source, *args, **kwargs)

    monkeypatch.setattr(featurizer_module, "batched_outputs", recording_outputs)
    caching.transform(numbered_images)
    assert embedded_afterwards == [], "the ranks stored every image they embedded"


def test_transform_on_two_ranks_given_different_images_fails_on_both(
    featurizer, numbered_images, tmp_path
):
    _, records = torchrun_transform(tmp_path, featurizer, numbered_images, fewer_on_rank_1=True)
    for record in records:
        assert "[21, 20] items" in record["error"]
