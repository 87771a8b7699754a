"""Specification of sparsam.DinoFeaturizer: a scikit-learn transformer trained with DINO."""

import copy
import logging
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import count_calls
from PIL import Image
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

import sparsam.featurizer
from sparsam import DinoFeaturizer
from sparsam.dino.trainer import DinoTrainer
from sparsam.training.checkpoints import list_checkpoints

HISTORY_KEYS = {
    "loss",
    "teacher_entropy",
    "teacher_mean_entropy",
    "kl",
    "lr",
    "weight_decay",
    "teacher_momentum",
    "teacher_temperature",
    "seconds",
    "koleo",
    "rankme",
}


# Fitted attributes and output


def test_fit_returns_self(tiny_params, tiny_images):
    featurizer = DinoFeaturizer(**tiny_params)

    assert featurizer.fit(tiny_images) is featurizer


def test_transform_returns_float32_array_with_one_row_per_image(fitted_featurizer, tiny_images):
    embeddings = fitted_featurizer.transform(tiny_images)

    assert isinstance(embeddings, np.ndarray)
    assert embeddings.dtype == np.float32
    assert embeddings.shape == (len(tiny_images), fitted_featurizer.n_features_out_)


def test_n_features_out_is_backbone_width(fitted_featurizer, tiny_width):
    assert fitted_featurizer.n_features_out_ == tiny_width


def test_history_has_one_value_per_epoch_for_each_statistic(tiny_params, tiny_images):
    featurizer = DinoFeaturizer(**{**tiny_params, "epochs": 2}).fit(tiny_images)

    assert set(featurizer.history_) == HISTORY_KEYS
    assert all(len(values) == 2 for values in featurizer.history_.values())


def test_data_config_holds_normalisation_and_input_size(fitted_featurizer, tiny_params):
    config = fitted_featurizer.data_config_

    assert set(config) == {"mean", "std", "image_size", "interpolation"}
    assert config["image_size"] == tiny_params["image_size"]


def test_transform_before_fit_raises_not_fitted_error(tiny_params, tiny_images):
    with pytest.raises(NotFittedError):
        DinoFeaturizer(**tiny_params).transform(tiny_images)


# epochs=0


def test_zero_epochs_without_pretrained_weights_warns_that_features_are_untrained(
    tiny_params, tiny_images
):
    with pytest.warns(UserWarning, match="untrained"):
        DinoFeaturizer(**{**tiny_params, "epochs": 0}).fit(tiny_images)


def test_zero_epochs_runs_no_training_and_leaves_history_empty(
    tiny_params, tiny_images, monkeypatch, tiny_width
):
    trainer_calls = count_calls(monkeypatch, sparsam.featurizer, "DinoTrainer")

    with pytest.warns(UserWarning, match="untrained"):
        featurizer = DinoFeaturizer(**{**tiny_params, "epochs": 0}).fit(tiny_images)

    assert trainer_calls == []
    assert featurizer.history_ == {}
    assert featurizer.transform(tiny_images).shape == (len(tiny_images), tiny_width)


# Parameter validation


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("epochs", -1),
        ("batch_size", 0),
        ("precision", "fp8"),
        ("global_crop_scale", (0.9, 0.1)),
        ("color_jitter", (1, 2)),
        ("blur", (2, 0, 0)),
        ("horizontal_flip", 1.5),
        ("backbone", "not_a_model"),
        ("pretrained", "nonsense"),
    ],
)
def test_invalid_parameter_raises_value_error_naming_it_in_fit(
    tiny_params, tiny_images, name, value
):
    featurizer = DinoFeaturizer(**{**tiny_params, name: value})

    with pytest.raises(ValueError, match=name):
        featurizer.fit(tiny_images)


# scikit-learn estimator contract


def test_init_stores_arguments_verbatim_and_sets_nothing_else(tiny_params):
    featurizer = DinoFeaturizer(**tiny_params)

    assert vars(featurizer) == featurizer.get_params(deep=False)
    for name, value in tiny_params.items():
        assert getattr(featurizer, name) is value


def test_repr_names_the_class(tiny_params):
    assert "DinoFeaturizer" in repr(DinoFeaturizer(**tiny_params))


def test_clone_of_fitted_featurizer_has_equal_params_and_is_unfitted(fitted_featurizer):
    cloned = clone(fitted_featurizer)

    assert cloned.get_params() == fitted_featurizer.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(cloned)


def test_tags_say_two_dimensional_arrays_are_not_accepted(tiny_params):
    assert DinoFeaturizer(**tiny_params).__sklearn_tags__().input_tags.two_d_array is False


# Reproducibility


def test_refitting_with_same_random_state_gives_identical_embeddings(tiny_params, tiny_images):
    featurizer = DinoFeaturizer(**tiny_params)
    first = featurizer.fit(tiny_images).transform(tiny_images)

    second = featurizer.fit(tiny_images).transform(tiny_images)

    assert np.array_equal(first, second)


def test_transform_is_deterministic_for_same_random_state(
    fitted_featurizer, tiny_params, tiny_images
):
    other = DinoFeaturizer(**tiny_params).fit(tiny_images)

    assert np.array_equal(other.transform(tiny_images), fitted_featurizer.transform(tiny_images))


def test_different_random_state_gives_different_embeddings(
    fitted_featurizer, tiny_params, tiny_images
):
    other = DinoFeaturizer(**{**tiny_params, "random_state": 1}).fit(tiny_images)

    assert not np.array_equal(
        other.transform(tiny_images), fitted_featurizer.transform(tiny_images)
    )


# Persistence


def test_pickle_round_trip_gives_identical_embeddings(fitted_featurizer, tiny_images):
    restored = pickle.loads(pickle.dumps(fitted_featurizer))

    assert np.array_equal(restored.transform(tiny_images), fitted_featurizer.transform(tiny_images))


def test_joblib_round_trip_gives_identical_embeddings(fitted_featurizer, tiny_images, tmp_path):
    path = tmp_path / "featurizer.joblib"
    joblib.dump(fitted_featurizer, path)

    restored = joblib.load(path)

    assert np.array_equal(restored.transform(tiny_images), fitted_featurizer.transform(tiny_images))


def test_pickled_state_holds_backbone_on_cpu(fitted_featurizer):
    state = fitted_featurizer.__getstate__()

    tensors = [*state["backbone_"].parameters(), *state["backbone_"].buffers()]
    assert all(tensor.device.type == "cpu" for tensor in tensors)


def test_pickled_state_is_a_copy_that_leaves_the_featurizer_unchanged(
    fitted_featurizer, tiny_width
):
    featurizer = copy.deepcopy(fitted_featurizer)
    state = featurizer.__getstate__()
    state["n_features_out_"] = -1

    assert featurizer.n_features_out_ == tiny_width


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_pickling_leaves_gpu_fitted_backbone_on_gpu(tiny_params, tiny_images):
    featurizer = DinoFeaturizer(**{**tiny_params, "device": "cuda"}).fit(tiny_images)

    pickle.dumps(featurizer)

    assert next(featurizer.backbone_.parameters()).device.type == "cuda"


@pytest.mark.gpu
@needs_cuda
def test_gpu_fitted_featurizer_unpickles_and_transforms_without_cuda(
    tiny_params, tiny_images, monkeypatch, tiny_width
):
    featurizer = DinoFeaturizer(**{**tiny_params, "device": "cuda"}).fit(tiny_images)
    payload = pickle.dumps(featurizer)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    restored = pickle.loads(payload).set_params(device="auto")
    embeddings = restored.transform(tiny_images)

    assert next(restored.backbone_.parameters()).device.type == "cpu"
    assert embeddings.shape == (len(tiny_images), tiny_width)
    assert np.isfinite(embeddings).all()


# Feature names and output containers


def test_feature_names_are_class_name_prefixed_indices(fitted_featurizer, tiny_width):
    names = fitted_featurizer.get_feature_names_out()

    assert list(names) == [f"dinofeaturizer{i}" for i in range(tiny_width)]


def test_pandas_output_is_dataframe_with_feature_name_columns(fitted_featurizer, tiny_images):
    pandas = pytest.importorskip("pandas")
    featurizer = copy.deepcopy(fitted_featurizer).set_output(transform="pandas")

    embeddings = featurizer.transform(tiny_images)

    assert isinstance(embeddings, pandas.DataFrame)
    assert list(embeddings.columns) == list(featurizer.get_feature_names_out())


# Pipelines and model selection


def test_pipeline_with_svc_fits_and_predicts_labels(tiny_params, tiny_images, tiny_labels):
    pipeline = make_pipeline(DinoFeaturizer(**tiny_params), SVC())

    predictions = pipeline.fit(tiny_images, tiny_labels).predict(tiny_images)

    assert predictions.shape == (len(tiny_images),)
    assert set(predictions) <= set(tiny_labels)


def test_pipeline_works_in_cross_val_score(tiny_params, tiny_images, tiny_labels):
    pipeline = make_pipeline(DinoFeaturizer(**tiny_params), SVC())

    scores = cross_val_score(pipeline, tiny_images, tiny_labels, cv=2, error_score="raise")

    # The same as fitting a fresh clone on each of StratifiedKFold's training halves.
    expected = [
        clone(pipeline)
        .fit(tiny_images[train], tiny_labels[train])
        .score(tiny_images[test], tiny_labels[test])
        for train, test in StratifiedKFold(2).split(tiny_images, tiny_labels)
    ]
    np.testing.assert_array_equal(scores, expected)


def test_fit_accepts_unlabeled_minus_one_targets(tiny_params, tiny_images, tiny_labels, tiny_width):
    partially_labeled = np.where(np.arange(len(tiny_images)) % 2 == 0, -1, tiny_labels)

    featurizer = DinoFeaturizer(**tiny_params).fit(tiny_images, partially_labeled)

    assert featurizer.n_features_out_ == tiny_width


def _grid_search_over_frozen(featurizer, images, labels):
    pipeline = make_pipeline(FrozenEstimator(featurizer), SVC())
    return GridSearchCV(pipeline, {"svc__C": [0.1, 1.0, 10.0]}, cv=2, error_score="raise").fit(
        images, labels
    )


def test_grid_search_does_not_refit_a_frozen_featurizer(
    fitted_featurizer, tiny_images, tiny_labels, monkeypatch
):
    fit_calls = count_calls(monkeypatch, DinoFeaturizer, "fit")

    _grid_search_over_frozen(fitted_featurizer, tiny_images, tiny_labels)

    assert fit_calls == []


def test_grid_search_over_frozen_featurizer_finds_best_svc_params(
    fitted_featurizer, tiny_images, tiny_labels
):
    search = _grid_search_over_frozen(fitted_featurizer, tiny_images, tiny_labels)

    # The same search on the features computed once: the frozen featurizer adds nothing else.
    features = fitted_featurizer.transform(tiny_images)
    direct = GridSearchCV(SVC(), {"C": [0.1, 1.0, 10.0]}, cv=2).fit(features, tiny_labels)
    assert search.best_params_["svc__C"] == direct.best_params_["C"]
    np.testing.assert_array_equal(
        search.cv_results_["mean_test_score"], direct.cv_results_["mean_test_score"]
    )


# Progress bars and logging


def test_verbose_zero_prints_nothing(tiny_params, tiny_images, capsys):
    DinoFeaturizer(**tiny_params).fit(tiny_images).transform(tiny_images)

    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_verbose_one_shows_progress_bars_on_stderr(
    tiny_params, tiny_images, capsys, stderr_is_a_terminal
):
    DinoFeaturizer(**{**tiny_params, "verbose": 1}).fit(tiny_images).transform(tiny_images)

    stderr = capsys.readouterr().err
    assert "DINO" in stderr
    assert "embedding" in stderr


def test_fit_logs_one_dino_epoch_line_per_epoch(tiny_params, tiny_images, caplog):
    caplog.set_level(logging.INFO, logger="sparsam")

    DinoFeaturizer(**{**tiny_params, "epochs": 2}).fit(tiny_images)

    epoch_lines = [record for record in caplog.records if "DINO epoch" in record.getMessage()]
    assert len(epoch_lines) == 2


def test_verbose_one_shows_a_bar_while_decoding_the_training_images(
    tiny_params, tiny_images, capsys, stderr_is_a_terminal
):
    DinoFeaturizer(**{**tiny_params, "verbose": 1}).fit(tiny_images)

    assert "decoding: 100%|" in capsys.readouterr().err


def test_streamed_training_images_show_no_decoding_bar(
    tiny_params, tiny_images, capsys, stderr_is_a_terminal
):
    DinoFeaturizer(**{**tiny_params, "verbose": 1, "in_memory": False}).fit(tiny_images)

    assert "decoding" not in capsys.readouterr().err


def test_verbose_one_prints_no_epoch_log_lines(
    tiny_params, tiny_images, capsys, stderr_is_a_terminal
):
    DinoFeaturizer(**{**tiny_params, "verbose": 1}).fit(tiny_images)

    assert "DINO epoch" not in capsys.readouterr().err


def test_verbose_two_prints_one_epoch_log_line_per_epoch_without_logging_configured(
    tiny_params, tiny_images, capsys
):
    DinoFeaturizer(**{**tiny_params, "epochs": 2, "verbose": 2}).fit(tiny_images)

    stderr = capsys.readouterr().err
    assert stderr.count("DINO epoch") == 2
    assert "DINO epoch 2/2: loss" in stderr


def test_verbose_two_leaves_the_sparsam_logger_as_it_was(tiny_params, tiny_images):
    logger = logging.getLogger("sparsam")
    before = (logger.level, list(logger.handlers))

    DinoFeaturizer(**{**tiny_params, "verbose": 2}).fit(tiny_images)

    assert (logger.level, list(logger.handlers)) == before


# Checkpoints


def test_fit_with_checkpoint_dir_writes_checkpoint(tiny_params, tiny_images, tmp_path):
    DinoFeaturizer(**{**tiny_params, "checkpoint_dir": tmp_path}).fit(tiny_images)

    assert [path.name for path in list_checkpoints(tmp_path)] == ["dino_checkpoint_000000002.pt"]


def test_fit_resumes_from_finished_checkpoint_without_training(
    tiny_params, tiny_images, tmp_path, monkeypatch
):
    params = {**tiny_params, "checkpoint_dir": tmp_path}
    first = DinoFeaturizer(**params).fit(tiny_images)
    steps = count_calls(monkeypatch, DinoTrainer, "train_step")

    resumed = DinoFeaturizer(**params).fit(tiny_images)

    assert steps == []
    assert resumed.history_ == first.history_


def test_resumed_fit_takes_its_weights_from_the_checkpoint(tiny_params, tiny_images, tmp_path):
    params = {**tiny_params, "checkpoint_dir": tmp_path}
    first = DinoFeaturizer(**params).fit(tiny_images)
    resumed = DinoFeaturizer(**params).fit(tiny_images)
    assert np.array_equal(resumed.transform(tiny_images), first.transform(tiny_images))

    # Alter the teacher in the checkpoint: a fit that resumes from it must return the change.
    path = list_checkpoints(tmp_path)[0]
    state = torch.load(path, weights_only=True)
    state["teacher"]["backbone.norm.weight"] *= 2
    torch.save(state, path)
    altered = DinoFeaturizer(**params).fit(tiny_images)
    torch.testing.assert_close(
        altered.backbone_.norm.weight, 2 * first.backbone_.norm.weight, rtol=0, atol=0
    )
    assert not np.array_equal(altered.transform(tiny_images), first.transform(tiny_images))


@pytest.mark.parametrize(
    "changed", [{"lr": 1e-3}, {"out_dim": 32}], ids=["training_settings", "head_shape"]
)
def test_checkpoint_with_different_settings_raises_value_error_naming_it(
    tiny_params, tiny_images, tmp_path, changed
):
    DinoFeaturizer(**{**tiny_params, "checkpoint_dir": tmp_path}).fit(tiny_images)
    featurizer = DinoFeaturizer(**{**tiny_params, **changed, "checkpoint_dir": tmp_path})

    with pytest.raises(ValueError, match="dino_checkpoint_"):
        featurizer.fit(tiny_images)


# Input forms


def test_list_of_pil_images_gives_same_embeddings_as_uint8_array(
    fitted_featurizer, tiny_params, tiny_images
):
    pil_images = [Image.fromarray(image) for image in tiny_images]

    embeddings = DinoFeaturizer(**tiny_params).fit(pil_images).transform(pil_images)

    assert np.array_equal(embeddings, fitted_featurizer.transform(tiny_images))


def test_list_of_png_paths_gives_same_embeddings_as_uint8_array(
    fitted_featurizer, tiny_params, tiny_images, tmp_path
):
    paths = []
    for index, image in enumerate(tiny_images):
        path = tmp_path / f"{index}.png"
        Image.fromarray(image).save(path)
        paths.append(path)

    embeddings = DinoFeaturizer(**tiny_params).fit(paths).transform(paths)

    assert np.array_equal(embeddings, fitted_featurizer.transform(tiny_images))


def test_channels_first_torch_tensor_gives_same_embeddings_as_uint8_array(
    fitted_featurizer, tiny_images
):
    rgb = np.repeat(tiny_images[..., None], 3, axis=-1)
    tensor = torch.from_numpy(rgb).permute(0, 3, 1, 2)

    embeddings = fitted_featurizer.transform(tensor)

    np.testing.assert_array_equal(embeddings, fitted_featurizer.transform(tiny_images))


@pytest.fixture
def image_table(tiny_images, tiny_labels, tmp_path):
    """A DataFrame of PNG paths, a numeric column and the labels."""
    paths = []
    for index, image in enumerate(tiny_images):
        path = tmp_path / f"{index}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return pd.DataFrame({"path": paths, "age": np.arange(len(paths)), "label": tiny_labels})


# One epoch of a depth-2 ViT on 40 tiny images is not meant to learn, only to run.
@pytest.mark.filterwarnings("ignore::sparsam.dino.trainer.CollapseWarning")
@pytest.mark.parametrize("column", ["path", ["path"]], ids=["Series", "one-column DataFrame"])
def test_column_transformer_embeds_an_image_path_column_beside_tabular_columns(
    tiny_params, image_table, column
):
    tiny_params["backbone_kwargs"]["depth"] = 2
    features = ColumnTransformer(
        [("image", DinoFeaturizer(**tiny_params), column), ("age", "passthrough", ["age"])]
    )
    model = make_pipeline(features, SVC())

    model.fit(image_table[["path", "age"]], image_table["label"])

    width = tiny_params["backbone_kwargs"]["embed_dim"]
    assert features.transform(image_table).shape == (len(image_table), width + 1)
    assert set(model.predict(image_table)) <= {0, 1}
