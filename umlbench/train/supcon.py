"""The Hyp baseline's loss: the official code's pairwise-view SupCon (``losses.py: SupCon``).

This is not the multi-positive SupCon of Khosla et al. (PML's ``SupConLoss``). The batch arrives
as n classes x ``ipc`` images, each class's images consecutive (the class-unique sampler; the
official ``train.py`` reshapes the batch to (n, ipc, D) by position). For every ordered pair of
views (i, j), i != j, anchor a of view i is classified among the 2n - 1 candidates

    [view j of all n classes] + [view i of the other n - 1 classes]

with logits -d(., .) / tau, the positive being view j of its own class, where d is the
Poincare-ball distance (``hyptorch.pmath.dist_matrix``; with curvature 0 the logits are the raw
dot products). The cross-entropies are averaged over anchors, summed over the ipc (ipc - 1) view
pairs and divided by ipc^2 (the official loop also counts the i == j steps it skips).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from umlbench.errors import UserError
from umlbench.train.hyperbolic import poincare_distance_matrix

__all__ = ["PairwiseSupCon", "views_per_class"]


def views_per_class(labels: torch.Tensor) -> int:
    """Images per class of a batch laid out as consecutive equal-label blocks.

    The block size is the gcd of the run lengths of equal labels (two adjacent blocks of one
    class still give the right size); every block must hold one label.
    """
    change = torch.ones(len(labels), dtype=torch.bool, device=labels.device)
    change[1:] = labels[1:] != labels[:-1]
    starts = torch.nonzero(change).flatten().tolist() + [len(labels)]
    size = 0
    for a, b in zip(starts[:-1], starts[1:]):
        size = math.gcd(size, b - a)
    if size < 2:
        raise UserError(
            "hyp_supcon needs each class's images in consecutive blocks of at least 2 "
            "(train.sampler=unique with train.ipc >= 2, as the official command's IPC 4)"
        )
    return size


class PairwiseSupCon(nn.Module):
    """Official Hyp-ViT SupCon. ``forward(embeddings (B, D), labels (B,)) -> scalar``.

    Args:
        temperature: tau (official 0.1).
        curvature: c of the Poincare ball the embeddings live in; 0 = sphere mode (dot product).
    """

    def __init__(self, temperature: float = 0.1, curvature: float = 0.1) -> None:
        super().__init__()
        self.temperature, self.curvature = temperature, curvature

    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N, D), (M, D) -> (N, M): -distance on the ball, or the dot product when c = 0."""
        if self.curvature == 0:
            return x @ y.T
        return -poincare_distance_matrix(x, y, self.curvature)

    def _pair_loss(self, anchor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        n = anchor.shape[0]
        same_view = self.similarity(anchor, anchor) / self.temperature
        same_view = same_view - 1e9 * torch.eye(n, dtype=same_view.dtype, device=anchor.device)
        cross = self.similarity(anchor, other) / self.temperature
        logits = torch.cat([cross, same_view], dim=1)  # (n, 2n); the positive is column a
        return F.cross_entropy(logits, torch.arange(n, device=anchor.device))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ipc = views_per_class(labels)
        if embeddings.shape[0] % ipc:
            raise UserError(f"hyp_supcon: batch of {embeddings.shape[0]} is not a multiple of "
                            f"{ipc} images per class")
        # At least fp32: the ball distance (artanh near the boundary) is precision-sensitive.
        x = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))
        views = x.view(-1, ipc, x.shape[1])  # (n, ipc, D)
        total = x.new_zeros(())
        for i in range(ipc):
            for j in range(ipc):
                if i != j:
                    total = total + self._pair_loss(views[:, i], views[:, j])
        return total / ipc**2
