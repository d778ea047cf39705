"""The torch candidate pass: blocked matmul, a threshold per query, each pair computed once.

Rows are grouped so that queries which are also gallery items (leave-one-out) come first; for
those the similarity matrix is symmetric, so each off-diagonal block is computed once and read both
ways (its rows serve the block's queries, its columns the other block's). The rest (query-only rows
such as In-shop's queries, gallery-only rows) is searched one way. The engine sorts rows by class
within each group, so a query's own class sits near the diagonal and other blocks rarely hold
anything above its threshold: each block is read once per direction through maxima over runs of
``_W`` entries, and only the runs whose maximum reaches their threshold are opened.

Precision "bf16" rounds each block's operands to bfloat16 (kept in float32 tensors) and lets the
matmul use bf16 units with float32 accumulation (AMX / avx512_bf16 through oneDNN on CPU, TF32 or
bf16 tensor cores on CUDA); because the inputs are already bf16 values, no kernel rounds them
again, and ``exact.dot_error_bound(D, "bf16")`` holds for every such kernel. Precision "fp32"
forces IEEE float32 matmuls. Either way each selected pair's similarity is then recomputed in
float64 from the float32 rows (still in cache), so the stored values are within ~1e-7.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from umlbench.metrics.candidates import Candidates, Emit, Store
from umlbench.metrics.exact import dot_error_bound

__all__ = ["collect_blocks", "cpu_has_bf16", "matmul_precision", "operand", "own_class_best",
           "thresholds"]

DEFAULT_BLOCK = (1024, 2048)  # (query rows, gallery columns) per matmul
_W = 64  # a block is scanned through maxima over runs of _W rows / columns


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (avx512_bf16 or AMX); Linux only."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@contextlib.contextmanager
def matmul_precision(mode: str, device: torch.device):
    """Let float32 matmuls use bf16 units ("bf16", "bf16x3": only valid on bf16-exact inputs,
    which ``operand`` makes) or force IEEE float32 ("fp32"), and restore the user's settings
    afterwards."""
    fast = mode != "fp32"
    if device.type == "cuda":
        backend = torch.backends.cuda.matmul
        value = "tf32" if fast else "ieee"  # TF32 is exact on bf16 inputs
    else:
        backend = getattr(torch.backends.mkldnn, "matmul", None)
        value = "bf16" if fast else "ieee"
    old = getattr(backend, "fp32_precision", None) if backend is not None else None
    if old is None:  # older torch: the legacy switch
        legacy = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("medium" if fast else "highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(legacy)
        return
    backend.fp32_precision = value
    try:
        yield
    finally:
        backend.fp32_precision = old


def operand(t: torch.Tensor, mode: str, side: int = 0) -> torch.Tensor:
    """The matmul operand for rows ``t`` (R, D) float32: ``t`` itself ("fp32"); ``t`` rounded to
    bf16 values to nearest ("bf16"); or, for "bf16x3", with h = bf16(t) and l = bf16(t - h),
    [h, h, l] (side 0) or [h, l, h] (side 1), so that operand(a, 0) @ operand(b, 1).T sums
    h.h' + h.l' + l.h' (R, 3 D)."""
    if mode == "fp32":
        return t
    h = t.to(torch.bfloat16).float()
    if mode == "bf16":
        return h
    lo = (t - h).to(torch.bfloat16).float()  # t - h is exact in float32
    return torch.cat([h, h, lo] if side == 0 else [h, lo, h], 1)


def _view(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """Rows of ``x``: a slice (no copy) when they are consecutive, else a gathered copy."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
        return x[int(rows[0]):int(rows[-1]) + 1]
    return x[torch.from_numpy(np.asarray(rows, np.int64)).to(x.device)]


def collect_blocks(
    x: torch.Tensor, qrow: np.ndarray, grow: np.ndarray, self_pos: np.ndarray,
    t: np.ndarray, cap: np.ndarray, mode: str, norm_sq: float, emit: Emit, *,
    block: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Candidates:
    """Every gallery item selected at threshold ``t`` per query, handed to ``emit`` one block of
    queries at a time as soon as that block is complete (see ``candidates.Store``).

    Args:
        x: (N, D) float32 unit rows (on the search device).
        qrow, grow: (Q,), (G,) row of each query / gallery item in ``x``; rows should be grouped
            and class-sorted as the module docstring says (only speed depends on it).
        self_pos: (Q,) gallery position of each query, -1 when it is not in the gallery.
        t, cap: (Q,) thresholds (+inf: skip the query) and the neighbours each query needs.
        block: (query rows, gallery columns) per matmul.
    """
    bq, bg = block or DEFAULT_BLOCK
    dev = x.device
    eps = dot_error_bound(x.shape[1], mode, norm_sq)
    zq = np.flatnonzero(self_pos >= 0)  # queries that are gallery items ...
    zg = self_pos[zq]  # ... and their gallery positions (the same rows of x)
    in_z = np.zeros(len(grow), bool)
    in_z[zg] = True
    go = np.flatnonzero(~in_z)  # gallery-only items
    go = go[np.argsort(grow[go], kind="stable")]
    qo = np.flatnonzero(self_pos < 0)  # query-only rows
    # A block of queries is complete once its own row sweep is over: the columns that serve it
    # are read while earlier blocks sweep.
    group_of = np.empty(len(qrow), np.int64)
    group_of[zq] = np.arange(len(zq)) // bq
    n_z = -(-len(zq) // bq)
    group_of[qo] = n_z + np.arange(len(qo)) // bq
    store = Store(t, cap, eps, eps, group_of, emit, f"torch-{mode}")
    active = store.t < np.inf
    xz, xgo, xqo = _view(x, qrow[zq]), _view(x, grow[go]), _view(x, qrow[qo])
    zq_t, qo_t = torch.from_numpy(zq).to(dev), torch.from_numpy(qo).to(dev)
    thr = thresholds(store.t, dev)
    tz, tqo = thr[zq_t], thr[qo_t]  # thresholds in the pass's row order
    z_blocks = [(a, min(a + bq, len(zq))) for a in range(0, len(zq), bq)]
    go_blocks = [(a, min(a + bg, len(go))) for a in range(0, len(go), bg)]
    total = n_z + -(-len(qo) // bq)

    def refresh():
        nonlocal thr, tz, tqo
        if store.changed:
            thr = thresholds(store.t, dev)
            tz, tqo = thr[zq_t], thr[qo_t]
            store.changed = False

    def finished(group: int):
        store.done(group)
        if progress:
            progress(group + 1, total)

    with torch.no_grad(), matmul_precision(mode, dev):
        for i, (a, b) in enumerate(z_blocks):
            ra = operand(xz[a:b], mode)
            mine = active[zq[a:b]].any()
            # Rows serve queries a..b against gallery c..d (c >= a); columns serve queries c..d
            # against gallery a..b where the rows of their own block will not (c..d beyond b).
            for c in range(a if mine else b, len(zq), bg):
                d = min(c + bg, len(zq))
                cols = d > b and active[zq[max(c, b):d]].any()
                if not (mine or cols):
                    continue
                s = ra @ operand(xz[c:d], mode, 1).T
                if c < b:  # the block meets the diagonal: drop each query's own entry
                    j = torch.arange(max(a, c), min(b, d), device=dev)
                    s[j - a, j - c] = -torch.inf
                if mine:
                    _rows(s, tz[a:b], zq[a:b], zg[c:d], store)
                if cols:
                    _cols(s, tz[c:d], zq[c:d], zg[a:b], store, skip=max(0, b - c))
                refresh()
            if mine:
                for c, d in go_blocks:
                    _rows(ra @ operand(xgo[c:d], mode, 1).T, tz[a:b], zq[a:b], go[c:d], store)
                    refresh()
            finished(i)
        for i, a in enumerate(range(0, len(qo), bq)):
            if active[qo[a:a + bq]].any():
                ra = operand(xqo[a:a + bq], mode)
                for gal, pos in ((xz, zg), (xgo, go)):
                    for c in range(0, len(pos), bg):
                        s = ra @ operand(gal[c:c + bg], mode, 1).T
                        _rows(s, tqo[a:a + bq], qo[a:a + bq], pos[c:c + bg], store)
                        refresh()
            finished(n_z + i)
    return store.finish()


def thresholds(t: np.ndarray, dev: torch.device) -> torch.Tensor:
    """float64 thresholds -> float32, rounded down so that no qualifying value is missed, and
    at least -4 (below any similarity) so that the -inf used for padding and self never passes."""
    t = np.maximum(t, -4.0)
    t32 = t.astype(np.float32)
    low = t32.astype(np.float64) > t
    t32[low] = np.nextafter(t32[low], np.float32(-np.inf))
    return torch.from_numpy(t32).to(dev)


def _padded(s: torch.Tensor, dim: int) -> torch.Tensor:
    """``s`` with dimension ``dim`` padded by -inf to a multiple of ``_W``."""
    extra = -s.shape[dim] % _W
    if not extra:
        return s
    pad = (0, extra) if dim == 1 else (0, 0, 0, extra)
    return torch.nn.functional.pad(s, pad, value=-torch.inf)


def _rows(s, t, rows_q, cols_g, store) -> None:
    """Entries of block ``s`` (rows: queries ``rows_q`` with thresholds ``t``; columns: gallery
    ``cols_g``) that reach their row's threshold."""
    sp = _padded(s, 1)
    runs = sp.view(sp.shape[0], -1, _W)
    r, ch = torch.nonzero(runs.amax(2) >= t.unsqueeze(1), as_tuple=True)
    if r.numel():
        p, e = torch.nonzero(runs[r, ch] >= t[r].unsqueeze(1), as_tuple=True)
        vals = runs[r[p], ch[p], e]
        store.add(rows_q[r[p].cpu().numpy()], cols_g[(ch[p] * _W + e).cpu().numpy()],
                  vals.cpu().numpy())


def _cols(s, t, cols_q, rows_g, store, skip: int = 0) -> None:
    """Entries of block ``s`` read by column: column j is query ``cols_q[j]`` (threshold
    ``t[j]``) against gallery ``rows_g``; the first ``skip`` columns are not read."""
    if skip:
        t = t.clone()
        t[:skip] = torch.inf
    sp = _padded(s, 0)
    runs = sp.view(-1, _W, sp.shape[1])
    rc, col = torch.nonzero(runs.amax(1) >= t.unsqueeze(0), as_tuple=True)
    if rc.numel():
        p, e = torch.nonzero(runs[rc, :, col] >= t[col].unsqueeze(1), as_tuple=True)
        vals = runs[rc[p], e, col[p]]
        store.add(cols_q[col[p].cpu().numpy()], rows_g[(rc[p] * _W + e).cpu().numpy()],
                  vals.cpu().numpy())


def own_class_best(x: torch.Tensor, qrow: np.ndarray, grow: np.ndarray, qcls: np.ndarray,
                   gcls: np.ndarray, use_max: bool, mode: str,
                   block: int = 512) -> np.ndarray:
    """Approximate similarity (bound ``dot_error_bound(D, mode)``) of each query to its best
    (``use_max``) or worst relevant item.

    Rows are sorted by class and cut into segments of whole classes (at most ``block`` rows, or
    one larger class in tiles), so only pairs near the diagonal are computed. Returns (Q,)
    float64, NaN where a query has no relevant gallery item.
    """
    dev = x.device
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
    rows, cls, qidx, is_g = rows[order], cls[order], qidx[order], is_g[order]
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    out = np.full(len(qrow), np.nan)
    fill = -torch.inf if use_max else torch.inf
    segments, a = [], 0
    for s, e in zip(starts, ends):  # pack whole classes into segments of <= block rows
        if e - a > block and s > a:
            segments.append((a, s))
            a = s
    segments.append((a, len(rows)))
    cls_t = torch.from_numpy(cls).to(dev)
    gal_t = torch.from_numpy(is_g).to(dev)
    with torch.no_grad(), matmul_precision(mode, dev):
        for a, b in segments:
            for ra in range(a, b, block):
                rb = min(ra + block, b)
                if not (qidx[ra:rb] >= 0).any():
                    continue
                best = torch.full((rb - ra,), fill, dtype=torch.float32, device=dev)
                xr = operand(_view(x, rows[ra:rb]), mode)
                for ca in range(a, b, block):
                    cb = min(ca + block, b)
                    s = xr @ operand(_view(x, rows[ca:cb]), mode, 1).T
                    ok = (cls_t[ra:rb, None] == cls_t[None, ca:cb]) & gal_t[None, ca:cb]
                    if ca == ra:  # rows are distinct: self pairs lie on this diagonal
                        ok.fill_diagonal_(False)
                    s.masked_fill_(~ok, fill)
                    best = torch.maximum(best, s.amax(1)) if use_max else \
                        torch.minimum(best, s.amin(1))
                val = best.double().cpu().numpy()
                q = qidx[ra:rb]
                keep = (q >= 0) & np.isfinite(val)
                out[q[keep]] = val[keep]
    return out
