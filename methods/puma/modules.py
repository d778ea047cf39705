"""PUMA's two modules: the stochastic adapter and the conditional prompt pool.

Both follow the official code (models/prompt.py of tjddus9597/PUMA-WACV25); see
``shared/reference/puma-official-code.md`` sections 3.2 and 3.3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

__all__ = ["StochasticAdapter", "PromptPool", "orthogonality_penalty"]


class StochasticAdapter(nn.Module):
    """A(h) = DropPath_p(s * ReLU(h D) U): a bias-free bottleneck, fixed scale ``s``.

    ``U`` starts at zero so the adapter is an exact no-op at initialisation. ``D`` is drawn as
    the official ``tensor_prompt(dim, bottleneck, init='he_uniform')``: ``kaiming_uniform_(a=1)``
    on a (dim, bottleneck) tensor, whose torch fan-in is its second size, so every entry is
    uniform in +-sqrt(3 / bottleneck) (0.153 for 384 -> 128). During training the whole output
    is dropped per sample with probability ``p`` (kept outputs scaled by 1/(1-p)); at test time
    every adapter is on.

    Shapes: h (B, T, D) -> (B, T, D).
    """

    def __init__(self, dim: int, bottleneck: int, scale: float = 0.1, drop: float = 0.5) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, bias=False)
        self.up = nn.Linear(bottleneck, dim, bias=False)
        # nn.Linear stores D transposed, (bottleneck, dim): initialise the (dim, bottleneck)
        # view so torch computes the official fan (bottleneck) and gain (1 for a = 1).
        nn.init.kaiming_uniform_(self.down.weight.T, a=1)
        nn.init.zeros_(self.up.weight)
        self.scale = scale
        self.drop_path = DropPath(drop) if drop > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.scale * self.up(F.relu(self.down(h))))


def orthogonality_penalty(t: torch.Tensor) -> torch.Tensor:
    """mean((T T^T - I)^2) for a (M, K) matrix: pushes the M rows towards orthonormality."""
    gram = t @ t.T
    return ((gram - torch.eye(t.shape[0], device=t.device, dtype=t.dtype)) ** 2).mean()


class PromptPool(nn.Module):
    """Conditional prompt pool: M components of L tokens, mixed per image.

    alpha_m = cos(q * softmax(A_m), K_m), prompt = sum_m alpha_m P_m, where q (B, D) is the
    image query (mean + max of the patch embeddings, halved, detached). The official code
    passes alpha through a BatchNorm1d(M, affine=False) kept in eval mode with its initial
    running statistics, i.e. a division by sqrt(1 + 1e-5), reproduced here as a constant.

    Shapes: q (B, D) -> prompts (B, L, D).
    """

    _BN_EPS = 1e-5

    def __init__(self, dim: int, size: int = 20, length: int = 8) -> None:
        super().__init__()
        self.size, self.length = size, length
        self.keys = nn.Parameter(torch.empty(size, dim))
        self.attention = nn.Parameter(torch.empty(size, dim))
        nn.init.orthogonal_(self.keys)
        nn.init.orthogonal_(self.attention)
        base = torch.empty(length, dim)
        nn.init.orthogonal_(base)
        self.prompts = nn.Parameter(base.unsqueeze(0).repeat(size, 1, 1))  # (M, L, D)

    def weights(self, q: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, M) component weights."""
        attended = q[:, None, :] * F.softmax(self.attention, dim=-1)[None]  # (B, M, D)
        alpha = F.cosine_similarity(attended, self.keys[None], dim=-1)
        return alpha / math.sqrt(1.0 + self._BN_EPS)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bm,mld->bld", self.weights(q), self.prompts)

    def penalty(self) -> torch.Tensor:
        """Sum of the orthogonality penalties of K, A and the flattened P (unscaled)."""
        return (orthogonality_penalty(self.keys) + orthogonality_penalty(self.attention)
                + orthogonality_penalty(self.prompts.flatten(1)))
