"""DinoFeaturizer against scikit-learn's estimator checks."""

from conftest import TINY_PARAMS
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparsam import DinoFeaturizer, SupervisedClassifier

# The conftest's tiny ViT, at depth 2.
CHECK_PARAMS = {
    **TINY_PARAMS,
    "backbone_kwargs": {**TINY_PARAMS["backbone_kwargs"], "depth": 2},
}


class CheckedDinoFeaturizer(DinoFeaturizer):
    """DinoFeaturizer with the tag ``two_d_array=True``, so that scikit-learn yields its checks.

    For an estimator that refuses 2-D arrays, as an image transformer must, scikit-learn
    yields no check but ``check_estimator_cloneable``. The tag is raised here only, so that
    the checks run: those that need no data pass, and every one that fits on data is listed
    in ``expected_failed_checks`` with the reason it does not apply to images.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


TABULAR = (
    "fits on a 2-D array (n_samples, n_features) of tabular values; sparsam's estimators take "
    "images (n, H, W) or (n, H, W, C) and refuse 2-D arrays, naming their shape"
)
EXPECTED_FAILED_CHECKS = {
    name: TABULAR
    for name in (
        "check_complex_data",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
    )
} | {
    "check_estimators_empty_data_messages": (
        "expects sklearn's message for an empty 2-D array; an image array has no feature "
        "axis, and an empty one is refused with 'X is empty' or its shape"
    ),
    "check_n_features_in": (
        "n_features_in_ counts the columns of tabular data; images are resized to "
        "image_size, so their width is no feature count"
    ),
    "check_n_features_in_after_fitting": (
        "n_features_in_ counts the columns of tabular data; images are resized to "
        "image_size, so their width is no feature count"
    ),
    "check_dtype_object": (
        "a 2-D object array of numbers; a 1-D object array is read as file paths and "
        "any other object array refused"
    ),
    "check_transformer_data_not_an_array": (
        "wraps 2-D tabular data in an array-like class; images come as arrays, tensors, "
        "pandas columns or lists"
    ),
    "check_estimator_sparse_array": "sparse matrices hold no images",
    "check_estimator_sparse_matrix": "sparse matrices hold no images",
    "check_estimator_sparse_tag": "sparse matrices hold no images",
}


@parametrize_with_checks(
    [CheckedDinoFeaturizer(**CHECK_PARAMS)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
    xfail_strict=True,
)
def test_follows_scikit_learn_conventions(estimator, check):
    check(estimator)


class CheckedSupervisedClassifier(SupervisedClassifier):
    """SupervisedClassifier with ``two_d_array=True``, for the reason given above."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


CLASSIFIER_PARAMS = {
    "backbone": CHECK_PARAMS["backbone"],
    "backbone_kwargs": CHECK_PARAMS["backbone_kwargs"],
    "image_size": 16,
    "epochs": 1,
    "batch_size": 16,
    "random_state": 0,
    "verbose": 0,
}


CLASSIFIER_EXPECTED_FAILED_CHECKS = (
    {
        name: reason
        for name, reason in EXPECTED_FAILED_CHECKS.items()
        # A classifier checks its labels first: complex and one-sample data fail there, as asked.
        if not name.startswith("check_transformer")
        and name not in ("check_complex_data", "check_fit2d_1sample")
    }
    | {
        name: TABULAR
        for name in (
            "check_classifiers_classes",
            "check_classifiers_train",
            "check_classifiers_train(readonly_memmap=True)",
            "check_classifiers_train(readonly_memmap=True,X_dtype=float32)",
            "check_decision_proba_consistency",
            "check_estimators_pickle(readonly_memmap=True)",
            "check_supervised_y_2d",
        )
    }
    | {
        "check_classifier_data_not_an_array": (
            "wraps 2-D tabular data in an array-like class; images come as arrays, tensors, "
            "pandas columns or lists"
        ),
    }
)


@parametrize_with_checks(
    [CheckedSupervisedClassifier(**CLASSIFIER_PARAMS)],
    expected_failed_checks=lambda estimator: CLASSIFIER_EXPECTED_FAILED_CHECKS,
    xfail_strict=True,
)
def test_classifier_follows_scikit_learn_conventions(estimator, check):
    check(estimator)
