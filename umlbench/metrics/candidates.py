"""Candidate lists: every gallery item whose approximate similarity reaches a query's threshold.

A candidate pass selects, for each query, the gallery items with ``s_hat >= t[q]`` (self
excluded), where the selecting value ``s_hat`` is within ``eps`` of the exact similarity (see
``exact.py``). Each selected item is stored with a value within ``eps_val`` of the exact one
(the torch pass recomputes it in float64, so ``eps_val`` is ~1e-14 while ``eps`` is ~8e-3 for
bf16, and it leaves out the items whose value cannot reach ``t[q] + eps``: nothing below that is
ever counted, see ``ranks.py``). The caller's threshold comes from the query's own class
(``engine.py``); when a query collects far more than the ``cap`` neighbours any metric needs (a
badly trained model), its threshold is raised to what its ``cap``-th best item proves. Nothing that can reach rank ``cap``
is ever dropped.

Backends differ only in how they select: the torch block pass (``blockpass.py``) reads a
threshold per query directly; faiss returns the top k, so k doubles until the list is complete
down to the threshold (``collect_topk``), and searches limited to k <= 2048 (faiss-gpu) merge
gallery shards (``sharded_search``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BUCKET", "MARGIN", "Candidates", "Emit", "Order", "Store", "collect_topk",
           "run_rank", "sharded_search"]

MARGIN = 1e-9  # slack between a raised threshold and the values that justify it
BUCKET = 8192  # queries per group where a backend has no natural grouping
_BASE_LIMIT = 1 << 22  # stored entries before the first check for over-budget queries
BUDGET_SLACK = 64  # a query may hold 2 * cap + BUDGET_SLACK candidates before pruning
_ORDER_CHUNK = 1 << 19  # candidates put in exact order at once when dropping ties
_PAD_ENTRIES = 1 << 22  # padded (query, value) matrix entries partitioned at once


@dataclass
class Candidates:
    """What a candidate pass leaves once every group has been handed over.

    t: (Q,) float64: every gallery item other than the query itself whose exact similarity
    reaches ``t[q] + eps`` was listed (with faiss: every item whose selecting approximation,
    within ``eps``, reaches ``t[q]``). pruned: (Q,) bool, True where
    ``t`` was raised above the requested threshold; then at least ``cap[q]`` listed values are
    ``>= t[q] + eps + eps_val + MARGIN``. Listed values are within ``eps_val`` of the exact
    similarity. tie_pruned: (Q,) bool, True where listed items were dropped because ``cap[q]``
    listed items rank above them in exact order (ties and near-ties that no threshold can split):
    their ranks beyond ``cap`` are gone, also within the query's own dataset.
    """

    t: np.ndarray
    pruned: np.ndarray
    eps: float
    eps_val: float
    backend: str
    tie_pruned: np.ndarray | None = None
    # torch pass: per block of queries that are gallery items, the last block its columns
    # served (``blockpass.collect_blocks``; the block itself: read one way).
    horizon: np.ndarray | None = None


# Called once per group of queries whose candidates are complete: (members (m,) sorted query
# indices, q (M,) query index, g (M,) gallery position, s (M,) float64 value, candidates).
Emit = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Candidates], None]
# Exact rank order of candidates (q (M,), g (M,), s (M,) float64 within ``eps_val``): a
# permutation that groups them by query and puts each query's in rank order (``ranks.py``).
Order = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def run_rank(v: np.ndarray) -> np.ndarray:
    """Position of each entry of ``v`` (M,) (grouped: equal values consecutive) inside its run
    of equal values, (M,) int64; linear, where searching each value costs M log M."""
    idx = np.arange(len(v))
    first = np.r_[True, v[1:] != v[:-1]] if len(v) else np.zeros(0, bool)
    return idx - np.maximum.accumulate(np.where(first, idx, 0))


def by_query(q: np.ndarray) -> np.ndarray:
    """Stable order of entries by query index ``q`` (M,). Keys spanning fewer than 2**16 values
    (a group of queries) sort as uint16, which NumPy sorts by radix in O(M); wider ones as they
    are (timsort, which merges the query-sorted chunks the pass appends)."""
    if len(q) == 0:
        return np.zeros(0, np.int64)
    lo = int(q.min())
    if int(q.max()) - lo < 1 << 16:
        return np.argsort((q - lo).astype(np.uint16), kind="stable")
    return np.argsort(q, kind="stable")


def _kth_largest(q: np.ndarray, s: np.ndarray, idx: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The ``k[i]``-th largest of the values ``s`` of query ``idx[i]`` ((M,) entries grouped by
    query ``q``, every query of ``idx`` holding at least ``k[i]``): (len(idx),) float64.

    The queries' values are laid out as rows of a padded matrix, a slice of rows at a time, and
    partitioned along the rows by one call per distinct k, instead of one call per query."""
    counts = np.bincount(q, minlength=int(idx[-1]) + 1)[idx] if len(idx) else idx
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    col = np.arange(len(q)) - np.repeat(starts, counts)
    out = np.empty(len(idx), np.float64)
    width = int(counts.max(initial=1))
    step = max(1, _PAD_ENTRIES // width)
    for a in range(0, len(idx), step):
        b = min(a + step, len(idx))
        lo, hi = starts[a], starts[b - 1] + counts[b - 1]
        pad = np.full((b - a, int(counts[a:b].max())), np.inf)
        pad[np.repeat(np.arange(b - a), counts[a:b]), col[lo:hi]] = -s[lo:hi]
        ks = k[a:b]
        for kk in np.unique(ks).tolist():
            rows = np.flatnonzero(ks == kk)
            part = pad if len(rows) == b - a else pad[rows]
            out[a + rows] = -np.partition(part, kk - 1, axis=1)[:, kk - 1]
    return out


def budget(cap: np.ndarray) -> np.ndarray:
    """Candidates a query may hold before its threshold is raised: (Q,) int64."""
    return 2 * np.asarray(cap, np.int64) + BUDGET_SLACK


class Store:
    """Growing candidate lists of groups of queries, with thresholds that rise when a query
    over-collects; each group is handed to ``emit`` (and freed) once complete."""

    def __init__(self, t: np.ndarray, cap: np.ndarray, eps: float, eps_val: float,
                 group_of: np.ndarray, emit: Emit, backend: str,
                 order: Order | None = None, gallery_dup: np.ndarray | None = None) -> None:
        self.info = Candidates(np.asarray(t, np.float64).copy(), np.zeros(len(t), bool), eps,
                               eps_val, backend, np.zeros(len(t), bool))
        self.order = order
        # Where tie pruning kept a query's first cap items, its last kept item (gallery
        # position cut_g, -1: none) and that item's row (duplicate id): a later item of the
        # same row and a larger gallery position ties with it and ranks after it, beyond cap,
        # so it is not stored at all (gallery_dup: (G,) ``exact.duplicate_ids`` of each
        # gallery item's row).
        self.gallery_dup = gallery_dup
        self.cut_g = np.full(len(t), -1, np.int64)
        self.cut_dup = np.zeros(len(t), np.int64)
        self.has_cut = False
        self.t, self.pruned = self.info.t, self.info.pruned
        self.cap = np.maximum(np.asarray(cap, np.int64), 1)
        self.budget = budget(self.cap)
        self.eps, self.eps_val = eps, eps_val
        self.group_of = np.asarray(group_of, np.int64)
        n_groups = int(self.group_of.max(initial=-1)) + 1
        self.members = np.split(np.argsort(self.group_of, kind="stable"),
                                np.cumsum(np.bincount(self.group_of, minlength=n_groups))[:-1])
        self.chunks: list[list | None] = [[] for _ in range(n_groups)]
        self.emit = emit
        self.size = 0
        self.limit = _BASE_LIMIT
        self.version = 0  # counts raises of thresholds, so that readers know to refresh
        # Per query: candidates held, and the count at which its group is next cut down. With
        # an exact order, a group is cut down as soon as one of its queries passes its budget,
        # so that its raised threshold and tie cut (``cut_g``) filter the rest of the pass
        # early instead of after millions of entries.
        self.count = np.zeros(len(t), np.int64)
        self.next_check = self.budget.copy()

    def add(self, q: np.ndarray, g: np.ndarray, s: np.ndarray) -> None:
        if not len(q):
            return
        # float64 values: the torch pass stores them within ~1e-14, which float32 would lose.
        q, g, s = q.astype(np.int32), g.astype(np.int32), s.astype(np.float64)
        if self.has_cut:
            cg = self.cut_g[q]
            beyond = (g > cg) & (cg >= 0) & (self.gallery_dup[g] == self.cut_dup[q])
            if beyond.any():
                keep = ~beyond
                q, g, s = q[keep], g[keep], s[keep]
                if not len(q):
                    return
        grp = self.group_of[q]
        lo, hi = int(grp.min()), int(grp.max())
        if lo == hi:
            self.chunks[lo].append((q, g, s))
        else:
            order = np.argsort(grp, kind="stable")
            cuts = np.searchsorted(grp[order], np.arange(lo, hi + 2))
            for k, (a, e) in enumerate(itertools.pairwise(cuts)):
                if e > a:
                    sel = order[a:e]
                    self.chunks[lo + k].append((q[sel], g[sel], s[sel]))
        self.size += len(q)
        if self.order is not None:
            qlo = int(q.min())
            c = np.bincount(q - qlo)  # a block's queries: a short range
            span = slice(qlo, qlo + len(c))
            self.count[span] += c
            hit = np.flatnonzero((self.count[span] > self.next_check[span]) & (c > 0)) + qlo
            for b in np.unique(self.group_of[hit]).tolist():
                self._compact_group(b)
        if self.size > self.limit:
            self._compact()
            self.limit = 2 * self.size + _BASE_LIMIT

    def _compact_group(self, b: int) -> None:
        """Cut group ``b`` down now (one of its queries passed its next check)."""
        q, g, s = self._part(b)
        self.size -= len(q)
        shrunk = self._shrink(q, g, s)
        if shrunk is not None:
            self.chunks[b] = [shrunk]
            self.version += 1
            q = shrunk[0]
        self.size += len(q)
        m = self.members[b]
        self.count[m] = 0
        if len(q):
            qlo = int(q.min())
            c = np.bincount(q - qlo)
            self.count[qlo:qlo + len(c)] += c
        # Checked again after another budget's worth: queries that stay over it (ties kept
        # without an order) cost one cut per budget of new entries, not one per add.
        self.next_check[m] = np.maximum(self.count[m], self.budget[m]) + self.budget[m]

    def _part(self, b: int):
        c = self.chunks[b]
        if not c:
            e = np.zeros(0, np.int32)
            return e, e, np.zeros(0, np.float64)
        if len(c) > 1:
            c[:] = [tuple(np.concatenate([x[i] for x in c]) for i in range(3))]
        return c[0]

    def _compact(self) -> None:
        self.size = 0
        for b, chunks in enumerate(self.chunks):
            if not chunks:
                continue
            q, g, s = self._part(b)
            shrunk = self._shrink(q, g, s)
            if shrunk is not None:
                self.chunks[b] = [shrunk]
                self.version += 1
            self.size += len(self.chunks[b][0][0])

    def _shrink(self, q, g, s, complete: bool = False):
        """The candidates of over-budget queries cut down to what ranks within their cap, or
        None when no query is over budget. ``complete``: no more candidates will arrive."""
        over = np.bincount(q, minlength=len(self.t)) > self.budget
        if not over.any():
            return None
        vals = s[over[q]].astype(np.float64)
        if complete and vals.max() - vals.min() <= 2 * self.eps_val + MARGIN:
            pass  # one tie (thresholds no longer matter): raising could not drop anything
        else:
            keep = self._raise(q, s, over)
            q, g, s = q[keep], g[keep], s[keep]
        over = np.bincount(q, minlength=len(self.t)) > self.budget
        if over.any() and self.order is not None:
            # Ties or near-ties the threshold cannot split: keep the first cap items of each
            # such query in exact order, which outrank every item dropped.
            keep = self._by_rank(q, g, s, over)
            q, g, s = q[keep], g[keep], s[keep]
        return q, g, s

    def _raise(self, q, s, over) -> np.ndarray:
        """Raise the thresholds of the over-budget queries to what their cap-th best value
        proves; returns the mask of items to keep."""
        sel = np.flatnonzero(over[q])
        # Grouped by query (one integer sort), then each query's cap-th best value by partition:
        # a sort on (query, value) of millions of near-ties costs several times more.
        sel = sel[by_query(q[sel])]
        idx = np.flatnonzero(over)
        kth = _kth_largest(q[sel], s[sel], idx, self.cap[idx])
        new = kth - self.eps_val - self.eps - MARGIN
        up = new > self.t[idx]
        self.t[idx[up]] = new[up]
        self.pruned[idx[up]] = True
        # Keep every item whose exact value may reach theta = t + eps: ranks.py counts nothing
        # below it (every item above a counted relevant item lies above it too).
        return s >= self.t[q] + self.eps - self.eps_val

    def _by_rank(self, q, g, s, over) -> np.ndarray:
        """Mask of the items to keep: all of the queries not ``over``; of the others, the first
        ``cap`` in exact rank order (``self.order``)."""
        sel = np.flatnonzero(over[q])
        sel = sel[by_query(q[sel])]
        keep = ~over[q]
        # Ordered a slice of whole queries at a time: the exact order's temporaries stay near
        # _ORDER_CHUNK entries whatever the group holds.
        qsel = q[sel]
        cuts = np.searchsorted(qsel, qsel[::_ORDER_CHUNK], "left").tolist() + [len(sel)]
        for a, e in itertools.pairwise(sorted(set(cuts))):
            part = sel[a:e]
            perm = part[self.order(q[part], g[part], s[part])]
            qs = q[perm]
            rank = run_rank(qs)
            keep[perm[rank < self.cap[qs]]] = True
            if self.gallery_dup is not None:
                last = perm[rank == self.cap[qs] - 1]  # each over-budget query's cap-th item
                self.cut_g[q[last]] = g[last]
                self.cut_dup[q[last]] = self.gallery_dup[g[last]]
                self.has_cut = True
        self.info.tie_pruned[np.flatnonzero(over)] = True
        return keep

    def take(self, b: int):
        """Group ``b`` is complete: remove its candidates from the store (None if taken)."""
        if self.chunks[b] is None:
            return None
        part = self._part(b)
        self.chunks[b] = None
        self.size -= len(part[0])
        return part

    def hand_over(self, b: int, part) -> None:
        """Pass a taken group to ``emit`` (may run outside the lock that guards ``add``)."""
        if part is not None:
            q, g, s = part
            # A complete group may have collected far past its caps since the last compaction
            # (ties arrive until the end): cut it down before ranking. Only this group's
            # queries change, and no pass reads their thresholds any more.
            shrunk = self._shrink(q, g, s, complete=True) \
                if len(q) > BUDGET_SLACK * len(self.members[b]) else None
            if shrunk is not None:
                q, g, s = shrunk
            self.emit(self.members[b], q.astype(np.int64), g.astype(np.int64), s, self.info)

    def finish(self) -> Candidates:
        for b in range(len(self.chunks)):
            self.hand_over(b, self.take(b))
        return self.info


SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def collect_topk(search: SearchFn, queries: np.ndarray, gallery_size: int, self_pos: np.ndarray,
                 t: np.ndarray, cap: np.ndarray, eps: float, backend: str,
                 emit: Emit) -> Candidates:
    """Candidates from a top-k search (faiss): k doubles per query until complete.

    ``search(queries (Q, D) float32, k)`` returns sims (Q, k) descending, gallery positions
    (Q, k) (-1 = none) and ``complete`` (Q,): every item with ``s_hat > complete`` is in the row.
    The values stored are the search's own (``eps_val == eps``).
    """
    cap = np.maximum(np.asarray(cap, np.int64), 1)
    store = Store(t, cap, eps, eps, np.arange(len(cap)) // BUCKET, emit, backend)
    store.limit = np.iinfo(np.int64).max  # top-k lists are bounded already
    todo = np.flatnonzero(store.t < np.inf)
    k = int(min(gallery_size, 1 << int(np.ceil(np.log2(cap.min(initial=1) + 17)))))
    while len(todo):
        sims, idx, complete = search(queries[todo], min(k + 1, gallery_size))
        valid = (idx >= 0) & (idx != self_pos[todo, None])
        # Complete down to t: the row reaches below the threshold, or holds the whole gallery.
        done = (complete < store.t[todo]) | (k + 1 >= gallery_size)
        # Or: cap items lie so far above the row's end that nothing missing can reach rank cap.
        vals = np.where(valid, sims, -np.inf).astype(np.float64)
        kth = -np.sort(-vals, axis=1)[np.arange(len(todo)),
                                      np.minimum(cap[todo], vals.shape[1]) - 1]
        raise_to = kth - 2 * eps - MARGIN
        can_raise = ~done & (cap[todo] <= valid.sum(1)) & (raise_to > complete)
        hit = todo[can_raise]
        up = raise_to[can_raise] > store.t[hit]
        store.t[hit[up]] = raise_to[can_raise][up]
        store.pruned[hit[up]] = True
        fin = done | can_raise
        rows, cols = np.nonzero(valid[fin] & (vals[fin] >= store.t[todo[fin], None]))
        store.add(todo[fin][rows], idx[fin][rows, cols], sims[fin][rows, cols])
        todo = todo[~fin]
        k = min(gallery_size, 2 * k)
    return store.finish()


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
