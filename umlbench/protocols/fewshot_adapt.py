"""ooDML few-shot adaptation of the embedding head, as the official scripts run it.

``utilities/finetune_utils.finetune_model`` with ``--finetune_only_last --finetune_criterion
margin``: only the last linear layer is trained (Adam), the backbone runs frozen in eval mode;
each step draws a batch from the episode's support set with ``class_random_sampler`` and the
support dataset's *train* transform, and the margin loss (margin 0.2, beta 1.2; the class betas
are not in the optimiser, so they stay 1.2) takes one triplet per anchor from the ``distance``
batchminer. umlbench follows that by default; the switches (``protocol.*``):

    finetune_sampler  replacement  batch_size // 2 class draws *with* replacement, 2 images of
                                   each drawn with replacement (``class_random_sampler``)
                      unique       distinct classes per batch, without replacement (umlbench's
                                   earlier sampler; batches shrink to the support's size)
    finetune_miner    official     ``batchminer/distance.py``: per anchor, one negative drawn
                                   with probability ~ the inverse of the distance density on the
                                   unit sphere (distances clamped below at 0.5, *no* upper
                                   cutoff: it is commented out there), one random positive
                      pml          pytorch-metric-learning's DistanceWeightedMiner(cutoff=0.5,
                                   nonzero_loss_cutoff=1.4): upper cutoff, one triplet per
                                   positive pair
    finetune_support  augmented    support images re-augmented at every step, through the
                                   frozen backbone (``finetune_views`` > 0: that many augmented
                                   views per image computed once, one drawn per use)
                      cached       fixed features of the un-augmented support images

The margin loss with the official miner is ``criteria/margin.py``'s (:func:`margin_loss`): the
hinge terms summed over the triplets and divided by the number of triplets with a non-zero term
(its ``pair_count`` sums ``(pos_loss > 0) + (neg_loss > 0)``, a boolean OR in PyTorch), where
pytorch-metric-learning's MarginLoss divides by the non-zero positive *plus* negative terms; the
``pml`` switch keeps that library loss with its miner (umlbench's earlier adaptation).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SAMPLERS", "MINERS", "SUPPORT_MODES", "class_random_batch", "negative_probabilities",
           "distance_triplets", "margin_loss", "batch_positions", "adapt_head", "support_batches"]

SAMPLERS = ("replacement", "unique")
MINERS = ("official", "pml")
SUPPORT_MODES = ("augmented", "cached")
LOWER_CUTOFF = 0.5  # --miner_distance_lower_cutoff


def class_random_batch(members: list[np.ndarray], rng: np.random.Generator,
                       batch_size: int = 112, per_class: int = 2) -> np.ndarray:
    """One batch of the official ``class_random_sampler``: ``batch_size // per_class`` classes
    drawn with replacement, ``per_class`` images of each drawn with replacement.

    ``members[c]``: the support positions of class c. Returns (batch_size,) int64 positions."""
    n_draws = batch_size // per_class
    classes = rng.integers(len(members), size=n_draws)
    return np.concatenate([members[c][rng.integers(len(members[c]), size=per_class)]
                           for c in classes]).astype(np.int64)


def negative_probabilities(emb: torch.Tensor, labels: torch.Tensor,
                           lower_cutoff: float = LOWER_CUTOFF) -> torch.Tensor:
    """The ``distance`` batchminer's negative distribution: (B, B) float64, row = anchor.

    q(d) ~ d^(2-n) (1 - d^2/4)^(-(n-3)/2) (n = embedding dim), the inverse of the density of
    pairwise distances on the unit sphere, with d = max(||e_i - e_j||, lower_cutoff); zero on
    the anchor's own class; rows sum to 1. No upper cutoff (the official line is commented
    out). The official code subtracts the row maximum taken *including* the zeros it writes on
    positives; umlbench subtracts the maximum over negatives: the same probabilities, without
    the underflow to 0/0 the other choice risks when every negative's log weight is far below 0.
    ``1 - d^2/4`` is floored at 1e-12, where unit embeddings at distance 2 + rounding would give
    log of a negative number."""
    x = emb.detach().to(torch.float64)
    prod = x @ x.T
    norm = prod.diag()[:, None]
    d = (norm + norm.T - 2 * prod).clamp(min=0).sqrt().clamp(min=lower_cutoff)
    n = float(x.shape[1])
    log_q = (2.0 - n) * d.log() - (n - 3.0) / 2 * (1.0 - 0.25 * d * d).clamp(min=1e-12).log()
    same = labels[:, None] == labels[None, :]
    log_q = log_q.masked_fill(same, float("-inf"))
    top = log_q.max(dim=1, keepdim=True).values
    q = (log_q - torch.where(torch.isfinite(top), top, torch.zeros_like(top))).exp()
    return q / q.sum(dim=1, keepdim=True)


def distance_triplets(emb: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator,
                      lower_cutoff: float = LOWER_CUTOFF
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One (anchor, positive, negative) per anchor, as ``batchminer/distance.py``: the negative
    drawn from :func:`negative_probabilities`, the positive uniformly among the anchor's class
    without the anchor itself (the anchor when it is alone). Anchors whose row has no negative
    (a one-class batch) are dropped. Returns three (T,) int64 tensors of batch positions."""
    probs = negative_probabilities(emb, labels, lower_cutoff).cpu().numpy()
    y = labels.cpu().numpy()
    b = len(y)
    same = y[:, None] == y[None, :]
    # Inverse-CDF draw; a zero-probability column never wins the strict comparison.
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(b)
    neg = (cdf <= u[:, None] * cdf[:, -1:]).sum(axis=1)
    pos_mask = same.copy()
    alone = pos_mask.sum(1) == 1
    pos_mask[np.arange(b), np.arange(b)] = alone  # the anchor itself only when alone
    counts = pos_mask.sum(1)
    pick = np.floor(rng.random(b) * counts).astype(np.int64)
    order = np.cumsum(pos_mask, axis=1) - 1
    pos = np.argmax(pos_mask & (order == pick[:, None]), axis=1)
    keep = np.isfinite(probs).all(1) & (~same).any(1)
    idx = np.flatnonzero(keep)
    return (torch.as_tensor(idx), torch.as_tensor(pos[idx]), torch.as_tensor(neg[idx]))


def margin_loss(emb: torch.Tensor, triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                margin: float = 0.2, beta: float = 1.2) -> torch.Tensor:
    """``criteria/margin.py`` on (B, D) embeddings and (anchor, positive, negative) positions:
    d = sqrt(||x - y||^2 + 1e-8); sum of relu(d_ap - beta + margin) + relu(beta - d_an + margin)
    over the triplets, divided by the number of triplets where either term is non-zero (the
    plain sum when none is)."""
    a, p, n = triplets
    if len(a) == 0:
        return emb.sum() * 0.0
    d_ap = ((emb[a] - emb[p]).pow(2).sum(1) + 1e-8).sqrt()
    d_an = ((emb[a] - emb[n]).pow(2).sum(1) + 1e-8).sqrt()
    pos = F.relu(d_ap - beta + margin)
    neg = F.relu(beta - d_an + margin)
    count = ((pos > 0) | (neg > 0)).sum()
    total = (pos + neg).sum()
    return total / count if count > 0 else total


def batch_positions(labels: np.ndarray, iterations: int, seed: int, sampler: str = "replacement",
                    batch_size: int = 112) -> list[np.ndarray]:
    """The support positions of every adaptation step, drawn up front (so that images can be
    loaded ahead by workers): ``replacement`` draws :func:`class_random_batch` from
    ``default_rng([seed, 0])``; ``unique`` runs umlbench's earlier sampler (distinct classes,
    2 images each, epoch after epoch; batches shrink to the support's size)."""
    labels = np.asarray(labels)
    if sampler == "replacement":
        rng = np.random.default_rng([seed, 0])
        members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        return [class_random_batch(members, rng, batch_size) for _ in range(iterations)]
    from umlbench.data.samplers import ClassUniqueSampler

    n_cls = len(np.unique(labels))
    bs = min(batch_size, 2 * n_cls, len(labels) - len(labels) % 2)
    uniq = ClassUniqueSampler(labels, bs, 2, seed=seed)
    out: list[np.ndarray] = []
    epoch = 0
    while len(out) < iterations:
        uniq.set_epoch(epoch)
        out += [np.array([i for i, _ in b], dtype=np.int64) for b in uniq][: iterations - len(out)]
        epoch += 1
    return out


def adapt_head(head: torch.nn.Module, batches: Iterable[tuple[np.ndarray, torch.Tensor]],
               labels: np.ndarray, lr: float, seed: int, miner: str = "official"
               ) -> torch.nn.Module:
    """Train a copy of ``head`` (on CPU), one Adam step per ``(positions, features)`` batch:
    the support positions (B,) and their (B, F) pre-head features; ``labels``: (S,) class of
    each support position. ``miner="official"``: :func:`distance_triplets` (drawn from
    ``default_rng([seed, 2])``) with :func:`margin_loss`; ``"pml"``: pytorch-metric-learning's
    DistanceWeightedMiner and MarginLoss."""
    from pytorch_metric_learning import losses, miners

    head = copy.deepcopy(head).cpu().train()
    for p in head.parameters():
        p.requires_grad_(True)
    loss_fn = losses.MarginLoss(margin=0.2, nu=0.0, beta=1.2)
    pml_miner = miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    rng = np.random.default_rng([seed, 2])
    y = torch.as_tensor(np.asarray(labels))
    for idx, x in batches:
        emb = F.normalize(head(x.cpu()), dim=-1)
        yb = y[torch.as_tensor(idx)]
        if miner == "official":
            loss = margin_loss(emb, distance_triplets(emb, yb, rng))
        else:
            loss = loss_fn(emb, yb, pml_miner(emb, yb))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def support_batches(positions: list[np.ndarray], model, table, cached: torch.Tensor, mode: str,
                    views: int, seed: int, device, num_workers: int = 0
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """``(positions, features)`` per step for :func:`adapt_head`.

    ``table``: an ImageTable of the support rows with the *train* transform; ``cached``: (S, F)
    eval-transform features (``mode="cached"``). ``augmented``: every use of an image is a new
    augmentation (its own seed, from ``default_rng([seed, 1])``) through the frozen
    ``model.features`` in eval mode, images loaded ahead by ``num_workers`` workers; ``views``
    > 0 computes that many augmented views of every support image once, and each use picks one
    at random (a cheaper approximation for CPU budgets)."""
    from torch.utils.data import DataLoader

    from umlbench.data.loading import collate

    if mode == "cached":
        for idx in positions:
            yield idx, cached[torch.as_tensor(idx)]
        return
    rng = np.random.default_rng([seed, 1])
    model.eval()

    def run(lists: list[np.ndarray]) -> Iterator[torch.Tensor]:
        seeded = [list(zip(p.tolist(), rng.integers(2**31, size=len(p)).tolist())) for p in lists]
        loader = DataLoader(table, batch_sampler=seeded, num_workers=num_workers,
                            collate_fn=collate)
        for images, _, _ in loader:
            with torch.inference_mode():
                feats = model.features(images.to(device)).float().cpu()
            yield feats.clone()  # a normal tensor: the head's autograd saves its input

    if views <= 0:
        yield from zip(positions, run(positions))
        return
    every = np.arange(len(table))
    chunks = [every[i:i + 256] for i in range(0, len(every), 256)]
    bank = torch.stack([torch.cat(list(run(chunks))) for _ in range(views)])  # (V, S, F)
    for idx in positions:
        v = torch.as_tensor(rng.integers(views, size=len(idx)))
        yield idx, bank[v, torch.as_tensor(idx)]
