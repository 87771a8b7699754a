"""Where the class token looks: the self-attention maps of DINO's best-known figure.

Caron et al. (2021, Figure 1 and ``visualize_attention.py``) show, for each head of the last
block, the attention of the CLS query to the patch tokens, reshaped to the patch grid: without
labels, the heads of a DINO-trained ViT pick out the objects of an image. `cls_attention`
computes those maps for a timm vision transformer. In a ViT they come from the last block's
self-attention; XCiT's self-attention is cross-covariance (over channels, not tokens), and
its class token meets the patches only in the class-attention blocks (CaiT's), so its maps
come from the last of those, where the CLS query attends to all tokens.

The attention weights are computed from the block's own input and projections (the query
and key of timm's ``Attention`` or ``ClassAttn``, with their q/k norms and scale), caught by
a hook during an ordinary forward pass: timm's fused attention never materialises the
weights, and the model's ``forward`` stays as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._estimator import batched_outputs, resolve_device
from .data import as_image_source, load_images
from .readout import token_blocks

__all__ = ["ClsAttention", "attention_maps", "cls_attention", "mass_threshold"]


class ClsAttention(nn.Module):
    """The CLS query's attention to the patch tokens in the last block, one map per head.

    Parameters
    ----------
    backbone : nn.Module
        A timm ViT (its last block's ``attn``, a timm ``Attention``) or XCiT (its last
        class-attention block's ``attn``, a ``ClassAttn``) with a class token.

    Attributes
    ----------
    heads : int
        Attention heads of the last block: maps per image.
    n_prefix_tokens : int
        Tokens before the patches in that block (the class token and any register tokens):
        what each head attends to besides the patches.

    Notes
    -----
    ``forward`` takes images normalised as the backbone expects, ``(b, 3, H, W)``, and
    returns ``(b, heads, H // patch, W // patch)``: row ``i``, column ``j`` is the attention
    weight of the CLS query to the patch at that place of the grid. A head's weights over
    all tokens sum to 1, so a map sums to 1 minus the attention the class token pays to the
    prefix tokens (itself, registers). Put the backbone in eval mode first (no drop-path).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        stack_name, stack = token_blocks(backbone)
        self.attention = getattr(stack[-1], "attn", None)
        kind = type(self.attention).__name__
        if stack_name == "cls_attn_blocks":
            # XCiT prepends its class token alone in the class-attention blocks.
            self.n_prefix_tokens = 1
            expected = ("q", "k")
        else:
            if getattr(backbone, "cls_token", None) is None:
                raise ValueError(
                    f"{type(backbone).__name__} has no class token (cls_token is None): there "
                    "is no CLS attention to show; expected a ViT built with a class token."
                )
            self.n_prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 1))
            expected = ("qkv",)
        if not all(isinstance(getattr(self.attention, name, None), nn.Linear) for name in expected):
            raise ValueError(
                f"The last block of {type(backbone).__name__}.{stack_name} has attention {kind} "
                f"without the projection(s) {', '.join(expected)}; expected timm's Attention "
                "(ViT) or ClassAttn (XCiT)."
            )
        self.heads = int(self.attention.num_heads)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of the patch grid of an image ``height x width``."""
        patch = self.backbone.patch_embed.patch_size
        rows, columns = patch if isinstance(patch, tuple | list) else (patch, patch)
        return height // int(rows), width // int(columns)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs: list[torch.Tensor] = []

        def catch(module: nn.Module, arguments: tuple) -> None:
            inputs.append(arguments[0])

        handle = self.attention.register_forward_pre_hook(catch)
        try:
            self.backbone.forward_features(images)
        finally:
            handle.remove()
        weights = self._cls_weights(inputs[-1])[..., self.n_prefix_tokens :]
        rows, columns = self.grid(*images.shape[-2:])
        if weights.shape[-1] != rows * columns:
            raise ValueError(
                f"{type(self.backbone).__name__} made {weights.shape[-1]} patch tokens of "
                f"{tuple(images.shape[-2:])} images; expected a {rows} x {columns} grid."
            )
        return weights.reshape(len(images), self.heads, rows, columns)

    def _cls_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """Softmax weights ``(b, heads, tokens)`` of the CLS query over the block's input."""
        attention = self.attention
        batch, n_tokens, _ = tokens.shape
        if hasattr(attention, "qkv"):
            # timm's Attention: one projection, split as its forward splits it.
            qkv = attention.qkv(tokens).reshape(batch, n_tokens, 3, self.heads, attention.head_dim)
            query, key = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
            query, key = attention.q_norm(query)[:, :, :1], attention.k_norm(key)
        else:
            # ClassAttn: the class token (token 0) is the only query.
            head_dim = tokens.shape[-1] // self.heads
            query = attention.q(tokens[:, :1]).reshape(batch, 1, self.heads, head_dim)
            key = attention.k(tokens).reshape(batch, n_tokens, self.heads, head_dim)
            query, key = query.transpose(1, 2), key.transpose(1, 2)
        scores = (query * attention.scale) @ key.transpose(-2, -1)
        # In float32: a bf16 softmax over hundreds of tokens would blur small weights.
        return scores.float().softmax(dim=-1)[:, :, 0]


def cls_attention(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per-head attention of the class token to the patches in the last block.

    Parameters
    ----------
    backbone : nn.Module
        A timm ViT or XCiT with a class token, in eval mode.
    images : Tensor of shape (n, 3, H, W)
        Images normalised as the backbone expects (``DinoFeaturizer.data_config_``'s mean
        and std); H and W multiples of the patch size.

    Returns
    -------
    Tensor of shape (n, heads, H // patch, W // patch), float32
        See `ClsAttention`: each head's weights over the patches sum to 1 minus its weight on
        the prefix tokens (class token, registers).

    Examples
    --------
    >>> import timm, torch
    >>> vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32,
    ...                         patch_size=8, depth=2, embed_dim=32, num_heads=2).eval()
    >>> maps = cls_attention(vit, torch.randn(1, 3, 32, 32))
    >>> tuple(maps.shape)
    (1, 2, 4, 4)
    >>> bool((maps.sum((-2, -1)) < 1).all())
    True
    """
    with torch.no_grad():
        return ClsAttention(backbone)(images)


def attention_maps(featurizer: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """The images as the featurizer's backbone sees them, and its CLS attention maps.

    The images are resized and normalised as ``transform`` does (``data_config_``), and run
    with the featurizer's ``batch_size``, ``device``, ``precision`` and ``num_workers``.

    Parameters
    ----------
    featurizer : DinoFeaturizer
        A fitted featurizer (``backbone_`` a timm ViT or XCiT with a class token).
    X : array, tensor, list of paths, ...
        The images, in any form ``fit`` accepts.

    Returns
    -------
    images : ndarray of shape (n, S, S, 3), uint8
        The resized images (``S = data_config_["image_size"]``), before normalisation.
    maps : ndarray of shape (n, heads, S // patch, S // patch), float32
        `cls_attention` of each image.
    """
    check_is_fitted(featurizer, "backbone_")
    config = featurizer.data_config_
    size = int(config["image_size"])
    # Decoded once at the backbone's size: the maps and the picture are of the same pixels.
    pixels = load_images(as_image_source(X), size)
    attention = ClsAttention(featurizer.backbone_.eval())
    rows, columns = attention.grid(size, size)
    flat = batched_outputs(
        nn.Sequential(attention, nn.Flatten()),
        as_image_source(pixels),
        config,
        attention.heads * rows * columns,
        batch_size=featurizer.batch_size,
        num_workers=featurizer.num_workers,
        device=resolve_device(featurizer.device),
        precision=featurizer.precision,
        verbose=0,
        description="attention",
    )
    maps = flat.reshape(len(pixels), attention.heads, rows, columns)
    return pixels.permute(0, 2, 3, 1).numpy(), maps


def mass_threshold(maps: np.ndarray, fraction: float) -> np.ndarray:
    """The largest weights of each map that together hold ``fraction`` of its mass.

    DINO's ``--threshold`` (``visualize_attention.py``, 0.6 in the paper's figures): the
    patches sorted by weight, the smallest set of the largest ones whose share of the map's
    sum exceeds ``1 - fraction`` when counted from the smallest up, i.e. reaches ``fraction``.

    Parameters
    ----------
    maps : ndarray of shape (..., h, w)
        Non-negative maps, e.g. `cls_attention`'s.
    fraction : float
        Share of each map's mass to keep, in (0, 1].

    Returns
    -------
    ndarray of bool, shape of ``maps``

    Examples
    --------
    >>> mass_threshold(np.array([[0.5, 0.3], [0.15, 0.05]]), 0.6).astype(int).tolist()
    [[1, 1], [0, 0]]
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    maps = np.asarray(maps, dtype=np.float64)
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    order = np.argsort(flat, axis=1, kind="stable")
    ascending = np.take_along_axis(flat, order, axis=1)
    total = np.maximum(ascending.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    keep_sorted = np.cumsum(ascending / total, axis=1) > 1 - fraction
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    return keep.reshape(maps.shape)
