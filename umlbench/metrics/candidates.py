"""Candidate lists: every gallery item whose approximate similarity reaches a query's threshold.

A candidate pass returns, for each query, the gallery items with ``s_hat >= t[q]`` (self
excluded), where ``s_hat`` is within ``eps`` of the exact similarity (see ``exact.py``). The
caller's threshold comes from the query's own class (see ``engine.py``); when a query collects far
more than the ``cap`` neighbours any metric needs (a badly trained model), its threshold is raised
to ``(cap-th best s_hat) - 2 eps - margin``. Nothing that can reach rank ``cap`` is ever dropped.

Backends differ only in how they find these items: the torch block pass (``blockpass.py``) reads
a threshold per query directly; faiss returns the top k, so k doubles until the list is complete
down to the threshold (``collect_topk``), and searches limited to k <= 2048 (faiss-gpu) are
merged over gallery shards (``sharded_search``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["MARGIN", "Candidates", "Store", "collect_topk", "sharded_search"]

MARGIN = 1e-9  # slack between a raised threshold and the values that justify it
_BASE_LIMIT = 1 << 22  # stored entries before the first check for over-budget queries
BUDGET_SLACK = 64  # a query may hold 2 * cap + BUDGET_SLACK candidates before pruning


@dataclass
class Candidates:
    """Candidates of Q queries (flat arrays, any order).

    q, g: (M,) int64 query index and gallery position; s: (M,) float32 approximate similarity.
    t: (Q,) float64; every gallery item other than the query itself with ``s_hat >= t[q]`` is
    listed. pruned: (Q,) bool, True where ``t`` was raised above the requested threshold; then at
    least ``cap[q]`` listed items have ``s_hat >= t[q] + 2 eps + MARGIN``.
    eps: bound on ``|s_hat - s|``; backend: what produced them.
    """

    q: np.ndarray
    g: np.ndarray
    s: np.ndarray
    t: np.ndarray
    pruned: np.ndarray
    eps: float
    backend: str


def budget(cap: np.ndarray) -> np.ndarray:
    """Candidates a query may hold before its threshold is raised: (Q,) int64."""
    return 2 * np.asarray(cap, np.int64) + BUDGET_SLACK


class Store:
    """Growing candidate lists with per-query thresholds that rise when a query over-collects."""

    def __init__(self, t: np.ndarray, cap: np.ndarray, eps: float) -> None:
        self.t = np.asarray(t, np.float64).copy()
        self.cap = np.maximum(np.asarray(cap, np.int64), 1)
        self.budget = budget(self.cap)
        self.eps = eps
        self.pruned = np.zeros(len(self.t), bool)
        self.count = np.zeros(len(self.t), np.int64)
        self.chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.size = 0
        self.limit = _BASE_LIMIT
        self.changed = False  # thresholds raised since the caller last looked

    def add(self, q: np.ndarray, g: np.ndarray, s: np.ndarray) -> None:
        if not len(q):
            return
        self.chunks.append((q.astype(np.int32), g.astype(np.int32), s.astype(np.float32)))
        self.count += np.bincount(q, minlength=len(self.count))
        self.size += len(q)
        if self.size > self.limit:
            self._compact()
            self.limit = 2 * self.size + _BASE_LIMIT

    def _compact(self) -> None:
        over = self.count > self.budget
        if not over.any():
            return
        q, g, s = self._concat()
        sel = over[q]
        keep_q, keep_g, keep_s = q[~sel], g[~sel], s[~sel]
        oq, og, os_ = q[sel], g[sel], s[sel]
        order = np.lexsort((-os_, oq))
        oq, og, os_ = oq[order], og[order], os_[order]
        starts = np.searchsorted(oq, np.arange(len(self.t)))
        idx = np.flatnonzero(over)
        kth = os_[starts[idx] + self.cap[idx] - 1].astype(np.float64)
        self.t[idx] = np.maximum(self.t[idx], kth - 2 * self.eps - MARGIN)
        self.pruned[idx] = True
        ok = os_.astype(np.float64) >= self.t[oq]
        q = np.concatenate([keep_q, oq[ok]])
        g = np.concatenate([keep_g, og[ok]])
        s = np.concatenate([keep_s, os_[ok]])
        self.chunks = [(q, g, s)]
        self.count = np.bincount(q, minlength=len(self.t)).astype(np.int64)
        self.size = len(q)
        self.changed = True

    def _concat(self):
        if not self.chunks:
            e = np.zeros(0, np.int32)
            return e, e, np.zeros(0, np.float32)
        return tuple(np.concatenate([c[i] for c in self.chunks]) for i in range(3))

    def finish(self, backend: str) -> Candidates:
        q, g, s = self._concat()
        self.chunks = []
        # Items stored under an earlier, lower threshold are kept: a superset is still complete.
        return Candidates(q.astype(np.int64), g.astype(np.int64), s, self.t, self.pruned,
                          self.eps, backend)


SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def collect_topk(search: SearchFn, queries: np.ndarray, gallery_size: int, self_pos: np.ndarray,
                 t: np.ndarray, cap: np.ndarray, eps: float, backend: str) -> Candidates:
    """Candidates from a top-k search (faiss): k doubles per query until complete.

    ``search(queries (Q, D) float32, k)`` returns sims (Q, k) descending, gallery positions
    (Q, k) (-1 = none) and ``complete`` (Q,): every item with ``s_hat > complete`` is in the row.
    """
    t = np.asarray(t, np.float64).copy()
    cap = np.maximum(np.asarray(cap, np.int64), 1)
    pruned = np.zeros(len(t), bool)
    out_q, out_g, out_s = [], [], []
    todo = np.flatnonzero(t < np.inf)
    k = int(min(gallery_size, 1 << int(np.ceil(np.log2(cap.min(initial=1) + 17)))))
    while len(todo):
        sims, idx, complete = search(queries[todo], min(k + 1, gallery_size))
        own = idx == self_pos[todo, None]
        valid = (idx >= 0) & ~own
        # Complete down to t: the row reaches below the threshold, or holds the whole gallery.
        done = (complete < t[todo]) | (k + 1 >= gallery_size)
        # Or: cap items are so far above the row's end that nothing missing can reach rank cap.
        vals = np.where(valid, sims, -np.inf).astype(np.float64)
        kth = np.sort(vals, axis=1)[:, ::-1][np.arange(len(todo)),
                                             np.minimum(cap[todo], vals.shape[1]) - 1]
        raise_to = kth - 2 * eps - MARGIN
        can_raise = ~done & (cap[todo] <= valid.sum(1)) & (raise_to > complete)
        t[todo[can_raise]] = np.maximum(t[todo[can_raise]], raise_to[can_raise])
        pruned[todo[can_raise]] = True
        fin = done | can_raise
        rows, cols = np.nonzero(valid[fin] & (vals[fin] >= t[todo[fin], None]))
        out_q.append(todo[fin][rows])
        out_g.append(idx[fin][rows, cols])
        out_s.append(sims[fin][rows, cols].astype(np.float32))
        todo = todo[~fin]
        k = min(gallery_size, 2 * k)
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    return Candidates(cat(out_q, np.int64), cat(out_g, np.int64), cat(out_s, np.float32), t,
                      pruned, eps, backend)


def sharded_search(search_shard: Callable[[np.ndarray, int, int, int], tuple],
                   gallery_size: int, limit: int) -> SearchFn:
    """A top-k search over the whole gallery from one that allows at most ``limit`` neighbours
    (faiss-gpu: 2048). ``search_shard(queries, start, stop, k)`` searches gallery[start:stop].

    For k > limit the gallery is cut into ceil(k / limit) shards, each searched for its top
    ``limit``; the merged row is complete above the largest last value of a shard that was not
    returned whole, which is all ``collect_topk`` needs (it asks for more where that is not
    enough)."""

    def search(queries: np.ndarray, k: int):
        if k <= limit:
            sims, idx = search_shard(queries, 0, gallery_size, k)
            complete = sims[:, -1].astype(np.float64) if k < gallery_size else \
                np.full(len(queries), -np.inf)
            return sims, idx, complete
        n_shards = -(-k // limit)
        bounds = np.linspace(0, gallery_size, n_shards + 1).astype(np.int64)
        parts_s, parts_i = [], []
        complete = np.full(len(queries), -np.inf)
        for a, b in itertools.pairwise(bounds):
            kk = int(min(limit, b - a))
            if kk == 0:
                continue
            s, i = search_shard(queries, int(a), int(b), kk)
            parts_s.append(s)
            parts_i.append(np.where(i >= 0, i + a, -1))
            if kk < b - a:
                complete = np.maximum(complete, s[:, -1].astype(np.float64))
        sims = np.concatenate(parts_s, 1)
        idx = np.concatenate(parts_i, 1)
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1), complete

    return search
