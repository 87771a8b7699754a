"""on_error="skip": files that cannot be decoded are left out, recorded and warned about."""

import re
import warnings

import numpy as np
import pytest
from PIL import Image

from sparsam import DinoFeaturizer, SupervisedClassifier
from sparsam.data import iter_batches
from sparsam.data.skipping import SkippedImage, SkippedImagesWarning


def write_archive(folder, labels):
    """One PNG per label (class 1 brighter), then a truncated one and a text file named .jpg."""
    rng = np.random.default_rng(0)
    paths = []
    for index, label in enumerate(labels):
        pixels = rng.integers(0, 128, size=(12, 12), dtype=np.uint8) + 127 * int(label)
        path = folder / f"{index:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    data = paths[0].read_bytes()
    truncated = folder / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    not_an_image = folder / "notes.jpg"
    not_an_image.write_text("not an image")
    return paths, [truncated, not_an_image]


@pytest.fixture
def archive(tmp_path, tiny_labels):
    good, bad = write_archive(tmp_path, tiny_labels[::2])
    # The bad files among the good ones, at positions 3 and 7.
    mixed = [*good[:3], bad[0], *good[3:6], bad[1], *good[6:]]
    return good, mixed


def test_raise_is_the_default_and_names_the_file(archive, tiny_params):
    _, mixed = archive
    with pytest.raises(ValueError, match=re.escape(f"X[3] ('{mixed[3]}')")):
        DinoFeaturizer(**tiny_params).fit(mixed)


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "streamed"])
def test_fit_skipping_bad_files_trains_exactly_as_on_the_good_files(
    archive, tiny_params, in_memory
):
    good, mixed = archive
    params = {**tiny_params, "in_memory": in_memory}
    with pytest.warns(SkippedImagesWarning, match=r"skipped 2 of 22 images") as caught:
        skipping = DinoFeaturizer(**params, on_error="skip").fit(mixed)
    clean = DinoFeaturizer(**params).fit(good)

    assert [(image.index, image.path) for image in skipping.skipped_files_] == [
        (3, str(mixed[3])),
        (7, str(mixed[7])),
    ]
    assert "truncated" in skipping.skipped_files_[0].reason
    assert [image.index for image in caught[0].message.skipped] == [3, 7]
    assert clean.skipped_files_ == []
    np.testing.assert_array_equal(skipping.transform(good), clean.transform(good))


def test_streamed_and_in_memory_skipping_give_the_same_model(archive, tiny_params):
    _, mixed = archive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)
        fitted = [
            DinoFeaturizer(**tiny_params, in_memory=in_memory, on_error="skip").fit(mixed)
            for in_memory in (True, False)
        ]
    np.testing.assert_array_equal(fitted[0].transform(mixed[:3]), fitted[1].transform(mixed[:3]))


def test_transform_skipping_gives_a_row_of_nan_and_caches_only_the_good_rows(
    archive, fitted_featurizer, tmp_path
):
    good, mixed = archive
    featurizer = fitted_featurizer
    cache = tmp_path / "cache"
    featurizer.set_params(on_error="skip", memory=str(cache))
    try:
        with pytest.warns(SkippedImagesWarning, match=r"transform skipped 2 of 22") as caught:
            embeddings = featurizer.transform(mixed)
        with pytest.warns(SkippedImagesWarning):
            again = featurizer.transform(mixed)
    finally:
        featurizer.set_params(on_error="raise", memory=None)

    nan_rows = np.flatnonzero(np.isnan(embeddings).any(axis=1))
    assert nan_rows.tolist() == [3, 7]
    assert [image.index for image in caught[0].message.skipped] == [3, 7]
    np.testing.assert_array_equal(np.delete(embeddings, [3, 7], axis=0), featurizer.transform(good))
    np.testing.assert_array_equal(again, embeddings)
    assert len(list(cache.rglob("*.npy"))) == len(good)


def test_iter_batches_skipping_zeroes_the_row_and_records_the_file(archive):
    _, mixed = archive
    skipped = []
    batches = list(iter_batches(mixed[:10], 8, batch_size=5, skipped=skipped))

    assert [tuple(batch.shape) for batch in batches] == [(5, 3, 8, 8), (5, 3, 8, 8)]
    assert [image.index for image in skipped] == [3, 7]
    assert isinstance(skipped[0], SkippedImage) and skipped[0].path == str(mixed[3])
    assert int(batches[0][3].abs().sum()) == 0
    assert "cannot identify image file" in skipped[1].reason


def supervised(tiny_params, **params):
    return SupervisedClassifier(
        backbone=tiny_params["backbone"],
        backbone_kwargs=tiny_params["backbone_kwargs"],
        image_size=16,
        epochs=1,
        random_state=0,
        verbose=0,
        **params,
    )


def test_supervised_fit_drops_the_labeled_bad_file_and_predict_gives_none(
    archive, tiny_params, tiny_labels
):
    good, mixed = archive
    labels = list(tiny_labels[::2])
    mixed_labels = [*labels[:3], 1, *labels[3:6], 0, *labels[6:]]

    with pytest.warns(SkippedImagesWarning, match=r"skipped 2 of 22"):
        skipping = supervised(tiny_params, on_error="skip").fit(mixed, mixed_labels)
    clean = supervised(tiny_params).fit(good, labels)
    with pytest.warns(SkippedImagesWarning):
        predicted = skipping.predict(mixed)
    with pytest.warns(SkippedImagesWarning):
        probabilities = skipping.predict_proba(mixed)

    assert [image.index for image in skipping.skipped_files_] == [3, 7]
    np.testing.assert_array_equal(skipping.predict_proba(good), clean.predict_proba(good))
    assert predicted[3] is None and predicted[7] is None
    assert list(np.delete(predicted, [3, 7])) == list(clean.predict(good))
    assert np.isnan(probabilities[[3, 7]]).all()


def test_on_error_is_validated(tiny_params, tiny_images):
    with pytest.raises(ValueError, match="on_error"):
        DinoFeaturizer(**tiny_params, on_error="ignore").fit(tiny_images)
