"""Exact ranks when most rows are copies of a few: collapsed models, constant outputs.

A model that has collapsed maps many images to bit-identical embeddings. Their similarities to any
query are exactly equal, so the tie rule alone orders them (smaller gallery index first), and a
candidate pass over the rows would list, sort and count millions of equal values. Here the work
is done once per *distinct* row instead:

1. The distinct gallery rows are ordered for each distinct query row by exact similarity (float64
   products, and exact integer arithmetic where float64 cannot separate two values): a list of
   *levels*, each the distinct rows of one exact value (one row, unless two distinct rows have
   exactly the same similarity), holding every gallery item of those rows.
2. A gallery item's rank for a query is the number of items in better levels, plus its place
   among its level's items by gallery index, plus one, less one when the query's own item comes
   before it. That is counting (sorted positions and prefix sums), never a list of pairs.
3. Queries of one distinct row and one class share the ordered list of their relevant items;
   each query reads it up to the depth its metrics need, with its own item taken out.

Cost: O(U^2) similarities for U distinct rows, plus one (class, row) list per group and the
relevant items within each query's depth; memory is bounded by a chunk of queries. The engine
takes this path when U is small (``worthwhile``).
"""

from __future__ import annotations

import numpy as np

from umlbench.metrics.exact import dot_error_bound, exact_dots_scaled

__all__ = ["MAX_UNIQUE", "levels", "relevant_ranks_dedup", "worthwhile"]

MAX_UNIQUE = 2048  # distinct rows at most: the (U, U) similarity table stays ~32 MB
_MAX_GROUPS = 20000  # (distinct row, class) groups of queries, each a few NumPy calls
_CHUNK = 1 << 22  # (query, relevant item) entries scored at once


def worthwhile(dup: np.ndarray, qrow: np.ndarray, qcls: np.ndarray) -> bool:
    """Whether the rows (``dup``: their ``exact.duplicate_ids``) have so few distinct values that
    counting per distinct row beats the candidate pass: at most ``MAX_UNIQUE`` and at most a
    quarter of the rows."""
    u = np.unique(dup)
    if len(u) > min(MAX_UNIQUE, len(dup) // 4):
        return False
    groups = np.unique(dup[qrow].astype(np.int64) * (int(qcls.max(initial=0)) + 1) + qcls)
    return len(groups) <= _MAX_GROUPS


def levels(x: np.ndarray, wrow: np.ndarray, vrow: np.ndarray, norm_sq: float) -> np.ndarray:
    """Exact order of distinct gallery rows ``vrow`` for each distinct query row ``wrow`` (rows
    of ``x`` (N, D) float32): (W, V) int64 level of each gallery row, 0 = most similar, equal
    levels for exactly equal similarities (whatever the gallery index)."""
    eps64 = dot_error_bound(x.shape[1], "fp64", norm_sq)
    s = x[wrow].astype(np.float64) @ x[vrow].astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s, order, 1)
    # A new level wherever two neighbours in float64 order are certainly apart; runs closer than
    # 2 eps64 are split exactly below.
    apart = s_sorted[:, :-1] - s_sorted[:, 1:] > 2 * eps64
    out = np.empty_like(order)
    for w in range(len(wrow)):
        lev = np.r_[0, np.cumsum(apart[w])]
        runs = np.flatnonzero(np.bincount(lev) > 1)
        if len(runs):  # near-equal values: exact integers, one level per exact value
            shift = np.zeros(len(lev), np.int64)
            for run in runs.tolist():
                at = np.flatnonzero(lev == run)
                exact = exact_dots_scaled(x, np.full(len(at), wrow[w]), vrow[order[w, at]])
                values = sorted(set(exact), reverse=True)
                rank = {v: i for i, v in enumerate(values)}
                shift[at] = [rank[v] for v in exact]
                shift[at[-1] + 1:] += len(values) - 1
            lev = lev + shift
        out[w, order[w]] = lev
    return out


def relevant_ranks_dedup(x, dup, qrow, self_pos, qcls, grow, gcls, need, norm_sq, consume) -> None:
    """Exact ranks of the relevant items of every query against gallery ``grow`` (in tie
    order: position 0 ranks first among equals), handed to ``consume(queries, owner, pos, j)``
    chunk by chunk in the layout of ``retrieval.py`` (``owner`` indexes ``queries``, an array of
    query indices).

    qrow (Q,), self_pos (Q,) (-1: not in the gallery), qcls (Q,): the queries; grow (G,),
    gcls (G,): the gallery; need (Q,): deepest rank any metric reads per query; dup: (N,)
    ``exact.duplicate_ids`` of the rows of ``x``. Relevant items ranked below ``need`` are left
    out, as the candidate pass leaves them out.
    """
    gu, g_inv = np.unique(dup[grow], return_inverse=True)
    g_inv = g_inv.reshape(-1)
    qu, q_inv = np.unique(dup[qrow], return_inverse=True)
    q_inv = q_inv.reshape(-1)
    rep_g = grow[np.unique(g_inv, return_index=True)[1]]
    rep_q = qrow[np.unique(q_inv, return_index=True)[1]]
    lev = levels(x, rep_q, rep_g, norm_sq)  # (W, V)
    mult = np.bincount(g_inv, minlength=len(gu))
    n_g = len(grow)
    # Each gallery item's place among the items of its own distinct row (by position).
    by_row = np.lexsort((np.arange(n_g), g_inv))
    place = np.empty(n_g, np.int64)
    place[by_row] = np.arange(n_g) - np.searchsorted(g_inv[by_row], g_inv[by_row])
    cls_order = np.argsort(gcls, kind="stable")  # gallery items by class, positions ascending
    cls_vals = gcls[cls_order]

    group_key = q_inv.astype(np.int64) * (int(max(qcls.max(initial=0), gcls.max(initial=0))) + 1) \
        + qcls
    keys, group_of = np.unique(group_key, return_inverse=True)
    group_of = group_of.reshape(-1)
    members = np.split(np.argsort(group_of, kind="stable"),
                       np.cumsum(np.bincount(group_of, minlength=len(keys)))[:-1])
    buf: list[tuple] = []
    held = 0
    bases: dict[int, np.ndarray] = {}
    for grp in members:
        w = int(q_inv[grp[0]])
        c = qcls[grp[0]]
        a, b = np.searchsorted(cls_vals, c, "left"), np.searchsorted(cls_vals, c, "right")
        items = cls_order[a:b]  # the class's gallery positions, ascending
        if not len(items):
            continue
        lw = lev[w]
        if w not in bases:
            count = np.bincount(lw, weights=mult, minlength=int(lw.max()) + 1).astype(np.int64)
            bases[w] = np.r_[0, np.cumsum(count)]  # items in better levels
        base = bases[w]
        il = lw[g_inv[items]]
        within = _within_level(lw, il, items, g_inv, place)
        r0 = base[il] + within + 1  # rank with every gallery item present
        order = np.argsort(r0, kind="stable")
        items, r0 = items[order], r0[order]
        sp = self_pos[grp]
        # The query's own item: where it sits in the class list (-1: not a relevant item).
        k = _index_in(items, sp)
        # Items ranked within need + 1 with every item present: the own item taken out moves
        # the later ones up by one.
        depth = int(np.searchsorted(r0, int(need[grp].max()) + 1, side="right"))
        if depth == 0:
            continue
        idx = np.arange(depth)
        step = max(1, _CHUNK // depth)
        for s in range(0, len(grp), step):
            qs, ks = grp[s:s + step], k[s:s + step]
            after = idx[None, :] > ks[:, None]  # (m, depth): the own item comes first
            pos = r0[None, :depth] - (after & (ks[:, None] >= 0))
            j = idx[None, :] + 1 - (after & (ks[:, None] >= 0))
            keep = (idx[None, :] != ks[:, None]) & (pos <= need[qs][:, None])
            own, col = np.nonzero(keep)
            buf.append((qs, own, pos[own, col], j[own, col]))
            held += len(own) + len(qs)
            if held >= _CHUNK:
                _flush(buf, consume)
                buf, held = [], 0
    if buf:
        _flush(buf, consume)


def _index_in(items: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Index of each of ``positions`` in ``items`` (an array of distinct positions), -1 where
    absent."""
    where = np.full(len(positions), -1, np.int64)
    inside = positions >= 0
    if inside.any():
        order = np.argsort(items, kind="stable")
        at = np.searchsorted(items[order], positions[inside])
        at = np.minimum(at, len(items) - 1)
        hit = items[order][at] == positions[inside]
        where[np.flatnonzero(inside)[hit]] = order[at[hit]]
    return where


def _within_level(lw, il, items, g_inv, place) -> np.ndarray:
    """Number of gallery items ahead of each of ``items`` inside its own level (positions
    smaller than its own): its place within its distinct row, plus, where a level holds several
    distinct rows (exactly equal similarities), the items of the other rows before it."""
    within = place[items].copy()
    shared = np.bincount(lw, minlength=int(lw.max()) + 1) > 1
    if shared[il].any():
        for lv in np.flatnonzero(shared).tolist():
            rows = np.flatnonzero(lw == lv)
            members = np.flatnonzero(np.isin(g_inv, rows))  # the level's items, ascending
            sel = np.flatnonzero(il == lv)
            within[sel] = np.searchsorted(members, items[sel])
    return within


def _flush(buf, consume) -> None:
    queries, owners, pos, js = [], [], [], []
    offset = 0
    for qs, own, p, j in buf:
        queries.append(qs)
        owners.append(own + offset)
        pos.append(p)
        js.append(j)
        offset += len(qs)
    consume(np.concatenate(queries), np.concatenate(owners).astype(np.int64),
            np.concatenate(pos).astype(np.int64), np.concatenate(js).astype(np.int64))
