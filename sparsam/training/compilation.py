"""``torch.compile`` for the training loops: the heavy parts of each block, with a fallback.

A vision transformer is a stack of identical blocks. Compiling their parts in place
(``nn.Module.compile``) rather than the whole model makes one compiled graph serve the same
part of every block, so compiling costs about one block's worth of time however deep the model
is (PyTorch's "regional compilation"), and parameter names stay as they are (checkpoints and
saved backbones do not change). The parts are a block's attention, MLP and (XCiT) local patch
interaction, not the block itself: timm gives every block its own stochastic-depth rate, a
float that dynamo would compile into each block's graph, one graph per block; the residual
additions and drop-path masks around the parts stay eager (they are a small share of a step,
and the masks then are the eager run's draws).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch
from torch import nn

__all__ = [
    "CompileFallbackWarning",
    "RegionalCompilation",
    "compiled_regions",
    "forward_restorer",
    "repeated_blocks",
    "resolve_compile",
]

T = TypeVar("T")

# Inductor draws random numbers (timm's drop-path) with its own generator unless told to call
# torch's: with this, a compiled run draws the same drop-path masks as an eager run of the same
# seed, so both follow the same loss curve up to float rounding.
COMPILE_OPTIONS = {"fallback_random": True}
# The backend torch.compile uses; a module attribute so that a test can make compiling fail.
BACKEND: str | Callable = "inductor"


class CompileFallbackWarning(UserWarning):
    """``torch.compile`` failed; training continues without compiling."""


def resolve_compile(compile: bool | str, device: torch.device) -> bool:
    """Whether ``compile`` (True, False or "auto") compiles on ``device``.

    "auto" compiles where compiling was measured to pay: nowhere yet. On 2 CPU cores (AMD
    EPYC) a compiled DINO step of vit_tiny at 64 tokens ran 1.01 times as fast as an eager
    one, after 26 s of compiling: it does not pay there (``benchmarks/RESULTS.md``);
    on a GPU, where the fused kernels should gain more, the side-by-side measurement of
    ``benchmarks/gpu_check.sh`` has not run yet, and "auto" turns on for CUDA once it shows
    a gain. True compiles on any device.
    """
    if compile == "auto":
        return device.type in AUTO_COMPILE_DEVICES
    return bool(compile)


# Device types on which compile="auto" compiles: those where it was measured to pay.
AUTO_COMPILE_DEVICES: frozenset[str] = frozenset()


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of ``model``'s stacks: members of a ModuleList or Sequential of one class.

    A stack is an ``nn.ModuleList`` or ``nn.Sequential`` of at least 2 modules that are all
    of the same class (timm's ``blocks``, XCiT's ``cls_attn_blocks``); stacks inside a block
    already found are not searched.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.ModuleList([nn.ReLU(), nn.ReLU()]))
    >>> repeated_blocks(model)
    [ReLU(), ReLU()]
    """
    found: list[nn.Module] = []

    def search(module: nn.Module) -> None:
        children = list(module.children())
        is_stack = isinstance(module, nn.ModuleList | nn.Sequential) and len(children) >= 2
        if is_stack and len({type(child) for child in children}) == 1:
            found.extend(children)
            return
        for child in children:
            search(child)

    search(model)
    return found


def compiled_regions(model: nn.Module) -> list[nn.Module]:
    """What to compile of ``model``: the parts of its `repeated_blocks` that compute.

    A part is a child of a block that holds a linear or convolution layer and no
    stochastic depth (timm's ``DropPath``, recognised by its float ``drop_prob``); a child
    with stochastic depth inside is searched in turn. Norms, layer scales, identities and the
    drop-path layers themselves stay uncompiled.

    Examples
    --------
    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", depth=2, drop_path_rate=0.1)
    >>> [type(part).__name__ for part in compiled_regions(vit)]
    ['Attention', 'Mlp', 'Attention', 'Mlp']
    """
    return [part for block in repeated_blocks(model) for part in _computing_parts(block)]


def _computing_parts(module: nn.Module) -> list[nn.Module]:
    parts = []
    for child in module.children():
        if not any(isinstance(layer, _COMPUTING_LAYERS) for layer in child.modules()):
            continue
        if any(isinstance(getattr(layer, "drop_prob", None), float) for layer in child.modules()):
            parts.extend(_computing_parts(child))
        else:
            parts.append(child)
    return parts


_COMPUTING_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class RegionalCompilation:
    """Compiles modules in place for the duration of a ``with`` block; eager again after it.

    Parameters
    ----------
    modules : iterable of nn.Module
        What to compile, each on its own (usually `compiled_regions` plus a head).
    enabled : bool
        False makes every method a no-op, so that the caller needs no second code path.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> block = nn.Linear(4, 4)
    >>> with RegionalCompilation([block], enabled=False) as compilation:
    ...     output = compilation.run(lambda: block(torch.ones(1, 4)))
    >>> tuple(output.shape)
    (1, 4)
    """

    def __init__(self, modules: Iterable[nn.Module], enabled: bool) -> None:
        self.modules = list(modules) if enabled else []
        self.active = False

    def __enter__(self) -> RegionalCompilation:
        for module in self.modules:
            # dynamic=False: DINO's two crop sizes give two static graphs per block, which
            # run faster than one graph with symbolic shapes.
            module.compile(backend=BACKEND, dynamic=False, options=_options())
        self.active = bool(self.modules)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._remove()

    def run(self, function: Callable[[], T], restore: Callable[[], None] | None = None) -> T:
        """``function()``; if compiling fails, ``restore()`` and ``function()`` uncompiled.

        Compiling happens at a block's first call with new shapes or modes, so any forward
        pass may fail to compile. Then the modules stay uncompiled from here on, one
        `CompileFallbackWarning` says so, ``restore`` (if given) puts back what the failed
        attempt changed (BatchNorm statistics, random generators), and ``function`` runs
        again. Errors that are not compile errors (out of memory, say) propagate unchanged.
        """
        if not self.active:
            return function()
        try:
            return function()
        except torch._dynamo.exc.TorchDynamoException as error:
            warnings.warn(
                f"torch.compile failed ({_root_cause(error)}); "
                "training continues without compiling, which is slower but gives the same "
                "results. Pass compile=False to skip the attempt.",
                CompileFallbackWarning,
                stacklevel=2,
            )
            self._remove()
            if restore is not None:
                restore()
            return function()

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Run the modules uncompiled inside the block (inference that would compile anew)."""
        compiled = [module._compiled_call_impl for module in self.modules]
        for module in self.modules:
            module._compiled_call_impl = None
        try:
            yield
        finally:
            for module, call in zip(self.modules, compiled, strict=True):
                module._compiled_call_impl = call

    def _remove(self) -> None:
        for module in self.modules:
            module._compiled_call_impl = None
        self.modules = []
        self.active = False


def forward_restorer(modules: Iterable[nn.Module], device: torch.device) -> Callable[[], None]:
    """A function that puts back what a forward pass through ``modules`` may change.

    That is the modules' buffers (BatchNorm's running statistics, DINO's centre) and torch's
    global CPU and ``device`` generators (drop-path), as they are now: for
    `RegionalCompilation.run`, so that a step repeated after a failed compile equals an
    uncompiled step.
    """
    buffers = [buffer for module in modules for buffer in module.buffers()]
    saved = [buffer.clone() for buffer in buffers]
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore() -> None:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)

    return restore


def _options() -> dict | None:
    return COMPILE_OPTIONS if BACKEND == "inductor" else None


def _root_cause(error: BaseException) -> str:
    """The exception behind a dynamo error, as "Type: first line of its message"."""
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"
