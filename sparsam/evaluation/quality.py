"""Label-free quality of embeddings: RankMe (Garrido et al. 2023)."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["rankme"]


def rankme(embeddings: torch.Tensor | np.ndarray, eps: float = 1e-7) -> float:
    """Effective rank of a matrix of embeddings, RankMe; no labels needed.

    Garrido, Balestriero, Najman and LeCun, "RankMe: Assessing the downstream performance
    of pretrained self-supervised representations by their rank" (ICML 2023): with the
    singular values ``s_k`` of the embeddings ``Z`` (not centred, as in the paper) and
    ``p_k = s_k / sum(s) + eps``, RankMe is ``exp(-sum_k p_k log p_k)``, the exponential of
    the entropy of the normalised spectrum. Higher means the embeddings spread over more
    dimensions; the paper found that a higher RankMe goes with a higher downstream accuracy
    across the hyperparameters of a self-supervised method, and a fall is a sign of
    dimensional collapse. Computed in float64.

    Parameters
    ----------
    embeddings : Tensor or ndarray of shape (n, d)
        One embedding per row, e.g. ``DinoFeaturizer.transform(images)``; n >= 2.
    eps : float, default=1e-7
        Added to every normalised singular value so that the logarithm of a zero is finite
        (the paper's value).

    Returns
    -------
    float
        Between 1 (all rows on one line) and ``min(n, d)`` (a flat spectrum); an all-zero
        matrix gives 1 and one with a NaN or infinite value gives NaN.

    Raises
    ------
    ValueError
        If ``embeddings`` is not 2-D with at least 2 rows and 1 column.

    Examples
    --------
    >>> import torch
    >>> round(rankme(torch.eye(8)), 3)
    8.0
    >>> round(rankme(torch.ones(5, 3)), 3)
    1.0
    """
    matrix = torch.as_tensor(embeddings).detach()
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 1:
        raise ValueError(
            "rankme needs a 2-D matrix of embeddings (n, d) with at least 2 rows and 1 "
            f"column, got shape {tuple(matrix.shape)}."
        )
    matrix = matrix.to(torch.float64)
    if not bool(torch.isfinite(matrix).all()):
        return math.nan
    singular_values = torch.linalg.svdvals(matrix)
    total = singular_values.sum()
    if total > 0:
        p = singular_values / total + eps
    else:
        p = torch.full_like(singular_values, eps)
    value = math.exp(float(-(p * p.log()).sum()))
    # eps moves the value past its bounds by up to about min(n, d) * eps; the bounds are
    # those of the effective rank the paper defines.
    return min(max(value, 1.0), float(min(matrix.shape)))
