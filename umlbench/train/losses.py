"""Training losses: CurricularFace (written here) and the reference losses from PML.

Every loss is a module ``loss(embeddings (B, D), labels (B,)) -> scalar``; proxy losses own their
proxies as parameters, which the trainer puts in the ``proxies`` parameter group (lr x1e4 in the
official code). Settings follow the official PUMA code (losses.py; see
``shared/reference/puma-official-code.md`` section 5).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from umlbench.config import LossConfig, Range, check_number, ranged
from umlbench.errors import UserError
from umlbench.train.registry import LOSSES

__all__ = ["CurricularFace", "PMLLoss", "LOSSES", "LOSS_TITLES", "PROXY_INITS", "build_loss",
           "check_loss_args", "loss_arguments", "official_proxy_init", "resolved_loss_arguments"]

LossFactory = Callable[..., nn.Module]

# How a proxy loss draws its initial proxies: official = the official losses.py
# (kaiming_uniform_(proxies, mode='fan_out') on a (classes, dim) tensor, i.e. U(-b, b) with
# b = sqrt(6 / classes)); library = pytorch-metric-learning's own default.
PROXY_INITS = ("official", "library")


def official_proxy_init(classes_first: bool = True) -> Callable[[torch.Tensor], None]:
    """The official proxy initialiser as a PML ``weight_init_func``.

    The official proxies are a (classes, dim) tensor initialised with
    ``kaiming_uniform_(mode='fan_out')``; torch's fan_out of a 2-D (out, in) tensor is its
    size(0), here the number of classes, so every entry is U(-sqrt(6/C), sqrt(6/C)) whatever
    the dimension. PML stores CosFace/ArcFace weights as (dim, classes) (``classes_first=False``):
    they are initialised through their transposed view, which gives the same distribution.
    """
    def init(tensor: torch.Tensor) -> None:
        nn.init.kaiming_uniform_(tensor if classes_first else tensor.T, mode="fan_out")

    return init


def _init_kwargs(init: str, classes_first: bool = True) -> dict:
    if init not in PROXY_INITS:
        raise UserError(f"loss.args.init must be one of {', '.join(PROXY_INITS)}; got {init!r}")
    return {} if init == "library" else {"weight_init_func": official_proxy_init(classes_first)}


class CurricularFace(nn.Module):
    """CurricularFace (Huang et al. 2020) with a per-class curriculum term, as in PUMA's code.

    logits = s * phi_y for the target, with phi_y = cos(theta_y + m) (falling back to
    cos(theta_y) - m sin(m) past theta_y > pi - m, ArcFace-style); s * cos(theta_j) *
    (t_y + cos(theta_j)) for hard negatives (cos(theta_j) > phi_y) and s * cos(theta_j) for the
    others. ``t`` is a per-class EMA of the target cosine (momentum 0.99, initial 0) instead of
    the paper's global t, read before the batch updates it (official ``losses.py`` order).
    """

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.3,
                 scale: float = 32.0, momentum: float = 0.99) -> None:
        super().__init__()
        self.margin, self.scale, self.momentum = margin, scale, momentum
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.kaiming_uniform_(self.proxies, mode="fan_out")
        self.register_buffer("t", torch.zeros(num_classes))
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor,
               update: bool = True) -> torch.Tensor:
        """(B, D), (B,) -> (B, C) scaled logits (updates ``t`` when ``update``)."""
        # The margin arithmetic runs in at least fp32. Under fp16 autocast F.linear itself still
        # runs in half precision and is cast up afterwards, as the official `.float()` does.
        dtype = torch.promote_types(self.proxies.dtype, torch.float32)
        cos = F.linear(F.normalize(embeddings.to(dtype)), F.normalize(self.proxies.to(dtype)))
        cos = cos.to(dtype).clamp(-1, 1)
        target = cos.gather(1, labels[:, None])  # (B, 1)
        sin = torch.sqrt((1.0 - target**2).clamp_min(0))
        cos_tm = target * self.cos_m - sin * self.sin_m  # cos(theta_y + m)
        final_target = torch.where(target > self.threshold, cos_tm, target - self.mm)
        # As the official forward: a negative is hard when it beats the final target logit, and
        # it uses t as it was *before* this batch (the official update_sim runs after the loss).
        hard = cos > final_target
        t = self.t[labels].to(dtype)[:, None]  # a copy: the update below does not reach it
        out = torch.where(hard, cos * (t + cos), cos).scatter(1, labels[:, None], final_target)
        if update and self.training:
            with torch.no_grad():
                classes, inverse = labels.unique(return_inverse=True)
                sums = torch.zeros(len(classes), device=cos.device, dtype=dtype).index_add_(
                    0, inverse, target[:, 0].detach())
                means = sums / torch.bincount(inverse, minlength=len(classes)).to(dtype)
                self.t[classes] = (self.momentum * self.t[classes]
                                   + (1 - self.momentum) * means.to(self.t.dtype))
        return out * self.scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)


class PMLLoss(nn.Module):
    """A pytorch-metric-learning loss with an optional miner, as one module."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, pairs)


# How each loss is named in tables (the papers' spelling).
LOSS_TITLES = {
    "curricularface": "CurricularFace", "triplet": "Triplet", "multi_similarity": "Multi-Similarity",
    "margin": "Margin", "proxy_anchor": "Proxy-Anchor", "proxy_nca_pp": "ProxyNCA++",
    "cosface": "CosFace", "arcface": "ArcFace", "soft_triple": "SoftTriple", "hyp_supcon": "Hyp",
}


def _pml():
    from pytorch_metric_learning import distances, losses, miners

    return losses, miners, distances


@LOSSES.register("curricularface")
@ranged(margin=Range(ge=0, lt=math.pi / 2), scale=Range(gt=0), momentum=Range(ge=0, le=1))
def _curricularface(num_classes, embedding_size, margin=0.3, scale=32.0, momentum=0.99):
    return CurricularFace(num_classes, embedding_size, margin, scale, momentum)


@LOSSES.register("triplet")
@ranged(margin=Range(ge=0))
def _triplet(num_classes, embedding_size, margin=0.05):
    losses, miners, distances = _pml()
    d = distances.CosineSimilarity()
    return PMLLoss(losses.TripletMarginLoss(margin=margin, distance=d),
                   miners.BatchHardMiner(distance=d))


@LOSSES.register("multi_similarity")
@ranged(alpha=Range(gt=0), beta=Range(gt=0), base=Range(ge=-1, le=1), cutoff=Range(ge=0),
        nonzero_loss_cutoff=Range(gt=0))
def _ms(num_classes, embedding_size, alpha=2.0, beta=50.0, base=0.5, cutoff=0.5,
        nonzero_loss_cutoff=1.4):
    losses, miners, _ = _pml()
    return PMLLoss(losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base),
                   miners.DistanceWeightedMiner(cutoff=cutoff,
                                                nonzero_loss_cutoff=nonzero_loss_cutoff))


@LOSSES.register("margin")
@ranged(margin=Range(ge=0), nu=Range(ge=0), beta=Range(ge=0), epsilon=Range(ge=0))
def _margin(num_classes, embedding_size, margin=0.2, nu=0.0, beta=1.2, epsilon=0.1):
    losses, miners, _ = _pml()
    return PMLLoss(losses.MarginLoss(margin=margin, nu=nu, beta=beta),
                   miners.MultiSimilarityMiner(epsilon=epsilon))


@LOSSES.register("proxy_anchor")
@ranged(margin=Range(ge=0), alpha=Range(gt=0))
def _proxy_anchor(num_classes, embedding_size, margin=0.1, alpha=32.0, init="official"):
    losses, _, _ = _pml()
    # init=library: PML's kaiming_normal_(mode='fan_out').
    return PMLLoss(losses.ProxyAnchorLoss(num_classes, embedding_size, margin=margin, alpha=alpha,
                                          **_init_kwargs(init)))


@LOSSES.register("proxy_nca_pp")
@ranged(scale=Range(gt=0))
def _proxy_nca(num_classes, embedding_size, scale=9.0, init="official"):
    # ProxyNCA++: softmax over -scale * ||x - p||^2 on the unit sphere = -scale * 2(1 - cos).
    # init=library: PML's normal_.
    losses, _, _ = _pml()
    return PMLLoss(losses.ProxyNCALoss(num_classes, embedding_size, softmax_scale=scale,
                                       **_init_kwargs(init)))


@LOSSES.register("cosface")
@ranged(margin=Range(ge=0), scale=Range(gt=0))
def _cosface(num_classes, embedding_size, margin=0.35, scale=64.0, init="official"):
    # PML's weight is (dim, classes); init=library: PML's normal_.
    losses, _, _ = _pml()
    return PMLLoss(losses.CosFaceLoss(num_classes, embedding_size, margin=margin, scale=scale,
                                      **_init_kwargs(init, classes_first=False)))


@LOSSES.register("arcface")
@ranged(margin=Range(ge=0, lt=math.pi / 2), scale=Range(gt=0))
def _arcface(num_classes, embedding_size, margin=0.5, scale=64.0, init="official"):
    losses, _, _ = _pml()
    # PML takes the angular margin in degrees; the official setting is 0.5 rad. PML's weight is
    # (dim, classes); init=library: PML's normal_.
    return PMLLoss(losses.ArcFaceLoss(num_classes, embedding_size, margin=math.degrees(margin),
                                      scale=scale, **_init_kwargs(init, classes_first=False)))


@LOSSES.register("soft_triple")
@ranged(centers_per_class=Range(ge=1), la=Range(gt=0), gamma=Range(gt=0), margin=Range(ge=0))
def _soft_triple(num_classes, embedding_size, centers_per_class=10, la=20.0, gamma=0.1,
                 margin=0.01):
    # The official SoftTripleLoss wraps PML's, so its centres keep PML's initialiser
    # (kaiming_uniform_ with a = sqrt(5)); no init switch here.
    losses, _, _ = _pml()
    return PMLLoss(losses.SoftTripleLoss(num_classes, embedding_size,
                                         centers_per_class=centers_per_class, la=la,
                                         gamma=gamma, margin=margin))


@LOSSES.register("hyp_supcon")
@ranged(temperature=Range(gt=0), curvature=Range(gt=0))
def _hyp_supcon(num_classes, embedding_size, temperature=0.1, curvature=0.1):
    # The official pairwise-view SupCon (see supcon.py), not PML's multi-positive SupConLoss.
    from umlbench.train.supcon import PairwiseSupCon

    return PairwiseSupCon(temperature=temperature, curvature=curvature)


def resolved_loss_arguments(cfg: LossConfig) -> dict:
    """The loss's complete arguments: its factory's defaults updated by ``cfg.args`` (what
    ``--dry-run`` shows, so switches such as ``init`` appear with their default value)."""
    factory = LOSSES.get(cfg.name)
    params = list(inspect.signature(factory).parameters.values())[2:]  # after classes, dim
    out = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**out, **cfg.args}


def loss_arguments(name: str) -> dict[str, tuple[object, Range | None]]:
    """A loss factory's keyword arguments: ``{name: (default, declared range or None)}``
    (``num_classes`` and ``embedding_size`` are the trainer's, not the config's)."""
    factory = LOSSES.get(name)
    ranges = getattr(factory, "arg_ranges", {})
    params = list(inspect.signature(factory).parameters.values())[2:]
    return {p.name: (p.default, ranges.get(p.name)) for p in params
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_loss_args(cfg: LossConfig) -> None:
    """Refuse ``loss.args`` the factory does not take, and numbers outside their declared range
    (the type follows the default: an int default takes integers), before anything runs."""
    known = loss_arguments(cfg.name)
    for key, value in cfg.args.items():
        if key not in known:
            raise UserError(f"unknown config key 'loss.args.{key}' for loss {cfg.name!r}; "
                            f"known: {', '.join(known) or 'none'}")
        default, rng = known[key]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            check_number(f"loss.args.{key}", value, rng, integer=isinstance(default, int))


def build_loss(cfg: LossConfig, num_classes: int, embedding_size: int) -> nn.Module:
    factory = LOSSES.get(cfg.name)
    try:
        return factory(num_classes, embedding_size, **cfg.args)
    except TypeError as exc:
        raise UserError(f"loss {cfg.name!r}: bad arguments {dict(cfg.args)} ({exc})") from None
