"""Exact ranks of the relevant items, from candidate lists with error bounds.

For a query q whose candidates are every gallery item selected at threshold t (selection error
``eps``), let ``theta = t + eps``. Every item whose exact similarity reaches theta was selected,
and so was every item ranked above it; so for a relevant item r with ``s(q, r) >= theta`` the
number of items ranked above r can be counted exactly from the candidates. The engine chooses t
so that every relevant item a metric needs reaches theta (see ``engine.py``); that is what makes
the scores exact.

Only the order between a relevant item and a non-relevant one changes a metric. Stored values are
within ``eps_val`` of the exact similarity: an impostor more than ``2 eps_val`` above r is
certainly above it, one more than ``2 eps_val`` below certainly below, and the few in between are
compared in float64 and, where float64 cannot tell, exactly (``exact.compare_pairs``). Equal
similarity: the smaller gallery index ranks first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from umlbench.metrics.candidates import Candidates, run_rank
from umlbench.metrics.exact import (compare_to_value, dot_error_bound, duplicate_ids,
                                    exact_dots_scaled, ref_dots)

__all__ = ["Ranks", "exact_rank_order", "relevant_ranks"]


@dataclass
class Ranks:
    """Ranks of relevant items of the queries ``members``, sorted by (query, rank); see
    ``retrieval.py`` for the layout (``owner`` indexes ``members``).

    pos: rank among the whole gallery; pos_ds: rank among the query's own dataset.
    covered_ds: (m,) bool, False where the candidates may miss a relevant item that ranks
    within ``need_ds`` inside its dataset (the engine searches those again).
    """

    owner: np.ndarray
    j: np.ndarray
    pos: np.ndarray
    pos_ds: np.ndarray
    covered_ds: np.ndarray


def relevant_ranks(x: np.ndarray, members: np.ndarray, q: np.ndarray, g: np.ndarray,
                   s: np.ndarray, cand: Candidates, qrow: np.ndarray, grow: np.ndarray,
                   qcls: np.ndarray, gcls: np.ndarray, qds: np.ndarray, gds: np.ndarray,
                   need_ds: np.ndarray, norm_sq: float, dup: np.ndarray | None = None) -> Ranks:
    """Exact ranks for the queries ``members`` (sorted) from all their candidates (q, g, s).

    x: (N, D) float32 unit rows; cand: the pass's thresholds, flags and bounds; qrow/grow: rows
    of queries and gallery items; qcls/gcls, qds/gds: class and dataset codes; need_ds: (Q,)
    neighbours the per-dataset metrics need; dup: (N,) ``exact.duplicate_ids(x)`` (computed here
    when not given; the engine computes it once per evaluation).

    Memory is linear in the number of candidates, however many of them tie.
    """
    n = len(members)
    dup = duplicate_ids(x) if dup is None else dup
    t, pruned, eps, eps_val = cand.t, cand.pruned, cand.eps, cand.eps_val
    eps64 = dot_error_bound(x.shape[1], "fp64", norm_sq)
    s = s.astype(np.float64)
    rel = gcls[g] == qcls[q]
    same = gds[g] == qds[q]
    theta = t[q] + eps
    loc = np.searchsorted(members, q)
    # Same-dataset items that certainly reach theta: enough of them makes the per-dataset
    # ranks exact even where the threshold was raised.
    sure = same & (s >= theta + eps_val)
    covered_ds = ~pruned[members] | (np.bincount(loc[sure], minlength=n) >= need_ds[members])
    if cand.tie_pruned is not None and gds.min(initial=0) != gds.max(initial=0):
        # Ties dropped beyond cap may hold items of the query's own dataset that rank within
        # need_ds there: such queries are searched again within their dataset.
        covered_ds &= ~cand.tie_pruned[members]

    # Which relevant candidates reach theta (exactly, where the values cannot tell).
    ri = np.flatnonzero(rel & (s >= theta - eps_val))
    unsure = ri[s[ri] < theta[ri] + eps_val]
    if len(unsure):
        ref = ref_dots(x, qrow[q[unsure]], grow[g[unsure]])
        sign = compare_to_value(x, qrow[q[unsure]], grow[g[unsure]], ref, theta[unsure], eps64)
        drop = np.zeros(len(s), bool)
        drop[unsure[sign < 0]] = True
        ri = ri[~drop[ri]]

    # Candidates sorted by query, then by value descending: key = 4 loc + 1.5 - s (values lie
    # in [-1.01, 1.01], so each query owns [4 loc, 4 loc + 4)). Consecutive keys more than w
    # apart split a query's run into clusters: two items of different clusters are ordered by
    # their stored values, so a relevant item's impostors of earlier clusters are certainly
    # above it, those of later clusters certainly below.
    key = loc * 4.0 + (1.5 - s)
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    imp_sorted = ~rel[order]
    cum_imp = np.r_[0, np.cumsum(imp_sorted)]
    cum_imp_ds = np.r_[0, np.cumsum(imp_sorted & same[order])]
    w = 2 * eps_val + 4 * float(np.spacing(max(4.0 * n, 4.0)))  # plus the key's rounding
    cstart = np.r_[True, key_sorted[1:] - key_sorted[:-1] > w]
    cstart[1:] |= loc[order][1:] != loc[order][:-1]
    cid = np.cumsum(cstart) - 1  # cluster of each sorted position
    cfirst = np.flatnonzero(cstart)
    where = np.empty(len(s), np.int64)
    where[order] = np.arange(len(s))
    c_ri = cid[where[ri]]
    start = np.r_[0, np.cumsum(np.bincount(loc, minlength=n))][loc[ri]]
    above = cum_imp[cfirst[c_ri]] - cum_imp[start]
    above_ds = cum_imp_ds[cfirst[c_ri]] - cum_imp_ds[start]

    # Inside a cluster that holds a relevant item and an impostor, order the items exactly
    # (sorting, then counting: memory linear in the cluster, whatever its ties).
    n_clusters = len(cfirst)
    has_ri = np.zeros(n_clusters, bool)
    has_ri[c_ri] = True
    cend = np.r_[cfirst[1:], len(s)]
    open_c = has_ri & (cum_imp[cend] > cum_imp[cfirst])
    if open_c.any():
        is_ri = np.zeros(len(s), bool)
        is_ri[ri] = True
        pos_sorted = np.flatnonzero(open_c[cid] & (imp_sorted | is_ri[order]))
        items = order[pos_sorted]
        rank = _exact_order(x, qrow[q[items]], grow[g[items]], g[items], cid[pos_sorted],
                            dup, eps64)
        items, c_items = items[rank], cid[pos_sorted][rank]
        imp_i = ~rel[items]
        first_i = np.r_[True, c_items[1:] != c_items[:-1]]
        base = np.maximum.accumulate(np.where(first_i, np.arange(len(items)), 0))
        cum_i = np.r_[0, np.cumsum(imp_i)]
        cum_i_ds = np.r_[0, np.cumsum(imp_i & same[items])]
        at = np.empty(len(s), np.int64)
        at[items] = np.arange(len(items))
        inside = open_c[c_ri]
        p = at[ri[inside]]
        above[inside] += cum_i[p] - cum_i[base[p]]
        above_ds[inside] += cum_i_ds[p] - cum_i_ds[base[p]]

    # A query's relevant items in rank order are sorted by the impostors above them (equal
    # counts above mean equal same-dataset counts too: both grow along that order).
    lr = loc[ri]
    order = np.argsort(lr * (above.max(initial=0) + 1) + above, kind="stable")
    lr, above, above_ds = lr[order], above[order], above_ds[order]
    j = run_rank(lr) + 1
    return Ranks(lr, j, j + above, j + above_ds, covered_ds)


def exact_rank_order(x: np.ndarray, qrow: np.ndarray, grow: np.ndarray, dup: np.ndarray,
                     eps_val: float, norm_sq: float):
    """``candidates.Order`` for queries ``qrow`` and gallery ``grow`` (rows of ``x``): stored
    values within ``eps_val`` order items more than ``2 eps_val`` apart; the runs closer than
    that are ordered exactly (``_exact_order``)."""
    eps64 = dot_error_bound(x.shape[1], "fp64", norm_sq)

    def order(q: np.ndarray, g: np.ndarray, s: np.ndarray) -> np.ndarray:
        # (query, value descending): float64 values, so that the order of values ~1e-14 apart
        # (the torch pass's stored values) is kept.
        s = np.asarray(s, np.float64)
        o = np.lexsort((-s, q))
        qo, so = q[o], s[o]
        # float64 subtraction of two floats in [-1.01, 1.01] adds at most one rounding.
        new = np.r_[True, (qo[1:] != qo[:-1])
                    | (so[:-1] - so[1:] > 2 * eps_val * (1 + 1e-12) + 2.0**-50)]
        cl = np.cumsum(new) - 1
        return o[_exact_order(x, qrow[qo], grow[g[o]], g[o], cl, dup, eps64)]

    return order


def _exact_order(x: np.ndarray, qr: np.ndarray, gr: np.ndarray, g: np.ndarray, cl: np.ndarray,
                 dup: np.ndarray, eps64: float) -> np.ndarray:
    """Permutation that puts items (M,) grouped by cluster ``cl`` (non-decreasing; one query per
    cluster, rows ``qr``) in exact order within each cluster: exact similarity to the gallery rows
    ``gr`` descending, then gallery position ``g`` ascending.

    A cluster whose gallery rows are all one row (``dup``) is a tie: ``g`` decides, nothing is
    computed. Otherwise float64 values (within ``eps64``) order it, and runs whose neighbours lie
    within ``2 eps64`` are ordered by exact integer dot products, one per distinct row."""
    m = len(g)
    d = dup[gr]
    first = np.r_[True, cl[1:] != cl[:-1]]
    run = np.cumsum(first) - 1
    d_first = d[np.flatnonzero(first)][run]
    mixed = (np.bincount(run, weights=d != d_first) > 0)[run]
    # Clusters occupy contiguous ranges and only move inside them: each part's order can be
    # written back onto its own (sorted) positions.
    out = np.arange(m)
    tied = np.flatnonzero(~mixed)
    if len(tied):
        out[tied] = tied[np.argsort(run[tied] * (int(g.max()) + 1) + g[tied], kind="stable")]
    at = np.flatnonzero(mixed)
    if len(at):
        out[at] = at[_mixed_order(x, qr[at], gr[at], g[at], run[at], d[at], eps64)]
    return out


def _mixed_order(x, qr, gr, g, cl, d, eps64) -> np.ndarray:
    """``_exact_order`` for clusters of several distinct rows (``d``: their duplicate ids)."""
    m = len(g)
    v = ref_dots(x, qr, gr)
    o = np.lexsort((g, -v, cl))
    v_o, cl_o, d_o = v[o], cl[o], d[o]
    new = np.r_[True, (cl_o[1:] != cl_o[:-1]) | (v_o[:-1] - v_o[1:] > 2 * eps64)]
    sub = np.cumsum(new) - 1
    sub_first = np.flatnonzero(new)
    sub_end = np.r_[sub_first[1:], m]
    unsure = np.bincount(sub, weights=d_o != d_o[sub_first][sub]) > 0
    ex = np.zeros(m, np.int64)  # rank of the exact value inside an unsure run
    for k in np.flatnonzero(unsure).tolist():
        a, b = sub_first[k], sub_end[k]
        _, inv = np.unique(d_o[a:b], return_inverse=True)
        rep = o[a:b][np.unique(inv, return_index=True)[1]]  # one item per distinct row
        val = exact_dots_scaled(x, qr[rep], gr[rep])
        levels = sorted(set(val), reverse=True)
        rank_of = {u: i for i, u in enumerate(levels)}
        ex[a:b] = np.array([rank_of[u] for u in val], np.int64)[inv.reshape(-1)]
    return o[np.lexsort((g[o], ex, sub))]
