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

from umlbench.metrics.candidates import Candidates
from umlbench.metrics.exact import compare_pairs, compare_to_value, dot_error_bound, ref_dots

__all__ = ["Ranks", "relevant_ranks"]


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
                   need_ds: np.ndarray, norm_sq: float) -> Ranks:
    """Exact ranks for the queries ``members`` (sorted) from all their candidates (q, g, s).

    x: (N, D) float32 unit rows; cand: the pass's thresholds, flags and bounds; qrow/grow: rows
    of queries and gallery items; qcls/gcls, qds/gds: class and dataset codes; need_ds: (Q,)
    neighbours the per-dataset metrics need.
    """
    n = len(members)
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
    # in [-1.01, 1.01], so each query owns [4 loc, 4 loc + 4)). For a relevant item, the
    # impostors more than w above it form a prefix of its query's run; those within w follow.
    key = loc * 4.0 + (1.5 - s)
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    imp_sorted = ~rel[order]
    cum_imp = np.r_[0, np.cumsum(imp_sorted)]
    cum_imp_ds = np.r_[0, np.cumsum(imp_sorted & same[order])]
    start = np.r_[0, np.cumsum(np.bincount(loc, minlength=n))][loc[ri]]
    w = 2 * eps_val + 4 * float(np.spacing(max(4.0 * n, 4.0)))  # plus the key's rounding
    hi = np.searchsorted(key_sorted, key[ri] - w, "left")  # certainly above: [start, hi)
    lo = np.searchsorted(key_sorted, key[ri] + w, "right")  # within w: [hi, lo)
    above = cum_imp[hi] - cum_imp[start]
    above_ds = cum_imp_ds[hi] - cum_imp_ds[start]

    # Impostors within 2 eps_val of a relevant item: compare exactly.
    first = cum_imp[hi]  # the window's impostors are imp_at[first : first + n_win]
    n_win = cum_imp[lo] - first
    if n_win.sum():
        imp_at = order[np.flatnonzero(imp_sorted)]
        owner = np.repeat(np.arange(len(ri)), n_win)
        offs = np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win)
        other = imp_at[np.repeat(first, n_win) + offs]
        mine = ri[owner]
        mark = np.zeros(len(s), bool)
        mark[mine] = True
        mark[other] = True
        need = np.flatnonzero(mark)
        val = np.empty(len(s))
        val[need] = ref_dots(x, qrow[q[need]], grow[g[need]])
        sign = compare_pairs(x, qrow[q[mine]], grow[g[other]], grow[g[mine]], val[other],
                             val[mine], eps64)
        up = (sign > 0) | ((sign == 0) & (g[other] < g[mine]))
        above += np.bincount(owner, weights=up, minlength=len(ri)).astype(np.int64)
        above_ds += np.bincount(owner, weights=up & same[other],
                                minlength=len(ri)).astype(np.int64)

    # A query's relevant items in rank order are sorted by the impostors above them (equal
    # counts above mean equal same-dataset counts too: both grow along that order).
    lr = loc[ri]
    order = np.argsort(lr * (above.max(initial=0) + 1) + above, kind="stable")
    lr, above, above_ds = lr[order], above[order], above_ds[order]
    j = np.arange(len(lr)) - np.searchsorted(lr, lr, "left") + 1
    return Ranks(lr, j, j + above, j + above_ds, covered_ds)
