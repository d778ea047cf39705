"""Poincare-ball operations for the Hyp baseline (Ermolov et al. 2022, Hyp-ViT).

The arithmetic follows the ``hyptorch`` package that the official PUMA code ships
(``hyptorch/pmath.py``, ``hyptorch/nn.py``), including its small constants: the Mobius sum's
denominator gets ``+ 1e-5``, artanh clamps to ``1 - 1e-5``, and points are projected just inside
the ball. The model maps its Euclidean embedding onto the ball with :class:`ToPoincare` (feature
clipping to radius ``clip_r``, exponential map at 0, projection); the official code builds it
with ``riemannian=False``, i.e. plain Euclidean gradients. The official evaluation ranks ball
points by their raw dot product (``helpers.get_accuracy``: ``F.linear``), and the ensemble of
dataset-specific hyperbolic models averages with :func:`poincare_mean`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["expmap0", "project", "mobius_add", "poincare_distance_matrix", "poincare_mean",
           "ToPoincare"]

_EPS = 1e-5


def _artanh(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(-1 + _EPS, 1 - _EPS)
    return 0.5 * (torch.log1p(x) - torch.log1p(-x))


def project(x: torch.Tensor, c: float) -> torch.Tensor:
    """Pull points with norm above (1 - 1e-3) / sqrt(c) back onto that radius; (..., D)."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    maxnorm = (1 - 1e-3) / c**0.5
    return torch.where(norm > maxnorm, x / norm * maxnorm, x)


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """Exponential map at the origin: (N, D) tangent vectors -> points inside the ball."""
    sqrt_c = c**0.5
    norm = u.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return torch.tanh((sqrt_c * norm).clamp(-15, 15)) * u / (sqrt_c * norm)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Mobius addition x (+) y, broadcasting over leading dims; (..., D)."""
    xy = (x * y).sum(-1, keepdim=True)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c**2 * x2 * y2 + _EPS)


def poincare_distance_matrix(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """(N, D), (M, D) ball points -> (N, M) geodesic distances 2/sqrt(c) artanh(sqrt(c)|-x(+)y|)."""
    sqrt_c = c**0.5
    diff = mobius_add(-x[:, None, :], y[None, :, :], c)
    return 2 / sqrt_c * _artanh(sqrt_c * diff.norm(dim=-1))


def poincare_mean(x: torch.Tensor, c: float, dim: int = 0) -> torch.Tensor:
    """Einstein midpoint of ball points along ``dim`` (hyptorch ``poincare_mean``).

    Each point is mapped to the Klein model (k = 2x / (1 + c|x|^2)), the points are averaged
    with their Lorentz factors gamma = 1 / sqrt(1 - c|k|^2) as weights, and the mean is mapped
    back (x = k / (1 + sqrt(1 - c|k|^2))). E.g. (M models, N, D) -> (N, D) with ``dim=0``.
    """
    k = 2 * x / (1 + c * x.pow(2).sum(-1, keepdim=True))
    gamma = 1 / torch.sqrt(1 - c * k.pow(2).sum(-1, keepdim=True))
    mean = (gamma * k).sum(dim, keepdim=True) / gamma.sum(dim, keepdim=True)
    back = mean / (1 + torch.sqrt(1 - c * mean.pow(2).sum(-1, keepdim=True)))
    return back.squeeze(dim)


class ToPoincare(nn.Module):
    """Clip features to norm ``clip_r``, map them onto the ball of curvature ``-c``, project.

    Shapes: (B, D) -> (B, D), every row of norm below 1 / sqrt(c).
    """

    def __init__(self, c: float = 0.1, clip_r: float = 2.3) -> None:
        super().__init__()
        self.c, self.clip_r = c, clip_r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(dim=-1, keepdim=True) + _EPS
        x = x * torch.clamp(self.clip_r / norm, max=1.0)
        return project(expmap0(x, self.c), self.c)
