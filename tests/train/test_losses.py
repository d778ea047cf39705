"""CurricularFace against a direct per-sample formula, and the PML-backed losses build and run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from umlbench.config import LossConfig
from umlbench.train.losses import LOSSES, CurricularFace, build_loss


def direct_curricularface(emb, labels, proxies, t_before, m, s, momentum):
    """Loop-based reference of PUMA's CurricularFace: per-class t, read before this batch
    updates it; a negative is hard when its cosine beats the final target logit."""
    x = F.normalize(emb, dim=1)
    w = F.normalize(proxies, dim=1)
    cos = (x @ w.T).clamp(-1, 1)
    logits = torch.empty_like(cos)
    for i in range(len(x)):
        y = labels[i]
        ct = cos[i, y]
        theta = math.acos(float(ct))
        fallback = ct - math.sin(math.pi - m) * m
        target = math.cos(theta + m) if ct > math.cos(math.pi - m) else fallback
        for j in range(cos.shape[1]):
            c = cos[i, j]
            if j == y:
                logits[i, j] = target
            elif c > target:
                logits[i, j] = c * (t_before[y] + c)
            else:
                logits[i, j] = c
    t = t_before.clone()
    for c in labels.unique():
        mask = labels == c
        t[c] = momentum * t[c] + (1 - momentum) * cos[mask, c].mean()
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


def _fixed(n, d, a=1.7, b=0.3):
    i = torch.arange(n * d, dtype=torch.float64).reshape(n, d)
    return 0.9 * torch.sin(a * i + b) + 0.2 * torch.cos(0.37 * i * i % 7.0)


def test_curricularface_matches_the_official_numbers():
    # Computed offline with the official losses.CurricularFace(5, 6, mrg=0.3, alpha=32) on CPU
    # in float64 (proxies and pos_sim set to the values below), called twice on one batch.
    # Sample 7 sits opposite its proxy (cos -0.99995 < cos(pi - 0.3)): the fallback branch.
    # The official casts the cosines to float32 (`.float()`), hence the 1e-6 tolerance.
    emb, proxies = _fixed(8, 6), _fixed(5, 6, 0.77, 1.1)
    emb[7] = -proxies[2] + 0.01 * emb[7]
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    loss_fn = CurricularFace(5, 6, margin=0.3, scale=32).double().train()
    with torch.no_grad():
        loss_fn.proxies.copy_(proxies)
        loss_fn.t.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64))
    assert loss_fn(emb, labels).item() == pytest.approx(17.835063979522282, rel=1e-6)
    assert loss_fn.t.tolist() == pytest.approx(
        [0.10072376236878336, 0.19717954683769495, 0.29194251515716313, 0.39943560217879714,
         0.49814384582452476], rel=1e-6)
    assert loss_fn(emb, labels).item() == pytest.approx(17.79515660073443, rel=1e-6)


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


# ---- issue 21, item 5: the official proxy initialiser ----------------------------------------

# PML keeps CosFace/ArcFace weights as (dim, classes); the others as (classes, dim).
PROXY_LOSSES = {"proxy_anchor": "proxies", "proxy_nca_pp": "proxies", "cosface": "W",
                "arcface": "W"}


def _proxies(name: str, init: str, classes: int, dim: int) -> torch.Tensor:
    torch.manual_seed(0)
    loss = build_loss(LossConfig(name=name, args={"init": init}), classes, dim)
    w = getattr(loss.loss, PROXY_LOSSES[name]).detach()
    return w.T if PROXY_LOSSES[name] == "W" else w  # (classes, dim) as the official tensor


@pytest.mark.parametrize("name", sorted(PROXY_LOSSES))
def test_proxies_follow_the_official_kaiming_uniform_fan_out(name):
    # Official: kaiming_uniform_(proxies, mode='fan_out') on a (C, D) tensor. torch's fan_out of
    # a 2-D (out, in) tensor is size(0) = C; gain(leaky_relu, a=0) = sqrt(2); bound =
    # gain * sqrt(3 / fan_out) = sqrt(6 / C), independent of D. U(-b, b): std b / sqrt(3).
    classes, dim = 500, 128
    w = _proxies(name, "official", classes, dim)
    assert w.shape == (classes, dim)
    bound = math.sqrt(6 / classes)  # 0.109545
    assert w.abs().max().item() <= bound
    assert w.max().item() > 0.999 * bound and w.min().item() < -0.999 * bound  # 64,000 draws
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert abs(w.mean().item()) < 0.01 * bound
    # Uniform, not normal: a quarter of the draws in each quarter of [-b, b].
    hist = torch.histc(w, bins=4, min=-bound, max=bound) / w.numel()
    assert torch.allclose(hist, torch.full((4,), 0.25), atol=0.01)


@pytest.mark.parametrize("name, std", [("proxy_anchor", math.sqrt(2 / 500)),  # kaiming_normal_
                                       ("proxy_nca_pp", 1.0), ("cosface", 1.0),  # normal_
                                       ("arcface", 1.0)])
def test_library_init_is_the_switch(name, std):
    w = _proxies(name, "library", 500, 128)
    assert w.std().item() == pytest.approx(std, rel=0.02)
    assert w.abs().max().item() > math.sqrt(6 / 500)  # normal tails pass the uniform bound


def test_unknown_init_is_a_user_error():
    from umlbench.errors import UserError

    with pytest.raises(UserError, match="loss.args.init must be one of official, library"):
        build_loss(LossConfig(name="cosface", args={"init": "xavier"}), 10, 8)
