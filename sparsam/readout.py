"""Which tokens of which blocks become the features: DINO's evaluation read-out.

``transform`` has always returned the last block's CLS token, as timm's ``forward`` does. DINO's
own evaluation reads more: for ViT-S it concatenates the CLS tokens of the last 4 blocks, for
ViT-B the CLS token with the mean of the patch tokens (Caron et al. 2021, ``eval_linear.py``:
``get_intermediate_layers``, each block's output through the final norm). On small data sets
the last CLS token can discard what earlier blocks learned (issue 18: 0.40 against 0.63 for
the 4-block read-out at one label per class on a held-out colour-texture set). `ReadOut` wraps
a timm vision transformer and returns, for each of its last ``n_last_blocks`` blocks, the CLS
token, the mean of the patch tokens, or both, concatenated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["POOLINGS", "ReadOut", "token_blocks"]

# "cls": the class token; "mean": the mean of the patch tokens; "cls+mean": both, CLS first.
POOLINGS: dict[str, tuple[str, ...]] = {
    "cls": ("cls",),
    "mean": ("mean",),
    "cls+mean": ("cls", "mean"),
}


def token_blocks(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of blocks whose outputs hold the CLS token, and its attribute name.

    ViT's ``blocks``; XCiT's ``cls_attn_blocks`` (its CLS token joins only there, after the
    cross-covariance blocks).

    Raises
    ------
    ValueError
        If the backbone has neither (not a timm vision transformer with a class token).
    """
    for name in ("cls_attn_blocks", "blocks"):
        stack = getattr(backbone, name, None)
        if isinstance(stack, nn.ModuleList | nn.Sequential) and len(stack) > 0:
            return name, stack
    raise ValueError(
        f"{type(backbone).__name__} has no 'blocks' or 'cls_attn_blocks' to read tokens from; "
        "pooling other than 'cls' from the last block needs a timm vision transformer "
        "(ViT, XCiT)."
    )


class ReadOut(nn.Module):
    """Features of a timm vision transformer: CLS and/or mean patch token of its last blocks.

    Parameters
    ----------
    backbone : nn.Module
        A timm ViT or XCiT built with ``num_classes=0`` (its ``forward`` returns the last
        block's CLS token after the final norm).
    pooling : {"cls", "mean", "cls+mean"}, default="cls"
        Which tokens of a block: the class token, the mean of the patch tokens (the tokens
        after ``backbone.num_prefix_tokens``), or both.
    n_last_blocks : int, default=1
        How many of the last blocks, earliest first; each block's output goes through the
        backbone's final norm first, as in DINO's ``get_intermediate_layers``.

    Notes
    -----
    ``ReadOut(backbone)`` (CLS of the last block) returns ``backbone(images)`` itself, bit for
    bit. The output has ``n_last_blocks * len(parts) * backbone.num_features`` columns, block
    by block and within a block part by part (`feature_names` names them). The hooks that
    catch the blocks' outputs exist only during a forward pass, so the backbone pickles as
    before.

    Examples
    --------
    >>> import timm, torch
    >>> vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=3, img_size=32)
    >>> readout = ReadOut(vit, pooling="cls+mean", n_last_blocks=2)
    >>> readout.width == 2 * 2 * vit.num_features
    True
    >>> readout.feature_names()[:2]
    ['blocks1_cls0', 'blocks1_cls1']
    """

    def __init__(self, backbone: nn.Module, pooling: str = "cls", n_last_blocks: int = 1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {pooling!r}.")
        if isinstance(n_last_blocks, bool) or not isinstance(n_last_blocks, int):
            raise ValueError(f"n_last_blocks must be a positive int, got {n_last_blocks!r}.")
        self.backbone = backbone
        self.pooling = pooling
        self.n_last_blocks = n_last_blocks
        self.parts = POOLINGS[pooling]
        try:
            self.stack_name, stack = token_blocks(backbone)
        except ValueError:
            # Any backbone can give its forward's output, named as a last-block CLS token.
            if not self._is_plain:
                raise
            self.stack_name, stack = "", [None]
        if not 1 <= n_last_blocks <= len(stack):
            raise ValueError(
                f"n_last_blocks={n_last_blocks}, but {type(backbone).__name__}'s "
                f"{self.stack_name} holds {len(stack)} block(s); expected 1 to {len(stack)}."
            )
        self.block_indices = list(range(len(stack) - n_last_blocks, len(stack)))

    @property
    def width(self) -> int:
        """Number of features: blocks x parts x the backbone's embedding width."""
        return self.n_last_blocks * len(self.parts) * int(self.backbone.num_features)

    def feature_names(self) -> list[str]:
        """One name per column, ``<stack><block>_<part><index>`` (``blocks11_mean0``)."""
        dim = int(self.backbone.num_features)
        return [
            f"{self.stack_name.replace('_', '')}{block}_{part}{index}"
            for block in self.block_indices
            for part in self.parts
            for index in range(dim)
        ]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._is_plain:
            return self.backbone(images)
        with self._caught_outputs() as outputs:
            self.backbone.forward_features(images)
        prefix = int(getattr(self.backbone, "num_prefix_tokens", 1))
        features = []
        for tokens in outputs:
            tokens = self.backbone.norm(tokens)
            for part in self.parts:
                features.append(tokens[:, 0] if part == "cls" else tokens[:, prefix:].mean(1))
        return torch.cat(features, dim=1)

    @property
    def _is_plain(self) -> bool:
        return self.pooling == "cls" and self.n_last_blocks == 1

    @contextlib.contextmanager
    def _caught_outputs(self) -> Iterator[list[torch.Tensor]]:
        stack = getattr(self.backbone, self.stack_name)
        outputs: list[torch.Tensor] = []

        def catch(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            outputs.append(output)

        handles = [stack[index].register_forward_hook(catch) for index in self.block_indices]
        try:
            yield outputs
        finally:
            for handle in handles:
                handle.remove()
