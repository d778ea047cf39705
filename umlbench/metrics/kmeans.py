"""Lloyd k-means with exact assignments, on the engine's matmul kernel.

The algorithm (it defines NMI/F1's clustering; the same for every backend and device):
    init:   k distinct points, ``numpy.random.default_rng(seed).choice(n, k, replace=False)``;
    repeat ``niter`` times: assign every point to its nearest centroid, then move each centroid to
            the mean of its points (summed in float64, stored as float32; a centroid without
            points stays where it is);
    finally assign once more to the final centroids (as faiss's ``Kmeans`` + ``index.search``).

"Nearest" is exact: the score ``x . c - |c|^2 / 2`` (the same order as Euclidean distance) of the
float32 point and centroid, as a real number, with ties going to the smaller centroid index. The
matmul pass finds every centroid within the error bound of the best one, starting from a
threshold given by the point's previous centroid (after the first round almost always the winner);
float64, and integer arithmetic where float64 cannot separate two scores, settle the rest.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from umlbench.metrics import blockpass
from umlbench.metrics.exact import U32, dot_error_bound, exact_dot

__all__ = ["assign", "kmeans"]

_BLOCK = (4096, 2048)  # (points, centroids) per matmul


def kmeans(x: np.ndarray, k: int, seed: int = 1234, niter: int = 20, device: str = "cpu",
           mode: str = "fp32", norm_sq: float = 1.0) -> np.ndarray:
    """Cluster ``x`` (N, D) float32 rows into ``k`` clusters; returns (N,) int64 cluster ids."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    cent = x[np.sort(rng.choice(n, k, replace=False))].copy()
    dev = torch.device(device)
    xa = blockpass.operand(torch.from_numpy(x).to(dev), mode)
    prev = None
    for _ in range(niter):
        prev = assign(x, xa, cent, prev, mode, norm_sq)
        cent = _update(x, prev, cent)
    return assign(x, xa, cent, prev, mode, norm_sq)


def _update(x: np.ndarray, labels: np.ndarray, cent: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=len(cent))
    sums = np.stack([np.bincount(labels, weights=x[:, d].astype(np.float64), minlength=len(cent))
                     for d in range(x.shape[1])], 1)
    out = cent.copy()
    full = counts > 0
    out[full] = (sums[full] / counts[full, None]).astype(np.float32)
    return out


def _scores64(x, cent, half64, pts, cs) -> np.ndarray:
    return (x[pts].astype(np.float64) * cent[cs].astype(np.float64)).sum(1) - half64[cs]


def assign(x: np.ndarray, xa: torch.Tensor, cent: np.ndarray, prev: np.ndarray | None,
           mode: str, norm_sq: float) -> np.ndarray:
    """Exact nearest centroid of every row of ``x``: (N,) int64 (see module docstring)."""
    n, dim = x.shape
    dev = xa.device
    half64 = 0.5 * (cent.astype(np.float64) ** 2).sum(1)
    cmax = float(np.sqrt((cent.astype(np.float64) ** 2).sum(1).max(initial=0)))
    hmax = float(half64.max(initial=0))
    eps = (dot_error_bound(dim, mode, np.sqrt(norm_sq) * max(cmax, 1e-30))
           + U32 * (1 + 2 * hmax + cmax) + 1e-15)
    eps64 = 2 * dot_error_bound(dim, "fp64", max(norm_sq, cmax**2, 1.0))
    ca = blockpass.operand(torch.from_numpy(cent).to(dev), mode, 1)
    half = torch.from_numpy(half64.astype(np.float32)).to(dev)
    if prev is None:
        t = np.full(n, -np.inf)
    else:  # the best score is at least the previous centroid's
        t = _scores64(x, cent, half64, np.arange(n), prev) - eps64 - eps
    thr = blockpass.thresholds(t, dev)
    width = 2 * eps + 1e-6  # contenders lie within 2 eps of the best; 1e-6 absorbs rounding
    pts, cs = [], []
    best = torch.full((n,), -torch.inf, device=dev)
    bp, bc = _BLOCK
    with torch.no_grad(), blockpass.matmul_precision(mode, dev):
        for a in range(0, n, bp):
            b = min(a + bp, n)
            for c in range(0, len(cent), bc):
                d = min(c + bc, len(cent))
                s = xa[a:b] @ ca[c:d].T - half[c:d]
                top = s.amax(1)
                best[a:b] = torch.maximum(best[a:b], top)
                cut = torch.maximum(thr[a:b], best[a:b] - width)
                rows = torch.nonzero(top >= cut).squeeze(1)
                if rows.numel():
                    sub = s.index_select(0, rows)
                    r, col = torch.nonzero(sub >= cut[rows].unsqueeze(1), as_tuple=True)
                    keep = sub[r, col] >= best[a:b][rows[r]] - width
                    pts.append((rows[r][keep] + a).cpu().numpy())
                    cs.append((col[keep] + c).cpu().numpy())
    pts, cs = np.concatenate(pts), np.concatenate(cs)
    order = np.lexsort((cs, pts))
    pts, cs = pts[order], cs[order]
    # Contenders of a point: decide in float64, and exactly where float64 cannot.
    v64 = _scores64(x, cent, half64, pts, cs)
    starts = np.flatnonzero(np.r_[True, pts[1:] != pts[:-1]])
    top = np.repeat(np.maximum.reduceat(v64, starts), np.diff(np.r_[starts, len(pts)]))
    close = v64 >= top - 2 * eps64
    n_close = np.bincount(pts[close], minlength=n)
    out = np.empty(n, np.int64)
    one = close & (n_close[pts] == 1)
    out[pts[one]] = cs[one]
    for p in np.flatnonzero(n_close > 1):
        idx = np.flatnonzero(close & (pts == p))
        out[p] = _argmax_exact(x, cent, p, cs[idx])
    return out


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
