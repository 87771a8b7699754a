"""``compile=``: the training forward through torch.compile, block by block, with a fallback.

Most tests use torch's "aot_eager" backend: it runs dynamo and AOTAutograd, where a compiled
training step can part from the eager one (random draws, BatchNorm's in-place statistics,
DDP), in seconds; inductor's code generation is covered by one slow test and by the GPU check
(``benchmarks/gpu_check.sh``).
"""

import warnings

import numpy as np
import pytest
import timm
import torch

from sparsam import DinoFeaturizer, SupervisedClassifier
from sparsam.training import compilation
from sparsam.training.compilation import (
    CompileFallbackWarning,
    RegionalCompilation,
    compiled_regions,
    repeated_blocks,
    resolve_compile,
)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(compilation, "BACKEND", "aot_eager")


@pytest.fixture
def failing_backend(monkeypatch):
    calls = []

    def backend(graph_module, example_inputs):
        calls.append(graph_module)
        raise RuntimeError("no C++ compiler on this machine")

    monkeypatch.setattr(compilation, "BACKEND", backend)
    return calls


def teacher_weights(featurizer):
    return {name: value.clone() for name, value in featurizer.backbone_.state_dict().items()}


def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_auto_compiles_only_on_the_devices_where_it_was_measured_to_pay(monkeypatch):
    assert resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile("auto", torch.device("cuda")) is False
    monkeypatch.setattr(compilation, "AUTO_COMPILE_DEVICES", frozenset({"cuda"}))
    assert resolve_compile("auto", torch.device("cuda")) is True
    assert resolve_compile(True, torch.device("cpu")) is True
    assert resolve_compile(False, torch.device("cuda")) is False


def test_repeated_blocks_are_vits_blocks_and_both_stacks_of_xcit():
    vit = timm.create_model("vit_tiny_patch16_224", depth=3, img_size=16, patch_size=4)
    assert repeated_blocks(vit) == list(vit.blocks)
    xcit = timm.create_model("xcit_nano_12_p8_224", depth=2, img_size=16)
    assert repeated_blocks(xcit) == [*xcit.blocks, *xcit.cls_attn_blocks]


def test_the_compiled_regions_are_the_parts_of_each_block_that_compute():
    xcit = timm.create_model("xcit_nano_12_p8_224", depth=2, img_size=16, drop_path_rate=0.1)
    expected = [
        part for block in xcit.blocks for part in (block.attn, block.local_mp, block.mlp)
    ] + [part for block in xcit.cls_attn_blocks for part in (block.attn, block.mlp)]
    assert compiled_regions(xcit) == expected


@pytest.mark.parametrize("architecture", ["vit_tiny_patch16_224", "xcit_small_12_p8_224"])
def test_compiling_costs_the_same_number_of_graphs_however_deep_the_model(
    architecture, tiny_params, tiny_images, aot_eager
):
    # timm gives every block its own drop-path rate: compiled whole, each block would be a
    # graph of its own (and past dynamo's 8 recompiles, silently eager).
    from torch._dynamo.utils import counters

    graphs = []
    for depth in (2, 4):
        torch._dynamo.reset()
        counters.clear()
        kwargs = {**tiny_params["backbone_kwargs"], "depth": depth}
        if architecture.startswith("xcit"):
            del kwargs["patch_size"]
        params = {**tiny_params, "backbone": architecture, "backbone_kwargs": kwargs}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            DinoFeaturizer(**params, drop_path_rate=0.2, compile=True).fit(tiny_images)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] == graphs[1] > 0


def test_compiling_leaves_parameter_names_unchanged_and_is_undone_on_exit():
    model = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=16, patch_size=4)
    names = list(model.state_dict())
    with RegionalCompilation(repeated_blocks(model), enabled=True):
        assert all(block._compiled_call_impl is not None for block in model.blocks)
        assert list(model.state_dict()) == names
    assert all(block._compiled_call_impl is None for block in model.blocks)


@pytest.mark.parametrize("params_fixture", ["small_xcit_params", "deep_vit_params"])
def test_compiled_fit_follows_the_eager_loss_curve_and_weights(
    params_fixture, request, tiny_images, aot_eager
):
    # XCiT: BatchNorm statistics updated inside compiled blocks; the ViT: drop-path masks
    # drawn inside them, which must be the eager run's draws for the curves to agree.
    params = {**request.getfixturevalue(params_fixture), "epochs": 2}
    eager = DinoFeaturizer(**params, compile=False).fit(tiny_images)
    compiled = DinoFeaturizer(**params, compile=True).fit(tiny_images)
    np.testing.assert_allclose(compiled.history_["loss"], eager.history_["loss"], rtol=1e-5)
    for name, value in teacher_weights(eager).items():
        torch.testing.assert_close(teacher_weights(compiled)[name], value, rtol=1e-4, atol=1e-5)


def test_compiled_fit_leaves_a_plain_model_that_pickles(tiny_params, tiny_images, aot_eager):
    import pickle

    featurizer = DinoFeaturizer(**tiny_params, compile=True).fit(tiny_images)
    assert all(module._compiled_call_impl is None for module in featurizer.backbone_.modules())
    restored = pickle.loads(pickle.dumps(featurizer))
    np.testing.assert_array_equal(
        restored.transform(tiny_images), featurizer.transform(tiny_images)
    )


def test_a_failed_compile_warns_once_and_trains_exactly_as_eager(
    small_xcit_params, tiny_images, failing_backend
):
    # XCiT's patch embedding (uncompiled) updates BatchNorm statistics before the first block
    # fails to compile: without restoring them the repeated step would count them twice.
    with pytest.warns(CompileFallbackWarning, match="no C\\+\\+ compiler") as caught:
        compiled = DinoFeaturizer(**small_xcit_params, compile=True).fit(tiny_images)
    assert len([w for w in caught if w.category is CompileFallbackWarning]) == 1
    assert failing_backend, "the backend was never asked to compile"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        eager = DinoFeaturizer(**small_xcit_params, compile=False).fit(tiny_images)
    assert_same_weights(teacher_weights(compiled), teacher_weights(eager))
    assert compiled.history_["loss"] == eager.history_["loss"]


def test_a_failed_compile_falls_back_in_the_supervised_classifier(
    tiny_images, tiny_labels, failing_backend
):
    params = {
        "backbone": "xcit_small_12_p8_224",
        "backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2},
        "image_size": 16,
        "epochs": 2,
        "batch_size": 8,
        "random_state": 0,
        "verbose": 0,
    }
    with pytest.warns(CompileFallbackWarning):
        compiled = SupervisedClassifier(**params, compile=True).fit(tiny_images, tiny_labels)
    eager = SupervisedClassifier(**params, compile=False).fit(tiny_images, tiny_labels)
    assert compiled.history_["loss"] == eager.history_["loss"]
    np.testing.assert_array_equal(
        compiled.predict_proba(tiny_images), eager.predict_proba(tiny_images)
    )


def test_errors_that_are_not_compile_errors_propagate():
    block = torch.nn.Linear(2, 2)

    def out_of_memory():
        raise torch.OutOfMemoryError("CUDA out of memory")

    with (
        RegionalCompilation([block], enabled=True) as compiled,
        pytest.raises(torch.OutOfMemoryError),
    ):
        compiled.run(out_of_memory)


def test_compile_parameter_is_validated(tiny_params, tiny_images):
    with pytest.raises(ValueError, match="compile"):
        DinoFeaturizer(**tiny_params, compile="always").fit(tiny_images)


@pytest.mark.slow
def test_inductor_compiled_fit_follows_the_eager_loss_curve(deep_vit_params, tiny_images):
    # Inductor generates C++ here (a compiler must be installed); fallback_random makes its
    # drop-path draws those of the eager run.
    params = {**deep_vit_params, "epochs": 2}
    eager = DinoFeaturizer(**params, compile=False).fit(tiny_images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        compiled = DinoFeaturizer(**params, compile=True).fit(tiny_images)
    np.testing.assert_allclose(compiled.history_["loss"], eager.history_["loss"], rtol=1e-4)
    np.testing.assert_allclose(
        compiled.transform(tiny_images), eager.transform(tiny_images), rtol=1e-3, atol=1e-4
    )
