"""Poincare-ball operations for the Hyp baseline (Ermolov et al. 2022, Hyp-ViT).

The model maps its Euclidean embedding onto the ball with ``ToPoincare`` (feature clipping to
radius ``clip_r``, then the exponential map at 0), and SupCon uses the hyperbolic distance.
Evaluation stays cosine, as in the official code.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import BaseDistance
from torch import nn

__all__ = ["expmap0", "mobius_add", "poincare_distance_matrix", "ToPoincare", "PoincareDistance"]

_EPS = 1e-5


def _artanh(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(-1 + _EPS, 1 - _EPS)
    return 0.5 * (torch.log1p(x) - torch.log1p(-x))


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """Exponential map at the origin: (N, D) tangent vectors -> points inside the ball."""
    sqrt_c = c**0.5
    norm = u.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return torch.tanh(sqrt_c * norm) * u / (sqrt_c * norm)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Mobius addition x (+) y, broadcasting over leading dims; (..., D)."""
    xy = (x * y).sum(-1, keepdim=True)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c**2 * x2 * y2).clamp_min(_EPS)


def poincare_distance_matrix(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """(N, D), (M, D) ball points -> (N, M) geodesic distances 2/sqrt(c) artanh(sqrt(c)|-x(+)y|)."""
    sqrt_c = c**0.5
    diff = mobius_add(-x[:, None, :], y[None, :, :], c)
    return 2 / sqrt_c * _artanh(sqrt_c * diff.norm(dim=-1))


class ToPoincare(nn.Module):
    """Clip features to norm ``clip_r`` and map them onto the ball of curvature ``-c``."""

    def __init__(self, c: float = 0.1, clip_r: float = 2.3) -> None:
        super().__init__()
        self.c, self.clip_r = c, clip_r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        x = x * torch.clamp(self.clip_r / norm, max=1.0)
        return expmap0(x, self.c)


class PoincareDistance(BaseDistance):
    """PML distance on the Poincare ball (embeddings must not be normalised)."""

    def __init__(self, c: float = 0.1, **kwargs) -> None:
        super().__init__(normalize_embeddings=False, is_inverted=False, **kwargs)
        self.c = c

    def compute_mat(self, query_emb, ref_emb):
        return poincare_distance_matrix(query_emb, ref_emb, self.c)

    def pairwise_distance(self, query_emb, ref_emb):
        sqrt_c = self.c**0.5
        return 2 / sqrt_c * _artanh(sqrt_c * mobius_add(-query_emb, ref_emb, self.c).norm(dim=-1))
