"""The Hyp baseline: official pairwise-view SupCon and the hyptorch ball arithmetic.

Pinned numbers were computed offline by running the official PUMA code's own arithmetic
(``losses.py: SupCon``, ``hyptorch/pmath.py``, ``hyptorch/nn.py: ToPoincare(riemannian=False,
clip_r=2.3)``) on CPU in float64 on the inputs of :func:`fixed`. hyptorch passes the curvature
through ``torch.as_tensor(0.1)`` (float32, 0.10000000149), so the pinned values differ from an
exact c = 0.1 by about 1e-9 relative; they are compared at 1e-7.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from umlbench.config import LossConfig
from umlbench.errors import UserError
from umlbench.train.hyperbolic import ToPoincare, poincare_distance_matrix, poincare_mean
from umlbench.train.losses import build_loss
from umlbench.train.supcon import PairwiseSupCon, views_per_class


def fixed(n_cls: int, ipc: int, d: int) -> torch.Tensor:
    """Deterministic (n_cls * ipc, d) float64 inputs, no RNG involved."""
    i = torch.arange(n_cls * ipc * d, dtype=torch.float64).reshape(n_cls * ipc, d)
    return 0.9 * torch.sin(1.7 * i + 0.3) + 0.2 * torch.cos(0.37 * i * i % 7.0)


def _np_ball_dist(x: np.ndarray, y: np.ndarray, c: float) -> float:
    """Poincare distance of two points, written out from the formula (hyptorch constants)."""
    mx = -x
    xy, x2, y2 = mx @ y, mx @ mx, y @ y
    num = (1 + 2 * c * xy + c * y2) * mx + (1 - c * x2) * y
    diff = num / (1 + 2 * c * xy + c**2 * x2 * y2 + 1e-5)
    arg = min(math.sqrt(c) * np.linalg.norm(diff), 1 - 1e-5)
    return 2 / math.sqrt(c) * math.atanh(arg)


def np_pairwise_supcon(z: np.ndarray, ipc: int, tau: float, c: float) -> float:
    """Brute-force loop version of the official definition: for every view pair (i, j), i != j,
    and every anchor a, cross-entropy over [view j of every class] + [view i of the other
    classes]; the sum over pairs divided by ipc**2."""
    n = len(z) // ipc
    v = z.reshape(n, ipc, -1)

    def sim(p, q):
        return float(p @ q) if c == 0 else -_np_ball_dist(p, q, c)

    total = 0.0
    for i in range(ipc):
        for j in range(ipc):
            if i == j:
                continue
            ce = 0.0
            for a in range(n):
                logits = [sim(v[a, i], v[b, j]) / tau for b in range(n)]
                logits += [sim(v[a, i], v[b, i]) / tau for b in range(n) if b != a]
                m = max(logits)
                ce += -(logits[a] - m - math.log(sum(math.exp(t - m) for t in logits)))
            total += ce / n
    return total / ipc**2


@pytest.mark.parametrize("n_cls, ipc, c, official", [
    (3, 4, 0.1, 18.896833384436817),   # official SupCon(hyp_c=0.1, IPC=4) on ToPoincare(fixed)
    (4, 2, 0.1, 20.511648862031432),   # official SupCon(hyp_c=0.1, IPC=2)
    (3, 4, 0.0, 7.587663540203807),    # official sphere mode (hyp_c=0) on normalised fixed
])
def test_pairwise_supcon_matches_numpy_and_the_official_numbers(n_cls, ipc, c, official):
    x = fixed(n_cls, ipc, 5)
    z = ToPoincare(c, 2.3)(x) if c > 0 else torch.nn.functional.normalize(x, dim=1)
    labels = torch.arange(n_cls).repeat_interleave(ipc)
    got = PairwiseSupCon(temperature=0.1, curvature=c)(z, labels).item()
    assert got == pytest.approx(np_pairwise_supcon(z.numpy(), ipc, 0.1, c), rel=1e-10)
    assert got == pytest.approx(official, rel=1e-7)


def test_pairwise_supcon_is_not_pml_supcon():
    """PML's SupConLoss (multi-positive, every other image a candidate) gives another value."""
    from pytorch_metric_learning.losses import SupConLoss

    z = torch.nn.functional.normalize(fixed(3, 4, 5), dim=1)
    labels = torch.arange(3).repeat_interleave(4)
    ours = PairwiseSupCon(0.1, 0.0)(z, labels).item()
    assert abs(ours - SupConLoss(temperature=0.1)(z, labels).item()) > 0.1


def test_registered_hyp_supcon_is_the_pairwise_loss_with_gradients():
    loss_fn = build_loss(LossConfig(name="hyp_supcon"), num_classes=3, embedding_size=5)
    assert isinstance(loss_fn, PairwiseSupCon) and loss_fn.curvature == 0.1
    x = fixed(3, 4, 5).float().requires_grad_(True)
    loss = loss_fn(ToPoincare(0.1, 2.3)(x), torch.arange(3).repeat_interleave(4))
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_views_per_class_reads_the_block_layout():
    assert views_per_class(torch.tensor([5, 5, 5, 5, 2, 2, 2, 2])) == 4
    assert views_per_class(torch.tensor([5, 5, 5, 5, 5, 5, 2, 2])) == 2  # runs 6 and 2: gcd 2
    with pytest.raises(UserError, match="consecutive blocks"):
        views_per_class(torch.tensor([1, 2, 3, 4]))  # uniform sampling: no positive pairs


def test_hyptorch_arithmetic_matches_the_official_numbers():
    # Official ToPoincare(c=0.1, riemannian=False, clip_r=2.3) of fixed(3, 4, 5)[0].
    z = ToPoincare(0.1, 2.3)(fixed(3, 4, 5))
    assert z[0].tolist() == pytest.approx(
        [0.425058880391, 0.916614627228, -0.418445402895, -0.813640860400, 0.769013323849],
        rel=1e-8)
    # Official dist_matrix(z[:3], z[3:6], c=0.1), first row.
    d = poincare_distance_matrix(z[:3], z[3:6], 0.1)
    assert d[0].tolist() == pytest.approx(
        [2.143828611176229, 6.301550644170535, 4.817333651091685], rel=1e-7)
    # Official poincare_mean over three scaled copies mapped onto the ball, first point.
    ms = torch.stack([ToPoincare(0.1, 2.3)(fixed(1, 4, 5) * s) for s in (1.0, 0.5, 2.0)])
    assert poincare_mean(ms, 0.1)[0].tolist() == pytest.approx(
        [0.4054668077511391, 0.8743654679051137, -0.3991581626855902, -0.7761380306164622,
         0.7335674936434096], rel=1e-7)
