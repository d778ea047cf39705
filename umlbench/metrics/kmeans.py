"""Lloyd k-means with exact assignments, on the engine's matmul kernel.

The algorithm (it defines NMI/F1's clustering; the same for every backend and device):
    init:   k distinct points, ``numpy.random.default_rng(seed).choice(n, k, replace=False)``;
    repeat ``niter`` times: assign every point to its nearest centroid, then move each centroid to
            the mean of its points (summed in float64, stored as float32; a centroid without
            points stays where it is);
    finally assign once more to the final centroids (as faiss's ``Kmeans`` + ``index.search``).

"Nearest" is exact: the score ``x . c - |c|^2 / 2`` (the same order as Euclidean distance) of the
float32 point and centroid, as a real number, with ties going to the smaller centroid index. The
matmul pass finds every centroid within the error bound of the best one; float64, and integer
arithmetic where float64 cannot separate two scores, settle the rest.

Most points keep their centroid from one round to the next, and that can be proven without
scoring them again (Hamerly's bound): a point's margin (best score minus the best other score)
shrinks by at most how far the scores can move, |x| |c' - c| + | |c'|^2 - |c|^2 | / 2 per
centroid. Only points whose margin may have closed are scored again; the result is the same as
scoring every point every round.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from umlbench.metrics import blockpass
from umlbench.metrics.exact import U32, dot_error_bound, duplicate_ids, exact_dot

__all__ = ["assign", "kmeans"]

_BLOCK = (4096, 1024)  # (points, centroids) per matmul


def kmeans(x: np.ndarray, k: int, seed: int = 1234, niter: int = 20, device: str = "cpu",
           mode: str = "fp32", norm_sq: float = 1.0) -> np.ndarray:
    """Cluster ``x`` (N, D) float32 rows into ``k`` clusters; returns (N,) int64 cluster ids."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    cent = x[np.sort(rng.choice(n, k, replace=False))].copy()
    xt = torch.from_numpy(x).to(torch.device(device))
    labels, margin = assign(x, xt, cent, None, mode, norm_sq)
    for _ in range(niter):
        new = _update(x, labels, cent)
        shift = _score_shift(cent, new, norm_sq)
        cent = new
        margin -= shift[labels] + shift.max(initial=0.0)
        todo = np.flatnonzero(margin <= 0)  # the others may have caught up: score again
        if len(todo):
            labels[todo], margin[todo] = assign(x, xt, cent, labels, mode, norm_sq, todo)
    return labels


def _update(x: np.ndarray, labels: np.ndarray, cent: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=len(cent))
    sums = np.stack([np.bincount(labels, weights=x[:, d].astype(np.float64), minlength=len(cent))
                     for d in range(x.shape[1])], 1)
    out = cent.copy()
    full = counts > 0
    out[full] = (sums[full] / counts[full, None]).astype(np.float32)
    return out


def _score_shift(old: np.ndarray, new: np.ndarray, norm_sq: float) -> np.ndarray:
    """Per centroid, a bound on how much any point's score can change: (k,) float64."""
    o, w = old.astype(np.float64), new.astype(np.float64)
    move = np.sqrt(((w - o) ** 2).sum(1))
    half = 0.5 * np.abs((w**2).sum(1) - (o**2).sum(1))
    return (np.sqrt(norm_sq) * move + half) * (1 + 1e-9) + 1e-15


def _scores64(x, cent, half64, pts, cs) -> np.ndarray:
    return np.einsum("ij,ij->i", x[pts], cent[cs], dtype=np.float64) - half64[cs]


def assign(x: np.ndarray, xt: torch.Tensor, cent: np.ndarray, prev: np.ndarray | None,
           mode: str, norm_sq: float, rows: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest centroid of the rows ``rows`` (default all) of ``x`` (``xt``: the same on
    the device), and a lower bound on each one's margin over its best other centroid.

    ``prev``: the previous labels of all rows (their scores bound the best one from below).
    Returns (labels (R,) int64, margin (R,) float64).
    """
    rows = np.arange(len(x)) if rows is None else rows
    n, dim = len(rows), x.shape[1]
    dev = xt.device
    half64 = 0.5 * (cent.astype(np.float64) ** 2).sum(1)
    cmax = float(np.sqrt((cent.astype(np.float64) ** 2).sum(1).max(initial=0)))
    hmax = float(half64.max(initial=0))
    eps = (dot_error_bound(dim, mode, np.sqrt(norm_sq) * max(cmax, 1e-30))
           + U32 * (1 + 2 * hmax + cmax) + 1e-15)
    eps64 = 2 * dot_error_bound(dim, "fp64", max(norm_sq, cmax**2, 1.0))
    ca = blockpass.operand(torch.from_numpy(cent).to(dev), mode, 1)
    half = torch.from_numpy(half64.astype(np.float32)).to(dev)
    xa = blockpass.operand(xt if len(rows) == len(x) else
                           xt[torch.from_numpy(rows).to(dev)], mode)
    if prev is None:
        t = np.full(n, -np.inf)
    else:  # the best score is at least the previous centroid's
        t = _scores64(x, cent, half64, rows, prev[rows]) - eps64 - eps
    thr = blockpass.thresholds(t, dev)
    width = 2 * eps + 1e-6  # contenders lie within 2 eps of the best; 1e-6 absorbs rounding
    pts, cs = [], []
    best = torch.full((n,), -torch.inf, device=dev)
    arg = torch.zeros(n, dtype=torch.int64, device=dev)
    second = torch.full((n,), -torch.inf, device=dev)
    bp, bc = _BLOCK
    with torch.no_grad(), blockpass.matmul_precision(mode, dev):
        for a in range(0, n, bp):
            b = min(a + bp, n)
            for c in range(0, len(cent), bc):
                d = min(c + bc, len(cent))
                s = xa[a:b] @ ca[c:d].T - half[c:d]
                top, at = s.max(1)
                cut = torch.maximum(thr[a:b], torch.maximum(best[a:b], top) - width)
                hit = torch.nonzero(top >= cut).squeeze(1)
                if hit.numel():
                    sub = s.index_select(0, hit)
                    r, col = torch.nonzero(sub >= cut[hit].unsqueeze(1), as_tuple=True)
                    pts.append((hit[r] + a).cpu().numpy())
                    cs.append((col + c).cpu().numpy())
                # Keep the best two values per point (the runner-up bounds the margin).
                s[torch.arange(b - a, device=dev), at] = -torch.inf
                runner = s.amax(1)
                better = top > best[a:b]
                second[a:b] = torch.maximum(torch.minimum(best[a:b], top),
                                            torch.maximum(second[a:b], runner))
                arg[a:b] = torch.where(better, at + c, arg[a:b])
                best[a:b] = torch.maximum(best[a:b], top)
    pts, cs = np.concatenate(pts), np.concatenate(cs)
    order = np.lexsort((cs, pts))
    pts, cs = pts[order], cs[order]
    # Contenders of a point: decide in float64, and exactly where float64 cannot.
    v64 = _scores64(x, cent, half64, rows[pts], cs)
    starts = np.flatnonzero(np.r_[True, pts[1:] != pts[:-1]])
    top64 = np.repeat(np.maximum.reduceat(v64, starts), np.diff(np.r_[starts, len(pts)]))
    close = v64 >= top64 - 2 * eps64
    n_close = np.bincount(pts[close], minlength=n)
    out = np.empty(n, np.int64)
    one = close & (n_close[pts] == 1)
    out[pts[one]] = cs[one]
    multi = close & (n_close[pts] > 1)
    if multi.any():
        mp, mc = pts[multi], cs[multi]  # sorted by point, then centroid
        cuts = np.flatnonzero(np.r_[True, mp[1:] != mp[:-1]])
        # Bit-identical points score identically and bit-identical centroids tie (the smaller
        # index wins): collapsed inputs, where every point contends for every centroid, then
        # cost one exact decision per distinct (point row, centroid rows) instead of one each.
        pid = duplicate_ids(x[rows[mp[cuts]]])
        cid = duplicate_ids(cent)
        memo: dict[tuple, int] = {}
        for i, (a, e) in enumerate(zip(cuts.tolist(), np.r_[cuts[1:], len(mp)].tolist())):
            cands = mc[a:e]
            _, first = np.unique(cid[cands], return_index=True)
            distinct = cands[np.sort(first)]  # the smallest index of each distinct centroid
            key = (int(pid[i]), distinct.tobytes())
            if key not in memo:
                memo[key] = (int(distinct[0]) if len(distinct) == 1 else
                             _argmax_exact(x, cent, rows[mp[a]], distinct))
            out[mp[a]] = memo[key]
    # Margin: exact winner's score (from below) minus the best other approximation (from above).
    best_np, second_np = best.double().cpu().numpy(), second.double().cpu().numpy()
    other = np.where(arg.cpu().numpy() == out, second_np, best_np)
    won = _scores64(x, cent, half64, rows, out) - eps64
    return out, won - other - eps


def _argmax_exact(x, cent, p, cands) -> int:
    best_c, best_v = None, None
    for c in sorted(int(c) for c in cands):
        v = _exact_score(x, cent, p, c)
        if best_v is None or v > best_v:
            best_c, best_v = c, v
    return best_c


def _exact_score(x, cent, p, c) -> Fraction:
    """x . c - |c|^2 / 2 as an exact rational."""
    both = np.stack([x[p], cent[c]])
    return exact_dot(both, 0, 1) - exact_dot(both, 1, 1) / 2
