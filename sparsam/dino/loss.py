"""The DINO loss: cross-entropy between the centred, sharpened teacher and the student."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DinoLoss", "koleo_loss"]


class DinoLoss(nn.Module):
    """Cross-entropy over all pairs of different views, with teacher centering.

    Parameters
    ----------
    out_dim : int
        Dimension of the head's output.
    student_temperature : float, default=0.1
        Temperature of the student softmax.
    center_momentum : float, default=0.9
        EMA momentum of the centre subtracted from the teacher's output.

    Attributes
    ----------
    center : Tensor of shape (1, out_dim)
        Running mean of the teacher's output (teacher outputs only, never the student's).
    """

    center: torch.Tensor

    def __init__(
        self, out_dim: int, student_temperature: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.student_temperature = student_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student_output: torch.Tensor,
        teacher_output: torch.Tensor,
        teacher_temperature: float,
        n_crops: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for one step, and updates the centre.

        Parameters
        ----------
        student_output : Tensor of shape (n_crops * b, out_dim)
            Student logits for all crops, globals first, crop-major.
        teacher_output : Tensor of shape (n_global * b, out_dim)
            Teacher logits for the global crops, crop-major.
        teacher_temperature : float
            Temperature of the teacher softmax for this step.
        n_crops : int
            Total number of crops (global + local).

        Returns
        -------
        loss : Tensor
            Mean cross-entropy over all (teacher view, student view) pairs of different views.
        stats : dict of Tensor
            ``teacher_entropy`` (mean entropy of the teacher distribution per image; ln(out_dim)
            means uniform collapse), ``teacher_mean_entropy`` (entropy of the batch-averaged
            teacher distribution; near 0 means every image gets the same prototype: one-hot
            collapse) and ``kl`` (mean KL divergence from teacher to student).
        """
        n_global = teacher_output.shape[0] * n_crops // student_output.shape[0]
        student_log_probs = torch.log_softmax(
            student_output.float() / self.student_temperature, dim=-1
        ).chunk(n_crops)
        teacher_probs = torch.softmax(
            (teacher_output.float() - self.center) / teacher_temperature, dim=-1
        ).detach()
        teacher_views = teacher_probs.chunk(n_global)
        # cross_entropy[i, j]: teacher view i against student view j
        cross_entropy = torch.stack(
            [
                torch.stack([-(t * s).sum(-1).mean() for s in student_log_probs])
                for t in teacher_views
            ]
        )
        different_views = ~torch.eye(
            n_global, n_crops, dtype=torch.bool, device=cross_entropy.device
        )
        # A sum over a mask rather than indexing with it: indexing would read the number of
        # selected pairs on the host, a wait for the GPU at every step.
        n_pairs = n_global * n_crops - min(n_global, n_crops)
        loss = torch.where(different_views, cross_entropy, 0.0).sum() / n_pairs
        self.update_center(teacher_output)
        with torch.no_grad():
            teacher_entropy = -(teacher_probs * torch.log(teacher_probs + 1e-12)).sum(-1).mean()
            mean_probs = teacher_probs.mean(0)
            teacher_mean_entropy = -(mean_probs * torch.log(mean_probs + 1e-12)).sum()
        stats = {
            "teacher_entropy": teacher_entropy,
            "teacher_mean_entropy": teacher_mean_entropy,
            "kl": loss.detach() - teacher_entropy,
        }
        return loss, stats

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """EMA update of the centre with the batch mean of the teacher's output.

        The batch mean is all-reduced only when a process group is initialised, so a
        single process never needs ``torch.distributed``.
        """
        batch_sum = teacher_output.float().sum(dim=0, keepdim=True)
        count = teacher_output.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(
            batch_sum / count, alpha=1 - self.center_momentum
        )

    @property
    def max_entropy(self) -> float:
        """ln(out_dim): the teacher entropy of a uniformly collapsed model."""
        return math.log(self.out_dim)


def koleo_loss(embeddings: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate of L2-normalised embeddings, as a loss.

    ``-mean(log(distance to the nearest other embedding in the batch))``: minimising it
    spreads the CLS embeddings over the sphere. DINOv2 (Oquab et al. 2023) adds it with
    weight 0.1; on small data sets it keeps DINO from collapsing all images to one point.

    Parameters
    ----------
    embeddings : Tensor of shape (b, d)
        Embeddings of one view of b different images (b >= 2).

    Returns
    -------
    loss : Tensor
    """
    if embeddings.shape[0] < 2:
        raise ValueError(
            f"koleo_loss needs the embeddings of at least 2 images, got {embeddings.shape[0]}: "
            "with one there is no nearest neighbour, and the term would be constant."
        )
    x = nn.functional.normalize(embeddings.float(), dim=-1, p=2)
    with torch.no_grad():
        similarity = x @ x.T
        similarity.fill_diagonal_(-2.0)
        nearest = similarity.argmax(dim=1)
    distance = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distance + eps).mean()
