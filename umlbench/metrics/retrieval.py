"""Retrieval metrics as pure per-query functions (no I/O, no search).

Every function takes the relevance matrix of a query chunk and returns one value per query; the
engine averages over the queries that have at least one relevant gallery item.

Shapes and conventions:
    rel:   (Q, K) bool. rel[q, i] is True when the i-th nearest gallery item of query q (self
           already removed, most similar first) has the query's class. Missing neighbours
           (gallery smaller than K) are False.
    r:     (Q,) int64. Number of relevant gallery items of each query (its class count in the
           gallery, minus one when the query itself is in the gallery). Assumed >= 1.
    freq:  (Q,) int64. ooDML's class frequency: r plus one when the query is in the gallery.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "recall_at_k",
    "precision_at_1",
    "r_precision",
    "map_at_r",
    "map_at_1000",
    "precision_curve",
]


def precision_curve(rel: np.ndarray) -> np.ndarray:
    """Precision at every rank: (Q, K) bool -> (Q, K) float64, P@i = hits in top i / i."""
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    return hits / np.arange(1, rel.shape[1] + 1, dtype=np.float64)


def recall_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """Recall@k as in the DML literature: 1.0 if any of the top-k items is relevant. (Q,) float64."""
    return rel[:, :k].any(axis=1).astype(np.float64)


def precision_at_1(rel: np.ndarray) -> np.ndarray:
    """Whether the nearest neighbour is relevant. (Q,) float64 (equals Recall@1 for one label)."""
    return rel[:, 0].astype(np.float64)


def _within_r(rel: np.ndarray, r: np.ndarray) -> np.ndarray:
    return rel & (np.arange(rel.shape[1])[None, :] < r[:, None])


def r_precision(rel: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Fraction of relevant items among the top r. Needs K >= max(r). (Q,) float64."""
    return _within_r(rel, r).sum(axis=1) / r.astype(np.float64)


def map_at_r(rel: np.ndarray, r: np.ndarray, precision: np.ndarray | None = None) -> np.ndarray:
    """MAP@R (Musgrave et al. 2020): (1/r) * sum_{i<=r} rel_i * P@i. Needs K >= max(r)."""
    p = precision_curve(rel) if precision is None else precision
    return (p * _within_r(rel, r)).sum(axis=1) / r.astype(np.float64)


def map_at_1000(
    rel: np.ndarray, freq: np.ndarray, precision: np.ndarray | None = None
) -> np.ndarray:
    """ooDML's mAP@1000: (1/freq) * sum_{i<=1000} rel_i * P@i over the top 1000 neighbours.

    ``freq`` counts the query itself when it is part of the gallery (as ooDML's ``freqs`` do),
    so a perfect leave-one-out query scores (freq - 1) / freq.
    """
    k = min(rel.shape[1], 1000)
    p = precision_curve(rel[:, :k]) if precision is None else precision[:, :k]
    return (p * rel[:, :k]).sum(axis=1) / freq.astype(np.float64)
