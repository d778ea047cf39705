"""The torch candidate pass: blocked matmul, a threshold per query, each pair computed once.

Rows are reordered so that queries which are also gallery items (leave-one-out) come first; for
those the similarity matrix is symmetric, so each off-diagonal block is computed once and read both
ways (its rows serve the block's queries, its columns the other block's). The rest (query-only rows
such as In-shop's queries, gallery-only rows) is searched one way. Within each group rows are
sorted by class, so a query's own class sits near the diagonal and other blocks rarely hold
anything above its threshold: a block is read by one ``amax`` per direction, and only rows (or
columns) whose maximum reaches their threshold are scanned.

Precision "bf16" rounds the embeddings to bfloat16 (kept in float32 tensors) and lets the matmul
use bf16 units with float32 accumulation (AMX / avx512_bf16 through oneDNN on CPU, TF32 or bf16
tensor cores on CUDA); because the inputs are already bf16 values, no kernel rounds them again, and
``exact.dot_error_bound(D, "bf16")`` holds for every such kernel. Precision "fp32" forces IEEE
float32 matmuls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from umlbench.metrics.candidates import Candidates, Store
from umlbench.metrics.exact import dot_error_bound

__all__ = ["collect_blocks", "cpu_has_bf16", "matmul_precision", "prepare"]

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
    """Let float32 matmuls use bf16 units ("bf16", only valid on bf16-exact inputs) or force
    IEEE float32 ("fp32"), and restore the user's settings afterwards."""
    if device.type == "cuda":
        backend = torch.backends.cuda.matmul
        value = "tf32" if mode == "bf16" else "ieee"  # TF32 is exact on bf16 inputs
    else:
        backend = getattr(torch.backends.mkldnn, "matmul", None)
        value = "bf16" if mode == "bf16" else "ieee"
    old = getattr(backend, "fp32_precision", None) if backend is not None else None
    if old is None:  # older torch: the legacy switch
        legacy = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("medium" if mode == "bf16" else "highest")
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


def prepare(x: np.ndarray, device: torch.device, mode: str) -> torch.Tensor:
    """(N, D) float32 unit rows -> the tensor the matmuls read (bf16-rounded for "bf16")."""
    t = torch.from_numpy(x).to(device)
    return t.to(torch.bfloat16).float() if mode == "bf16" else t


def collect_blocks(
    xa: torch.Tensor, qrow: np.ndarray, grow: np.ndarray, self_pos: np.ndarray,
    t: np.ndarray, cap: np.ndarray, mode: str, norm_sq: float, *,
    qkey: np.ndarray | None = None, gkey: np.ndarray | None = None,
    block: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Candidates:
    """Candidates of every query with a finite threshold (see ``candidates.Candidates``).

    Args:
        xa: (N, D) float32 tensor from :func:`prepare`.
        qrow, grow: (Q,), (G,) row of each query / gallery item in ``xa``.
        self_pos: (Q,) gallery position of each query, -1 when it is not in the gallery.
        t, cap: (Q,) thresholds (+inf: skip the query) and the neighbours each query needs.
        qkey, gkey: sort keys (class ids) that put similar rows next to each other.
        block: (query rows, gallery columns) per matmul.
    """
    bq, bg = block or DEFAULT_BLOCK
    dev = xa.device
    eps = dot_error_bound(xa.shape[1], mode, norm_sq)
    store = Store(t, cap, eps)
    qkey = np.zeros(len(qrow), np.int64) if qkey is None else qkey
    gkey = np.zeros(len(grow), np.int64) if gkey is None else gkey
    active = store.t < np.inf
    shared = np.flatnonzero(self_pos >= 0)
    zq = shared[np.argsort(qkey[shared], kind="stable")]  # queries that are gallery items
    zg = self_pos[zq]  # ... and their gallery positions (same rows of xa)
    in_z = np.zeros(len(grow), bool)
    in_z[zg] = True
    go = np.flatnonzero(~in_z)
    go = go[np.argsort(gkey[go], kind="stable")]  # gallery-only items
    qo = np.flatnonzero(self_pos < 0)
    qo = qo[np.argsort(qkey[qo], kind="stable")]  # query-only rows
    xz = xa[torch.from_numpy(qrow[zq]).to(dev)]
    xgo = xa[torch.from_numpy(grow[go]).to(dev)]
    xqo = xa[torch.from_numpy(qrow[qo]).to(dev)]
    thr = thresholds(store.t, dev)
    z_blocks = [(a, min(a + bq, len(zq))) for a in range(0, len(zq), bq)]
    go_blocks = [(a, min(a + bg, len(go))) for a in range(0, len(go), bg)]
    total, done = len(z_blocks) + -(-len(qo) // bq), 0

    def refresh():
        nonlocal thr
        if store.changed:
            thr = thresholds(store.t, dev)
            store.changed = False

    with torch.no_grad(), matmul_precision(mode, dev):
        for a, b in z_blocks:
            if active[zq[a:b]].any():
                rows_q = zq[a:b]
                for c in range(a, len(zq), bg):
                    d = min(c + bg, len(zq))
                    s = xz[a:b] @ xz[c:d].T
                    if c < b:  # the block meets the diagonal: drop each query's own entry
                        i = torch.arange(max(a, c), min(b, d), device=dev)
                        s[i - a, i - c] = -torch.inf
                    _rows(s, rows_q, zg[c:d], thr, store)
                    # Columns serve the queries c..d against gallery a..b, except where the
                    # rows have already covered those pairs (the part of c..d inside a..b).
                    if d > b and active[zq[max(c, b):d]].any():
                        _cols(s, zq[c:d], zg[a:b], thr, store, skip=max(0, b - c))
                    refresh()
                for c, d in go_blocks:
                    _rows(xz[a:b] @ xgo[c:d].T, rows_q, go[c:d], thr, store)
                    refresh()
            else:  # the block's own queries are done, but its columns still serve others
                for c in range(b, len(zq), bg):
                    d = min(c + bg, len(zq))
                    if active[zq[c:d]].any():
                        _cols(xz[a:b] @ xz[c:d].T, zq[c:d], zg[a:b], thr, store)
                        refresh()
            done += 1
            if progress:
                progress(done, total)
        for a in range(0, len(qo), bq):
            rows_q = qo[a:a + bq]
            if active[rows_q].any():
                for c in range(0, len(zq), bg):
                    _rows(xqo[a:a + bq] @ xz[c:c + bg].T, rows_q, zg[c:c + bg], thr, store)
                    refresh()
                for c, d in go_blocks:
                    _rows(xqo[a:a + bq] @ xgo[c:d].T, rows_q, go[c:d], thr, store)
                    refresh()
            done += 1
            if progress:
                progress(done, total)
    return store.finish(f"torch-{mode}")


def thresholds(t: np.ndarray, dev: torch.device) -> torch.Tensor:
    """float64 thresholds -> float32, rounded down so that no qualifying value is missed, and
    at least -4 (below any similarity) so that the -inf used for padding and self never passes."""
    t32 = np.maximum(t, -4.0).astype(np.float32)
    low = t32.astype(np.float64) > np.maximum(t, -4.0)
    t32[low] = np.nextafter(t32[low], np.float32(-np.inf))
    return torch.from_numpy(t32).to(dev)


def _padded(s: torch.Tensor, dim: int) -> torch.Tensor:
    """``s`` with dimension ``dim`` padded by -inf to a multiple of ``_W``."""
    extra = -s.shape[dim] % _W
    if not extra:
        return s
    pad = (0, extra) if dim == 1 else (0, 0, 0, extra)
    return torch.nn.functional.pad(s, pad, value=-torch.inf)


def _rows(s: torch.Tensor, rows_q: np.ndarray, cols_g: np.ndarray, thr: torch.Tensor,
          store: Store) -> None:
    """Entries of block ``s`` (rows: queries ``rows_q``, columns: gallery ``cols_g``) that reach
    their row's threshold. Maxima over runs of ``_W`` columns find them in one read."""
    dev = s.device
    t = thr[torch.from_numpy(rows_q).to(dev)]
    sp = _padded(s, 1)
    chunks = sp.view(sp.shape[0], -1, _W)
    r, ch = torch.nonzero(chunks.amax(2) >= t.unsqueeze(1), as_tuple=True)
    if r.numel():
        vals = chunks[r, ch]  # (P, _W)
        p, e = torch.nonzero(vals >= t[r].unsqueeze(1), as_tuple=True)
        row = r[p].cpu().numpy()
        col = (ch[p] * _W + e).cpu().numpy()
        store.add(rows_q[row], cols_g[col], vals[p, e].cpu().numpy())


def _cols(s: torch.Tensor, cols_q: np.ndarray, rows_g: np.ndarray, thr: torch.Tensor,
          store: Store, skip: int = 0) -> None:
    """Entries of block ``s`` read by column: column j is query ``cols_q[j]`` against gallery
    ``rows_g``. The first ``skip`` columns are not read."""
    dev = s.device
    t = thr[torch.from_numpy(cols_q).to(dev)]
    if skip:
        t = t.clone()
        t[:skip] = torch.inf
    sp = _padded(s, 0)
    chunks = sp.view(-1, _W, sp.shape[1])
    rc, col = torch.nonzero(chunks.amax(1) >= t.unsqueeze(0), as_tuple=True)
    if rc.numel():
        vals = chunks[rc, :, col]  # (P, _W)
        p, e = torch.nonzero(vals >= t[col].unsqueeze(1), as_tuple=True)
        row = (rc[p] * _W + e).cpu().numpy()
        store.add(cols_q[col[p].cpu().numpy()], rows_g[row], vals[p, e].cpu().numpy())


def own_class_best(xa: torch.Tensor, qrow: np.ndarray, grow: np.ndarray, qcls: np.ndarray,
                   gcls: np.ndarray, use_max: bool, mode: str,
                   block: int = 2048) -> np.ndarray:
    """Approximate similarity of each query to its best (``use_max``) or worst relevant item.

    Rows are sorted by class and cut into segments of whole classes (at most ``block`` rows, or
    one larger class in tiles), so only pairs near the diagonal are computed. Returns (Q,)
    float64, NaN where a query has no relevant gallery item.
    """
    dev = xa.device
    rows = np.unique(np.concatenate([qrow, grow]))
    pos = np.full(int(rows.max()) + 1, -1, np.int64)
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
    with torch.no_grad(), matmul_precision(mode, dev):
        for a, b in segments:
            for ra in range(a, b, block):
                rb = min(ra + block, b)
                if not (qidx[ra:rb] >= 0).any():
                    continue
                best = torch.full((rb - ra,), fill, dtype=torch.float32, device=dev)
                xr = xa[torch.from_numpy(rows[ra:rb]).to(dev)]
                for ca in range(a, b, block):
                    cb = min(ca + block, b)
                    s = xr @ xa[torch.from_numpy(rows[ca:cb]).to(dev)].T
                    ok = (cls[ra:rb, None] == cls[None, ca:cb]) & is_g[None, ca:cb]
                    ok &= rows[ra:rb, None] != rows[None, ca:cb]
                    s.masked_fill_(~torch.from_numpy(ok).to(dev), fill)
                    best = torch.maximum(best, s.amax(1)) if use_max else \
                        torch.minimum(best, s.amin(1))
                val = best.double().cpu().numpy()
                q = qidx[ra:rb]
                keep = (q >= 0) & np.isfinite(val)
                out[q[keep]] = val[keep]
    return out
