"""Exact ranks of the relevant items, from candidate lists with an error bound.

For a query q with candidates C (every gallery item with ``s_hat >= t``), let
``theta = t + eps``. Every item whose exact similarity reaches theta is in C, and so is every item
ranked above it; so for a relevant item r with ``s(q, r) >= theta`` the number of items ranked
above r can be counted exactly from C. The engine chooses t so that every relevant item a metric
needs reaches theta (see ``engine.py``), which is what makes the scores exact.

Only the order between a relevant item and a non-relevant one changes a metric: an impostor more
than ``2 eps`` above r (in ``s_hat``) is certainly above it, one more than ``2 eps`` below
certainly below, and the few in between are compared with float64 dot products, and exactly where
float64 cannot tell (``exact.compare_pairs``). Equal similarity: the smaller gallery index ranks
first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from umlbench.metrics.candidates import Candidates
from umlbench.metrics.exact import compare_pairs, compare_to_value, dot_error_bound, ref_dots

__all__ = ["Ranks", "relevant_ranks"]


@dataclass
class Ranks:
    """Ranks of relevant items, sorted by (query, rank); see ``retrieval.py`` for the layout.

    owner, j: (M,) int64. pos: (M,) rank among the whole gallery. pos_ds: (M,) rank among the
    query's own dataset. covered_ds: (Q,) bool, False where the candidates may miss a relevant
    item that ranks within ``need_ds`` inside its dataset (the engine searches those again).
    """

    owner: np.ndarray
    j: np.ndarray
    pos: np.ndarray
    pos_ds: np.ndarray
    covered_ds: np.ndarray


def relevant_ranks(x: np.ndarray, cand: Candidates, qrow: np.ndarray, grow: np.ndarray,
                   qcls: np.ndarray, gcls: np.ndarray, qds: np.ndarray, gds: np.ndarray,
                   need_ds: np.ndarray, norm_sq: float) -> Ranks:
    """Exact ranks of every relevant candidate that reaches theta (see module docstring).

    x: (N, D) float32 unit rows; qrow/grow: rows of queries and gallery items; qcls/gcls,
    qds/gds: class and dataset codes; need_ds: (Q,) neighbours the per-dataset metrics need.
    """
    nq = len(qrow)
    eps = cand.eps
    eps64 = dot_error_bound(x.shape[1], "fp64", norm_sq)
    q, g, s = cand.q, cand.g, cand.s.astype(np.float64)
    rel = gcls[g] == qcls[q]
    same = gds[g] == qds[q]
    theta = cand.t + eps
    # Same-dataset items that certainly reach theta: enough of them makes the per-dataset
    # ranks exact even where the threshold was raised.
    sure = same & (s >= theta[q] + eps)
    covered_ds = ~cand.pruned | (np.bincount(q[sure], minlength=nq) >= need_ds)

    # Which relevant candidates reach theta (exactly, where s_hat cannot tell).
    ri = np.flatnonzero(rel & (s >= theta[q] - eps))
    unsure = ri[s[ri] < theta[q[ri]] + eps]
    if len(unsure):
        ref = ref_dots(x, qrow[q[unsure]], grow[g[unsure]])
        sign = compare_to_value(x, qrow[q[unsure]], grow[g[unsure]], ref, theta[q[unsure]],
                                eps64)
        drop = np.zeros(len(s), bool)
        drop[unsure[sign < 0]] = True
        ri = ri[~drop[ri]]

    # Impostors sorted by (query, s_hat); a query's block is found by searchsorted on a key.
    key = q * 4.0 + (s + 1.5)  # s_hat in [-1.01, 1.01]: each query owns [4q, 4q + 4)
    pad = 4 * float(np.spacing(max(4.0 * nq, 4.0)))
    w = 2 * eps + pad
    imp = np.flatnonzero(~rel)
    imp = imp[np.argsort(key[imp], kind="stable")]
    imp_ds = imp[same[imp]]
    kr, qr = key[ri], q[ri]
    end = np.searchsorted(key[imp], qr * 4.0 + 4.0, "left")
    hi = np.searchsorted(key[imp], kr + w, "right")
    lo = np.searchsorted(key[imp], kr - w, "left")
    above = end - hi
    above_ds = (np.searchsorted(key[imp_ds], qr * 4.0 + 4.0, "left")
                - np.searchsorted(key[imp_ds], kr + w, "right"))

    # Impostors within 2 eps of a relevant item: compare exactly.
    n_unc = hi - lo
    if n_unc.sum():
        owner = np.repeat(np.arange(len(ri)), n_unc)
        offs = np.arange(n_unc.sum()) - np.repeat(np.cumsum(n_unc) - n_unc, n_unc)
        other = imp[np.repeat(lo, n_unc) + offs]
        mine = ri[owner]
        need = np.unique(np.concatenate([mine, other]))
        val = np.empty(len(s))
        val[need] = ref_dots(x, qrow[q[need]], grow[g[need]])
        sign = compare_pairs(x, qrow[q[mine]], grow[g[other]], grow[g[mine]], val[other],
                             val[mine], eps64)
        up = (sign > 0) | ((sign == 0) & (g[other] < g[mine]))
        above += np.bincount(owner, weights=up, minlength=len(ri)).astype(np.int64)
        above_ds += np.bincount(owner, weights=up & same[other],
                                minlength=len(ri)).astype(np.int64)

    # The relevant items of a query in rank order are sorted by impostors above them.
    order = np.lexsort((above_ds, above, qr))
    qr, above, above_ds = qr[order], above[order], above_ds[order]
    first = np.searchsorted(qr, qr, "left")
    j = np.arange(len(qr)) - first + 1
    return Ranks(qr.astype(np.int64), j.astype(np.int64), (j + above).astype(np.int64),
                 (j + above_ds).astype(np.int64), covered_ds)
