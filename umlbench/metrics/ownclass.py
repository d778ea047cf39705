"""Each query's similarity to its best or worst relevant item: the start of its threshold.

Rows are sorted by class. Classes of up to ``_SMALL`` rows are scored all pairs at once, batched
by size, in float64 (so the values are within ``exact.dot_error_bound(D, "fp64")``); larger
classes in tiles with the search's own matmul (within its bound). Either way the work is the sum
of the squared class sizes, not N^2.
"""

from __future__ import annotations

import numpy as np
import torch

from umlbench.metrics.blockpass import matmul_precision, operand, view
from umlbench.metrics.exact import dot_error_bound

__all__ = ["own_class_best"]

_SMALL = 512  # largest class scored exactly in float64
_TILE = 512  # tile of the larger classes
_BUDGET = 1 << 22  # float64 entries per batch


def own_class_best(x: torch.Tensor, qrow: np.ndarray, grow: np.ndarray, qcls: np.ndarray,
                   gcls: np.ndarray, use_max: bool, mode: str,
                   norm_sq: float) -> tuple[np.ndarray, np.ndarray]:
    """Best (``use_max``) or worst similarity of each query to a relevant gallery item.

    x: (N, D) float32 unit rows (a tensor on the search device). Returns value (Q,) float64
    (NaN where a query has no relevant item) and its error bound (Q,) float64.
    """
    mark = np.zeros(len(x), bool)
    mark[qrow] = mark[grow] = True
    rows = np.flatnonzero(mark)
    pos = np.full(len(x), -1, np.int64)
    pos[rows] = np.arange(len(rows))
    cls = np.empty(len(rows), np.int64)
    cls[pos[grow]] = gcls
    cls[pos[qrow]] = qcls
    qidx = np.full(len(rows), -1, np.int64)
    qidx[pos[qrow]] = np.arange(len(qrow))
    is_g = np.zeros(len(rows), bool)
    is_g[pos[grow]] = True
    order = np.argsort(cls, kind="stable")
    rows, qidx, is_g = rows[order], qidx[order], is_g[order]
    cls = cls[order]
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    value = np.full(len(qrow), np.nan)
    err = np.full(len(qrow), dot_error_bound(x.shape[1], "fp64", norm_sq))
    fill = -np.inf if use_max else np.inf
    with torch.no_grad():
        # Small classes, batched by size (padded to a power of two).
        width = 1 << np.ceil(np.log2(np.maximum(sizes, 2))).astype(np.int64)
        for p in np.unique(width[sizes <= _SMALL]):
            cls_ids = np.flatnonzero((width == p) & (sizes <= _SMALL))
            per = max(1, _BUDGET // (int(p) * max(int(p), x.shape[1])))
            for k in range(0, len(cls_ids), per):
                chunk = cls_ids[k:k + per]
                slot = starts[chunk, None] + np.arange(p)[None, :]  # (C, p) positions
                real = np.arange(p)[None, :] < sizes[chunk, None]
                slot = np.where(real, slot, 0)
                xb = x[torch.from_numpy(rows[slot]).to(x.device)].double().cpu()
                s = torch.bmm(xb, xb.transpose(1, 2)).numpy()  # (C, p, p)
                ok = real[:, None, :] & is_g[slot][:, None, :] & ~np.eye(p, dtype=bool)[None]
                s = np.where(ok, s, fill)
                best = s.max(2) if use_max else s.min(2)
                q = np.where(real, qidx[slot], -1)
                keep = (q >= 0) & np.isfinite(best)
                value[q[keep]] = best[keep]
        # Larger classes: tiles of the class's square with the search's matmul.
        big = np.flatnonzero(sizes > _SMALL)
        bound = dot_error_bound(x.shape[1], mode, norm_sq)
        with matmul_precision(mode, x.device):
            for c in big:
                a, b = starts[c], starts[c] + sizes[c]
                for ra in range(a, b, _TILE):
                    rb = min(ra + _TILE, b)
                    if not (qidx[ra:rb] >= 0).any():
                        continue
                    xr = operand(view(x, rows[ra:rb]), mode)
                    best = torch.full((rb - ra,), fill, dtype=torch.float32, device=x.device)
                    for ca in range(a, b, _TILE):
                        cb = min(ca + _TILE, b)
                        s = xr @ operand(view(x, rows[ca:cb]), mode, 1).T
                        ok = torch.from_numpy(np.broadcast_to(is_g[None, ca:cb],
                                                              (rb - ra, cb - ca)).copy())
                        if ca == ra:  # rows are distinct: self pairs lie on this diagonal
                            ok.fill_diagonal_(False)
                        s.masked_fill_(~ok.to(x.device), fill)
                        best = torch.maximum(best, s.amax(1)) if use_max else \
                            torch.minimum(best, s.amin(1))
                    val = best.double().cpu().numpy()
                    q = qidx[ra:rb]
                    keep = (q >= 0) & np.isfinite(val)
                    value[q[keep]] = val[keep]
                    err[q[keep]] = bound
    return value, err
