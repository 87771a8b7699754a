"""DinoFeaturizer and SupervisedClassifier against scikit-learn's estimator checks.

The checks feed tabular data. Those that fit on it must fail, and fail with sparsam's own
refusal of that input (its message found in the exception or the exception it was raised
from), never with anything else: a check listed here that passes, or fails another way, fails
the test. The contracts that matter for images (parameters and ``__dict__`` unchanged by
``fit``, order and subset invariance, dtypes) are tested on images in
``test_image_contracts.py``.
"""

import re

import pytest
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
    in ``EXPECTED_FAILED_CHECKS`` with the reason it does not apply to images.
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


# The refusal each reason stands for, as sparsam words it.
REFUSALS = {
    TABULAR: r"X has shape \(\d+, \d+\); expected an array of shape \(n, H, W\)",
    "sparse matrices hold no images": r"X has type csr_\w+; expected a numpy array",
}
OTHER_REFUSALS = {
    "check_dtype_object": r"X is a 2-D array of dtype object with shape .*; expected a 1-D array",
    "check_transformer_data_not_an_array": r"X has type _NotAnArray; expected a numpy array",
    "check_classifier_data_not_an_array": r"X has type _NotAnArray; expected a numpy array",
}


def check_name(check) -> str:
    """The check's name as scikit-learn's test ids spell it."""
    keywords = ",".join(f"{key}={value}" for key, value in check.keywords.items())
    return check.func.__name__ + (f"({keywords})" if keywords else "")


def messages(error: BaseException | None) -> list[str]:
    """The messages of ``error`` and of every exception it was raised from or during."""
    found = []
    while error is not None:
        found.append(str(error))
        error = error.__cause__ or error.__context__
    return found


def run_check(estimator, check, expected_failures: dict[str, str]) -> None:
    name = check_name(check)
    # A variant (readonly_memmap=True) fails as its plain check does unless listed itself.
    reason = expected_failures.get(name, expected_failures.get(check.func.__name__))
    if reason is None:
        check(estimator)
        return
    pattern = OTHER_REFUSALS.get(check.func.__name__) or REFUSALS.get(reason, REFUSALS[TABULAR])
    with pytest.raises(Exception) as caught:
        check(estimator)
    found = messages(caught.value)
    assert any(re.search(pattern, message) for message in found), (
        f"{name} was expected to fail with sparsam's refusal ({reason}); it failed with {found}"
    )


@parametrize_with_checks([CheckedDinoFeaturizer(**CHECK_PARAMS)])
def test_follows_scikit_learn_conventions(estimator, check):
    run_check(estimator, check, EXPECTED_FAILED_CHECKS)


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


@parametrize_with_checks([CheckedSupervisedClassifier(**CLASSIFIER_PARAMS)])
def test_classifier_follows_scikit_learn_conventions(estimator, check):
    run_check(estimator, check, CLASSIFIER_EXPECTED_FAILED_CHECKS)
