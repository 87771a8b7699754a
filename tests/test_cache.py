"""Specification of DinoFeaturizer(memory=...): each image is embedded once per set of weights."""

import copy
import os
import pickle
import re

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from sparsam import DinoFeaturizer, FewShotSplit
from sparsam.data.cache import CACHE_DIRECTORY, EmbeddingStore, image_keys
from sparsam.dino.trainer import DinoTrainer


def _with_memory(fitted_featurizer, memory):
    """A copy of the shared fitted featurizer that caches in ``memory``."""
    return copy.deepcopy(fitted_featurizer).set_params(memory=memory)


def _count_embedded_images(featurizer):
    """Record the batch size of every forward pass of the featurizer's backbone."""
    batch_sizes = []
    featurizer.backbone_.register_forward_hook(
        lambda module, inputs, output: batch_sizes.append(len(inputs[0]))
    )
    return batch_sizes


def _cache_files(directory, pattern="*.npy"):
    return sorted((directory / CACHE_DIRECTORY).rglob(pattern))


def _not_writable(memory):
    """The start of the error that names an unwritable ``memory``."""
    return rf"memory='{re.escape(str(memory))}' is not a writable directory"


def _write_pngs(images, directory):
    paths = []
    for index, image in enumerate(images):
        path = directory / f"image_{index}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def test_grid_search_over_frozen_featurizer_embeds_every_image_once(
    fitted_featurizer, tiny_images, tiny_labels, tmp_path
):
    featurizer = _with_memory(fitted_featurizer, tmp_path)
    embedded = _count_embedded_images(featurizer)
    search = GridSearchCV(
        make_pipeline(FrozenEstimator(featurizer), SVC()),
        {"svc__C": [0.1, 1, 10]},
        cv=FewShotSplit(n_per_class=5, n_repeats=5, random_state=0),
        error_score="raise",
    )

    search.fit(tiny_images, tiny_labels)

    assert sum(embedded) == len(tiny_images)


def test_cached_embeddings_equal_uncached_embeddings_exactly(
    fitted_featurizer, tiny_images, tmp_path
):
    featurizer = _with_memory(fitted_featurizer, tmp_path)
    expected = fitted_featurizer.transform(tiny_images)

    first = featurizer.transform(tiny_images)
    second = featurizer.transform(tiny_images)

    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    assert second.dtype == np.float32


def test_output_follows_input_order_when_hits_and_misses_mix(
    fitted_featurizer, tiny_images, tmp_path
):
    featurizer = _with_memory(fitted_featurizer, tmp_path)
    featurizer.transform(tiny_images[::2])
    reordered = tiny_images[::-1]

    np.testing.assert_array_equal(
        featurizer.transform(reordered), fitted_featurizer.transform(reordered)
    )


def test_repeated_image_in_one_call_is_embedded_once(fitted_featurizer, tiny_images, tmp_path):
    featurizer = _with_memory(fitted_featurizer, tmp_path)
    embedded = _count_embedded_images(featurizer)

    embeddings = featurizer.transform(np.stack([tiny_images[0], tiny_images[1], tiny_images[0]]))

    assert sum(embedded) == 2
    np.testing.assert_array_equal(embeddings[0], embeddings[2])


def test_unpickled_featurizer_reads_the_cache_without_embedding(
    fitted_featurizer, tiny_images, tmp_path
):
    featurizer = _with_memory(fitted_featurizer, tmp_path)
    featurizer.transform(tiny_images)
    restored = pickle.loads(pickle.dumps(featurizer))
    embedded = _count_embedded_images(restored)

    restored.transform(tiny_images)

    assert embedded == []


def test_featurizer_pickled_without_weights_digest_still_hits_the_cache(
    fitted_featurizer, tiny_images, tmp_path
):
    featurizer = _with_memory(fitted_featurizer, tmp_path)
    featurizer.transform(tiny_images)
    older = pickle.loads(pickle.dumps(featurizer))
    del older.weights_digest_
    embedded = _count_embedded_images(older)

    older.transform(tiny_images)

    assert embedded == []


def test_refit_with_other_random_state_misses_the_cache(tiny_params, tiny_images, tmp_path):
    DinoFeaturizer(**tiny_params, memory=tmp_path).fit(tiny_images).transform(tiny_images)
    refitted = DinoFeaturizer(**{**tiny_params, "random_state": 1}, memory=tmp_path)
    refitted.fit(tiny_images)
    embedded = _count_embedded_images(refitted)

    refitted.transform(tiny_images)

    assert sum(embedded) == len(tiny_images)


def test_rewritten_png_file_is_embedded_again_alone(fitted_featurizer, tiny_images, tmp_path):
    featurizer = _with_memory(fitted_featurizer, tmp_path / "cache")
    paths = _write_pngs(tiny_images[:3], tmp_path)
    before = featurizer.transform(paths)
    Image.fromarray(tiny_images[3]).save(paths[1])
    # Timestamps of two quick writes can coincide (a coarse kernel clock); "touch" to be sure.
    status = os.stat(paths[1])
    os.utime(paths[1], ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    embedded = _count_embedded_images(featurizer)

    after = featurizer.transform(paths)

    assert sum(embedded) == 1
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    np.testing.assert_array_equal(after[1], fitted_featurizer.transform(tiny_images[3:4])[0])


def test_file_keys_do_not_read_the_files(tiny_images, tmp_path, monkeypatch):
    paths = _write_pngs(tiny_images[:2], tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("image_keys opened a file")

    monkeypatch.setattr(Image, "open", refuse)

    assert len(set(image_keys(paths))) == 2


def test_joblib_memory_caches_in_its_location(fitted_featurizer, tiny_images, tmp_path):
    featurizer = _with_memory(fitted_featurizer, joblib.Memory(tmp_path, verbose=0))

    featurizer.transform(tiny_images)

    assert len(_cache_files(tmp_path)) == len(tiny_images)


@pytest.mark.parametrize("memory", [None, joblib.Memory(None, verbose=0)], ids=["None", "Memory"])
def test_without_a_location_nothing_is_written(
    fitted_featurizer, tiny_images, tmp_path, monkeypatch, memory
):
    monkeypatch.chdir(tmp_path)
    featurizer = _with_memory(fitted_featurizer, memory)

    featurizer.transform(tiny_images)

    assert list(tmp_path.iterdir()) == []


def test_transform_leaves_no_temporary_files(fitted_featurizer, tiny_images, tmp_path):
    featurizer = _with_memory(fitted_featurizer, tmp_path)

    featurizer.transform(tiny_images)

    assert _cache_files(tmp_path, "*.tmp") == []


def test_failed_write_leaves_neither_entry_nor_temporary_file(tmp_path, monkeypatch):
    store = EmbeddingStore(tmp_path, "0" * 64)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)

    with pytest.raises(OSError, match="disk full"):
        store.save("ab" * 32, np.zeros(4, dtype=np.float32))
    assert list(store.directory.rglob("*.*")) == []


def test_stored_entry_gets_the_permissions_of_the_umask(tmp_path):
    store = EmbeddingStore(tmp_path, "0" * 64)
    previous = os.umask(0o022)
    try:
        store.save("ab" * 32, np.zeros(4, dtype=np.float32))
    finally:
        os.umask(previous)

    assert store.path("ab" * 32).stat().st_mode & 0o777 == 0o644


def test_corrupt_entry_is_embedded_again(fitted_featurizer, tiny_images, tmp_path):
    featurizer = _with_memory(fitted_featurizer, tmp_path)
    expected = featurizer.transform(tiny_images[:1])
    _cache_files(tmp_path)[0].write_bytes(b"not an array")

    np.testing.assert_array_equal(featurizer.transform(tiny_images[:1]), expected)


@pytest.mark.parametrize("memory", [42, "", ["cache"]], ids=["int", "empty", "list"])
def test_invalid_memory_raises_value_error_naming_it_in_transform(
    fitted_featurizer, tiny_images, memory
):
    featurizer = _with_memory(fitted_featurizer, memory)

    with pytest.raises(ValueError, match="memory"):
        featurizer.transform(tiny_images)


def test_memory_naming_a_file_raises_value_error_in_fit(tiny_params, tiny_images, tmp_path):
    file = tmp_path / "cache"
    file.write_text("")

    with pytest.raises(ValueError, match="memory"):
        DinoFeaturizer(**tiny_params, memory=file).fit(tiny_images)


def test_unwritable_memory_raises_in_transform_before_embedding(
    fitted_featurizer, tiny_images, tmp_path, monkeypatch
):
    (tmp_path / "afile").write_text("")
    memory = tmp_path / "afile" / "cache"
    featurizer = _with_memory(fitted_featurizer, memory)

    def refuse(source):
        raise AssertionError("embedded although the cache cannot be written")

    monkeypatch.setattr(featurizer, "_embed", refuse)

    with pytest.raises(ValueError, match=_not_writable(memory)):
        featurizer.transform(tiny_images)


def test_unwritable_memory_raises_in_fit_before_training(
    tiny_params, tiny_images, tmp_path, monkeypatch
):
    (tmp_path / "afile").write_text("")
    memory = tmp_path / "afile" / "cache"

    def refuse(*args, **kwargs):
        raise AssertionError("trained although the cache cannot be written")

    monkeypatch.setattr(DinoTrainer, "fit", refuse)

    with pytest.raises(ValueError, match=_not_writable(memory)):
        DinoFeaturizer(**tiny_params, memory=memory).fit(tiny_images)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders"
)
def test_read_only_memory_directory_raises_in_transform(fitted_featurizer, tiny_images, tmp_path):
    memory = tmp_path / "cache"
    memory.mkdir(mode=0o500)
    featurizer = _with_memory(fitted_featurizer, memory)

    with pytest.raises(ValueError, match=_not_writable(memory)):
        featurizer.transform(tiny_images)


def test_invalid_memory_type_raises_value_error_naming_it_in_fit(tiny_params, tiny_images):
    with pytest.raises(ValueError, match="memory"):
        DinoFeaturizer(**tiny_params, memory=42).fit(tiny_images)


def test_clone_keeps_memory_and_drops_weights_digest(fitted_featurizer, tmp_path):
    featurizer = _with_memory(fitted_featurizer, tmp_path)

    cloned = clone(featurizer)

    assert cloned.memory == featurizer.memory
    assert not hasattr(cloned, "weights_digest_")


def test_weights_digest_is_set_by_fit_and_survives_pickling(fitted_featurizer):
    restored = pickle.loads(pickle.dumps(fitted_featurizer))

    assert len(fitted_featurizer.weights_digest_) == 64
    assert restored.weights_digest_ == fitted_featurizer.weights_digest_


def test_uint16_image_has_one_key_alone_and_beside_a_brighter_image(tiny_images):
    image = tiny_images[0].astype(np.uint16)
    alone = image_keys([image])[0]
    with_a_16_bit_image = image_keys([image, np.full((4, 4), 60000, dtype=np.uint16)])[0]

    assert alone == with_a_16_bit_image


def test_palette_images_with_other_colours_get_other_keys():
    first = Image.new("P", (4, 4))
    second = first.copy()
    second.putpalette([255, 0, 0] * 256)

    assert image_keys([first]) != image_keys([second])


def test_entries_of_an_older_cache_format_are_not_read(
    fitted_featurizer, tiny_images, tmp_path, monkeypatch
):
    # Format 3 resizes on uint8 pixels: an entry embedded from the float resize of format 2
    # may differ in its last bits, so it lives under another name and is never read.
    from sparsam.data import cache

    older = _with_memory(fitted_featurizer, tmp_path)
    monkeypatch.setattr(cache, "_FORMAT_VERSION", "2")
    older.transform(tiny_images)
    monkeypatch.undo()
    current = _with_memory(fitted_featurizer, tmp_path)
    embedded = _count_embedded_images(current)
    current.transform(tiny_images)
    assert sum(embedded) == len(tiny_images)
    assert len(_cache_files(tmp_path)) == 2 * len(tiny_images)
