"""The DINO projection head (Caron et al. 2021, section 3.1 and appendix)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DinoHead", "MultiCropModel"]


class DinoHead(nn.Module):
    """MLP with GELU, an L2-normalised bottleneck and a weight-normalised last layer.

    Parameters
    ----------
    in_dim : int
        Width of the backbone's CLS embedding.
    out_dim : int, default=65536
        Number of prototypes (the dimension the DINO loss works in).
    hidden_dim : int, default=2048
        Width of the hidden layers.
    bottleneck_dim : int, default=256
        Width of the L2-normalised bottleneck before the last layer.
    n_layers : int, default=3
        Number of linear layers before the last layer (DINO uses 3).
    norm_last_layer : bool, default=True
        Fix the weight norm's magnitude to 1; DINO reports this stabilises training.

    Attributes
    ----------
    mlp : nn.Sequential
        The layers up to the bottleneck.
    last_layer : nn.Linear
        Weight-normalised through ``torch.nn.utils.parametrizations.weight_norm``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}.")
        if n_layers == 1:
            layers: list[nn.Module] = [nn.Linear(in_dim, bottleneck_dim)]
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(n_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MultiCropModel(nn.Module):
    """Backbone + head applied to a list of crops, one backbone pass per resolution.

    Parameters
    ----------
    backbone : nn.Module
        Maps images (b, 3, H, W) to CLS embeddings (b, d); must accept every crop size.
    head : DinoHead
        Projection head applied to all embeddings at once.
    """

    def __init__(self, backbone: nn.Module, head: DinoHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS embeddings (n_crops * b, d) and head outputs (n_crops * b, out_dim), crop-major."""
        embeddings = []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            embeddings.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        embeddings = torch.cat(embeddings)
        return embeddings, self.head(embeddings)
