"""Retrieval metrics as pure per-query functions of where the relevant items rank (no search).

Every retrieval metric depends only on the positions of a query's relevant gallery items (same
class, the query itself removed) in its ranked list, so the engine hands over just those, as flat
arrays sorted by query and then by position:

    owner: (M,) int64, the query of each entry (0 <= owner < Q).
    pos:   (M,) int64, 1-based rank of a relevant item. Only ranks up to the depth the metrics
           need are listed; a relevant item ranked deeper is simply absent.
    j:     (M,) int64, 1-based index of the item among its query's relevant items (so the
           precision at that rank is j / pos).
    r:     (Q,) int64, number of relevant gallery items per query (assumed >= 1 where used).
    freq:  (Q,) int64, ooDML's class frequency: r plus one when the query is in the gallery.

Each function returns (Q,) float64; the engine averages over queries with r >= 1.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "first_rank",
    "map_at_1000",
    "map_at_r",
    "positions_from_relevance",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
]


def first_rank(owner: np.ndarray, pos: np.ndarray, q: int) -> np.ndarray:
    """Rank of each query's best relevant item: (Q,) float64, inf where none is listed."""
    out = np.full(q, np.inf)
    np.minimum.at(out, owner, pos.astype(np.float64))
    return out


def recall_at_k(first: np.ndarray, k: int) -> np.ndarray:
    """Recall@k as in the DML literature: 1.0 if a relevant item is among the top k."""
    return (first <= k).astype(np.float64)


def precision_at_1(first: np.ndarray) -> np.ndarray:
    """Whether the nearest neighbour is relevant (equals Recall@1 with one label per image)."""
    return (first == 1).astype(np.float64)


def r_precision(owner: np.ndarray, pos: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Fraction of the top r that is relevant: #{pos <= r} / r."""
    hits = np.bincount(owner, weights=(pos <= r[owner]).astype(np.float64), minlength=len(r))
    return hits / np.maximum(r, 1)


def map_at_r(owner: np.ndarray, pos: np.ndarray, j: np.ndarray, r: np.ndarray) -> np.ndarray:
    """MAP@R (Musgrave et al. 2020): (1/r) * sum over relevant items ranked <= r of j / pos."""
    w = np.where(pos <= r[owner], j / pos, 0.0)
    return np.bincount(owner, weights=w, minlength=len(r)) / np.maximum(r, 1)


def map_at_1000(owner: np.ndarray, pos: np.ndarray, j: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """ooDML's mAP@1000: (1/freq) * sum over relevant items ranked <= 1000 of j / pos.

    ``freq`` counts the query itself when it is part of the gallery (as ooDML's ``freqs`` do),
    so a perfect leave-one-out query scores (freq - 1) / freq.
    """
    w = np.where(pos <= 1000, j / pos, 0.0)
    return np.bincount(owner, weights=w, minlength=len(freq)) / np.maximum(freq, 1)


def positions_from_relevance(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Q, K) bool relevance of ranked lists -> (owner, pos, j) as above (for callers that hold
    neighbour lists, and for tests)."""
    owner, col = np.nonzero(rel)
    j = np.cumsum(rel, axis=1)[owner, col]
    return owner.astype(np.int64), (col + 1).astype(np.int64), j.astype(np.int64)
