"""CurricularFace against a direct per-sample formula, and the PML-backed losses build and run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from umlbench.config import LossConfig
from umlbench.train.losses import LOSSES, CurricularFace, build_loss


def direct_curricularface(emb, labels, proxies, t_before, m, s, momentum):
    """Loop-based reference of PUMA's CurricularFace (per-class t, updated before use)."""
    x = F.normalize(emb, dim=1)
    w = F.normalize(proxies, dim=1)
    t = t_before.clone()
    cos = (x @ w.T).clamp(-1, 1)
    for c in labels.unique():
        mask = labels == c
        t[c] = momentum * t[c] + (1 - momentum) * cos[mask, c].mean()
    logits = torch.empty_like(cos)
    for i in range(len(x)):
        y = labels[i]
        ct = cos[i, y]
        theta = math.acos(float(ct))
        ctm = math.cos(theta + m)
        target = ctm if ct > math.cos(math.pi - m) else ct - math.sin(math.pi - m) * m
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == y:
                logits[i, j] = target
            elif c > ctm:
                logits[i, j] = c * (t[y] + c)
            else:
                logits[i, j] = c
    return F.cross_entropy(s * logits, labels), t


@pytest.mark.parametrize("seed", [0, 1])
def test_curricularface_matches_direct_formula(seed):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(12, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (12,), generator=g)
    loss_fn = CurricularFace(5, 8, margin=0.3, scale=32).double()
    loss_fn.t.copy_(torch.rand(5, generator=g, dtype=torch.float64) * 0.3)
    t0 = loss_fn.t.clone()
    ref, t_ref = direct_curricularface(emb, labels, loss_fn.proxies.detach(), t0, 0.3, 32, 0.99)
    loss_fn.train()
    got = loss_fn(emb, labels)
    assert got.item() == pytest.approx(ref.item(), rel=1e-9)
    assert torch.allclose(loss_fn.t, t_ref)


def test_curricularface_backward_reaches_proxies_and_embeddings():
    loss_fn = CurricularFace(4, 6)
    emb = torch.randn(8, 6, requires_grad=True)
    loss = loss_fn(emb, torch.randint(0, 4, (8,)))
    loss.backward()
    assert emb.grad.abs().sum() > 0 and loss_fn.proxies.grad.abs().sum() > 0


def test_t_is_not_updated_in_eval_mode():
    loss_fn = CurricularFace(4, 6).eval()
    loss_fn(torch.randn(8, 6), torch.randint(0, 4, (8,)))
    assert loss_fn.t.abs().sum() == 0


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_runs(name):
    torch.manual_seed(0)
    loss_fn = build_loss(LossConfig(name=name), num_classes=6, embedding_size=16)
    emb = torch.randn(24, 16, requires_grad=True)
    if name == "hyp_supcon":
        from umlbench.train.hyperbolic import ToPoincare

        emb_in = ToPoincare(0.1)(emb)
    else:
        emb_in = F.normalize(emb, dim=1)
    labels = torch.arange(6).repeat_interleave(4)
    loss = loss_fn(emb_in, labels)
    assert torch.isfinite(loss)
    loss.backward()
    assert emb.grad is not None


def test_arcface_margin_is_converted_to_degrees():
    loss_fn = build_loss(LossConfig(name="arcface", args={"margin": 0.5}), 3, 4)
    assert loss_fn.loss.margin == pytest.approx(0.5)  # PML stores radians after init
