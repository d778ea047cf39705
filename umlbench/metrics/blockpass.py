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
float64 from the float32 rows (a gather for a few pairs, the block's float64 matmul where most of
it is selected), so the stored values are within ``dot_error_bound(D, "fp64")`` (~1e-14) and a
raised threshold can split what the selecting bound cannot (nearly collapsed embeddings). Pairs
whose float64 value cannot reach the query's ``t + eps`` are not stored: nothing that ranks
above a relevant item counted by ``ranks.py`` lies below it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from umlbench.metrics.candidates import Candidates, Emit, Order, Store
from umlbench.metrics.exact import dot_error_bound

__all__ = ["collect_blocks", "cpu_has_bf16", "fastest_mode", "intra_op_threads",
           "matmul_precision", "operand", "thresholds", "view"]

DEFAULT_BLOCK = (512, 1024)  # (query rows, gallery columns) per matmul: S stays in L2
_W = 64  # a block is scanned through maxima over runs of _W rows / columns
HELD_ENTRIES = 1 << 24  # candidates (16 B each, 256 MB) the symmetric pass may leave waiting


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


# The split bf16 pass must multiply this much faster than IEEE float32 to be chosen: its
# selection bound is ~13x wider (8.6e-5 against 6.6e-6 at 128-d), so more near-threshold pairs
# reach the float64 recomputation and the store. Measured on a 2-core AMD EPYC with
# avx512_bf16 (no AMX) at 146,665 x 128: bf16x3 37.0 s, fp32 32.2 s for the same exact values.
PROBE_RATIO = 1.5
_PROBED: dict[tuple, tuple[str, dict[str, float]]] = {}


def fastest_mode(device: torch.device, dim: int) -> str:
    """The default pass precision on ``device`` for ``dim``-dimensional rows: "fp32", or
    "bf16x3" where the device has bf16 units *and* a short probe (one (512, 1024) block per mode,
    the best of five, single-threaded on CPU as the workers run) finds its matmul at least
    ``PROBE_RATIO`` times faster. Both give the same exact results; only speed differs. The
    probe runs once per process, device and dimension (about 10-50 ms)."""
    if not (device.type == "cuda" or cpu_has_bf16()):
        return "fp32"
    key = (str(device), int(dim))
    if key not in _PROBED:
        _PROBED[key] = _probe(device, int(dim))
    return _PROBED[key][0]


def _probe(device: torch.device, dim: int) -> tuple[str, dict[str, float]]:
    import time

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(DEFAULT_BLOCK[0], dim, generator=gen).to(device)
    b = torch.randn(DEFAULT_BLOCK[1], dim, generator=gen).to(device)
    seconds = {}
    with torch.no_grad(), intra_op_threads(1 if device.type == "cpu" else None):
        for mode in ("fp32", "bf16x3"):
            with matmul_precision(mode, device):
                best = float("inf")
                for rep in range(6):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    s = operand(a, mode) @ operand(b, mode, 1).T
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if rep:  # the first call warms the kernels up
                        best = min(best, time.perf_counter() - t0)
                    del s
            seconds[mode] = best
    fast = seconds["bf16x3"] * PROBE_RATIO <= seconds["fp32"]
    return ("bf16x3" if fast else "fp32"), seconds


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


def view(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """Rows of ``x``: a slice (no copy) when they are consecutive, else a gathered copy."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
        return x[int(rows[0]):int(rows[-1]) + 1]
    return x[torch.from_numpy(np.asarray(rows, np.int64)).to(x.device)]


def collect_blocks(
    x: torch.Tensor, qrow: np.ndarray, grow: np.ndarray, self_pos: np.ndarray,
    t: np.ndarray, cap: np.ndarray, mode: str, norm_sq: float, emit: Emit, *,
    block: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    order: Order | None = None,
    gallery_dup: np.ndarray | None = None,
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
        order: exact rank order of candidates, which lets the store drop ties beyond ``cap``
            (``candidates.Store``); without it tied candidates are all kept.
        gallery_dup: (G,) ``exact.duplicate_ids`` of the gallery items' rows: with ``order``,
            items tied with a query's cap-th item and ranked after it are not stored.
    """
    bq, bg = block or DEFAULT_BLOCK
    dev = x.device
    eps = dot_error_bound(x.shape[1], mode, norm_sq)
    eps64 = dot_error_bound(x.shape[1], "fp64", norm_sq)
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
    store = Store(t, cap, eps, eps64, group_of, emit, f"torch-{mode}", order,
                  gallery_dup if order is not None else None)
    active = store.t < np.inf
    xz, xgo, xqo = view(x, qrow[zq]), view(x, grow[go]), view(x, qrow[qo])
    z_blocks = [(a, min(a + bq, len(zq))) for a in range(0, len(zq), bq)]
    go_blocks = [(a, min(a + bg, len(go))) for a in range(0, len(go), bg)]
    items = [(i, a, b) for i, (a, b) in enumerate(z_blocks)]
    items += [(n_z + i, a, min(a + bq, len(qo))) for i, a in enumerate(range(0, len(qo), bq))]
    lock = threading.Lock()
    finished = np.zeros(len(items), bool)
    emitted = [0]  # Z groups 0 .. emitted-1 have been handed over

    gdup = store.gallery_dup
    gdup_t = torch.from_numpy(gdup).to(dev) if gdup is not None else None

    class _Thresholds:  # a worker's view of the store's limits, read slice by slice
        """Limits of a slice of queries (Z rows ``z(a, b)``, query-only rows ``qo(a, b)``):
        the float32 threshold of s_hat, the float64 value theta - eps64 a stored value must
        reach, and the store's tie cut (``Store.cut_g`` / ``cut_dup``), read together under the
        lock (a stale read keeps more, never less). Only the slice asked for is converted, and
        again only after the store raised a threshold (``Store.version``): converting every
        query's limits at each raise cost O(N) per block on large inputs."""

        def __init__(self):
            self.cache: dict[tuple, tuple] = {}

        def _get(self, idx: np.ndarray, key: tuple):
            hit = self.cache.get(key)
            if hit is not None and hit[0] == store.version:
                return hit[1]
            with lock:
                version = store.version
                tt, cg, cd = store.t[idx], store.cut_g[idx], store.cut_dup[idx]
            t64 = np.maximum(tt + (eps - eps64), -4.0)  # -4: never the -inf of a self entry
            parts = (thresholds(tt, dev), torch.from_numpy(t64).to(dev),
                     torch.from_numpy(cg).to(dev), torch.from_numpy(cd).to(dev))
            if len(self.cache) > 64:
                self.cache.clear()
            self.cache[key] = (version, parts)
            return parts

        def z(self, a: int, b: int):
            return self._get(zq[a:b], ("z", a, b))

        def qo(self, a: int, b: int):
            return self._get(qo[a:b], ("qo", a, b))

    def add(q, g, v):
        # Only values that may reach theta = t + eps (a threshold read without the lock is an
        # older, lower one: it keeps more, never less).
        keep = v >= store.t[q] + (eps - eps64)
        if not keep.all():
            q, g, v = q[keep], g[keep], v[keep]
        with lock:
            store.add(q, g, v)

    # Memory: a Z block's columns serve the queries of later blocks, which hold those
    # candidates until their own sweep. Serving every later block halves the matmuls, but when
    # each query collects up to its cap (ties, collapsed embeddings, deep metrics on large
    # classes) the store then holds the whole table's worth. So block i serves only the blocks
    # up to horizon[i], decided when it starts: all of them while the rate of entries per
    # served pair seen so far keeps the projected store under HELD_ENTRIES, else the next
    # h_max blocks (the worst case fits); a later block reads the gallery rows of the blocks
    # whose columns did not reach it as rows of its own.
    horizon = np.full(n_z, -1, np.int64)
    budget_max = float(store.budget[zq].max(initial=1)) + bq if len(zq) else 1.0
    h_max = max(0, int(HELD_ENTRIES // (bq * budget_max)))
    col_stats = [0, 0]  # entries offered by column reads, (query, gallery row) pairs served

    def add_col(q, g, v):
        with lock:
            col_stats[0] += len(q)
        add(q, g, v)

    def decide(i: int) -> None:
        """horizon[i], when Z block i starts (under the lock, in block order)."""
        limited = min(n_z - 1, i + h_max)
        if col_stats[1]:
            rate = col_stats[0] / col_stats[1]
            later = len(zq) - z_blocks[i][1]
            projected = store.size + later * min(rate * len(zq), budget_max)
            horizon[i] = n_z - 1 if projected <= HELD_ENTRIES else limited
        else:
            horizon[i] = limited

    def sweep(item):
        """One row block against every gallery block it needs (module docstring)."""
        i, a, b = item
        th = _Thresholds()
        with torch.no_grad():  # grad mode is per thread
            if i >= n_z:  # query-only rows: one way, against every gallery row
                if active[qo[a:b]].any():
                    ra = operand(xqo[a:b], mode)
                    for gal, pos in ((xz, zg), (xgo, go)):
                        for c in range(0, len(pos), bg):
                            s = ra @ operand(gal[c:c + bg], mode, 1).T
                            _rows(s, th.qo(a, b), qo[a:b], pos[c:c + bg], add,
                                  _Exact(xqo[a:b], gal[c:c + bg]), gdup_t)
                return
            ra = operand(xz[a:b], mode)
            mine = active[zq[a:b]].any()
            end_h = z_blocks[horizon[i]][1]  # columns serve queries b .. end_h
            if mine:  # earlier blocks whose columns stopped short of this one: as rows
                for c0, c1 in _spans([z_blocks[k] for k in range(i) if horizon[k] < i]):
                    for c in range(c0, c1, bg):
                        d = min(c + bg, c1)
                        s = ra @ operand(xz[c:d], mode, 1).T
                        _rows(s, th.z(a, b), zq[a:b], zg[c:d], add,
                              _Exact(xz[a:b], xz[c:d]), gdup_t)
            # Rows serve queries a..b against gallery c..d (c >= a); columns serve queries c..d
            # against gallery a..b where the rows of their own block will not (beyond b, up
            # to end_h).
            for c in range(a if mine else b, len(zq) if mine else end_h, bg):
                d = min(c + bg, len(zq))
                hi = min(d, end_h)
                cols = hi > max(c, b) and active[zq[max(c, b):hi]].any()
                if not (mine or cols):
                    continue
                s = ra @ operand(xz[c:d], mode, 1).T
                diag = None
                if c < b:  # the block meets the diagonal: drop each query's own entry
                    j = torch.arange(max(a, c), min(b, d), device=dev)
                    s[j - a, j - c] = -torch.inf
                    diag = (j - a, j - c)
                ex = _Exact(xz[a:b], xz[c:d], diag)
                if mine:
                    _rows(s, th.z(a, b), zq[a:b], zg[c:d], add, ex, gdup_t)
                if cols:
                    with lock:
                        col_stats[1] += (b - a) * (hi - max(c, b))
                    _cols(s, th.z(c, d), zq[c:d], zg[a:b], add_col, ex, gdup_t,
                          skip=max(0, b - c), stop=hi - c)
            if mine:
                for c, d in go_blocks:
                    s = ra @ operand(xgo[c:d], mode, 1).T
                    _rows(s, th.z(a, b), zq[a:b], go[c:d], add,
                          _Exact(xz[a:b], xgo[c:d]), gdup_t)

    def run(item):
        sweep(item)
        # A block of Z queries is complete once every block up to it has swept: their columns
        # serve it. Query-only blocks are complete after their own sweep.
        with lock:
            finished[item[0]] = True
            ready = [item[0]] if item[0] >= n_z else []
            while emitted[0] < n_z and finished[emitted[0]]:
                ready.append(emitted[0])
                emitted[0] += 1
            groups = [store.take(grp) for grp in ready]
        for grp, part in zip(ready, groups):
            store.hand_over(grp, part)
            if progress:
                progress(int(finished.sum()), len(items))

    # One worker per thread, each running single-threaded torch ops: independent streams of
    # blocks instead of a barrier in every small op (which stalls on a busy machine).
    workers = max(1, torch.get_num_threads()) if dev.type == "cpu" else 1
    ticket = [0]

    def worker():
        while True:
            with lock:  # items are taken, and horizons decided, in block order
                k = ticket[0]
                if k >= len(items):
                    return
                ticket[0] += 1
                if items[k][0] < n_z:
                    decide(items[k][0])
            run(items[k])

    with matmul_precision(mode, dev), intra_op_threads(1 if workers > 1 else None):
        if workers == 1:
            worker()
        else:
            with ThreadPoolExecutor(workers) as pool:
                for f in [pool.submit(worker) for _ in range(workers)]:
                    f.result()
    store.info.horizon = horizon
    return store.finish()


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def thresholds(t: np.ndarray, dev: torch.device) -> torch.Tensor:
    """float64 thresholds -> float32, rounded down so that no qualifying value is missed, and
    at least -4 (below any similarity) so that the -inf used for padding and self never passes."""
    t = np.maximum(t, -4.0)
    t32 = t.astype(np.float32)
    low = t32.astype(np.float64) > t
    t32[low] = np.nextafter(t32[low], np.float32(-np.inf))
    return torch.from_numpy(t32).to(dev)


def _spans(blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges merged: [(0, 4), (4, 8), (12, 16)] -> [(0, 8), (12, 16)]."""
    out: list[tuple[int, int]] = []
    for a, b in blocks:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _padded(s: torch.Tensor, dim: int) -> torch.Tensor:
    """``s`` with dimension ``dim`` padded by -inf to a multiple of ``_W``."""
    extra = -s.shape[dim] % _W
    if not extra:
        return s
    pad = (0, extra) if dim == 1 else (0, 0, 0, extra)
    return torch.nn.functional.pad(s, pad, value=-torch.inf)


class _Exact:
    """float64 values of entries of one block ``xa @ xb.T`` (xa (R, D), xb (C, D) float32 rows):
    gathered dot products for a few entries, the block's float64 matmul (computed once) when
    more are asked for (a 512 x 1024 block's matmul costs about as much as gathering 1/32 of
    it). Either way within ``dot_error_bound(D, "fp64")``: products of float32 are exact in
    float64, and the bound holds for any summation order."""

    _GATHER = 1 << 14  # pairs per gathered chunk
    _FULL = 32  # the whole block once more than 1/_FULL of it is asked for

    def __init__(self, xa: torch.Tensor, xb: torch.Tensor, diag=None):
        self.xa, self.xb, self.diag = xa, xb, diag  # diag: (rows, cols) of the queries' selves
        self.a64: torch.Tensor | None = None
        self.full: torch.Tensor | None = None

    def block(self) -> torch.Tensor:
        """The whole block in float64 (R, C), the queries' own entries -inf."""
        if self.full is None:
            self.full = self.xa.double() @ self.xb.double().T
            if self.diag is not None:
                self.full[self.diag] = -torch.inf
        return self.full

    def __call__(self, i: torch.Tensor, j: torch.Tensor) -> np.ndarray:
        if self.full is not None or \
                len(i) * self._FULL > self.xa.shape[0] * self.xb.shape[0]:
            return self.block()[i, j].cpu().numpy()
        if self.a64 is None:
            self.a64, self.b64 = self.xa.double(), self.xb.double()
        out = [(self.a64[i[k:k + self._GATHER]] * self.b64[j[k:k + self._GATHER]]).sum(1)
               for k in range(0, len(i), self._GATHER)]
        return torch.cat(out).cpu().numpy()


def _dense(exact: _Exact, lim, cols_g, gdup_t, by_row: bool):
    """Where most of a block passes the s_hat threshold (nearly collapsed embeddings, ties),
    the entries selected by their float64 values instead: those that may reach theta, less the
    items that tie with a query's cap-th kept item and come after it (``Store.cut_g``). The
    store checks the same conditions; this only spares extracting what it would drop.
    ``by_row``: queries are the block's rows (else its columns). Returns (i, j) block indices."""
    s64 = exact.block()
    _, t64, cg, cd = lim
    qdim = 0 if by_row else 1
    m = s64 >= t64.unsqueeze(1 - qdim)
    if gdup_t is not None and bool((cg >= 0).any()):
        gp = torch.from_numpy(np.asarray(cols_g, np.int64)).to(s64.device)
        gd = gdup_t[gp]
        cgx, cdx = cg.unsqueeze(1 - qdim), cd.unsqueeze(1 - qdim)
        gpx, gdx = gp.unsqueeze(qdim), gd.unsqueeze(qdim)
        m &= ~((cgx >= 0) & (gdx == cdx) & (gpx > cgx))
    return torch.nonzero(m, as_tuple=True)


def _rows(s, lim, rows_q, cols_g, add, exact: _Exact, gdup_t=None) -> None:
    """Entries of block ``s`` (rows: queries ``rows_q`` with limits ``lim``, see
    ``_Thresholds``; columns: gallery ``cols_g``) that reach their row's threshold, with their
    float64 values (``exact``)."""
    t = lim[0]
    sp = _padded(s, 1)
    runs = sp.view(sp.shape[0], -1, _W)
    r, ch = torch.nonzero(runs.amax(2) >= t.unsqueeze(1), as_tuple=True)
    if r.numel() * 4 > runs.shape[0] * runs.shape[1]:
        i, j = _dense(exact, lim, cols_g, gdup_t, True)
        if i.numel():
            add(rows_q[i.cpu().numpy()], cols_g[j.cpu().numpy()],
                exact.block()[i, j].cpu().numpy())
        return
    if r.numel():
        p, e = torch.nonzero(runs[r, ch] >= t[r].unsqueeze(1), as_tuple=True)
        i, j = r[p], ch[p] * _W + e
        add(rows_q[i.cpu().numpy()], cols_g[j.cpu().numpy()], exact(i, j))


def _cols(s, lim, cols_q, rows_g, add, exact: _Exact, gdup_t=None, skip: int = 0,
          stop: int | None = None) -> None:
    """Entries of block ``s`` read by column: column j is query ``cols_q[j]`` (limits ``lim``,
    see ``_Thresholds``) against gallery ``rows_g``; only columns ``skip`` .. ``stop`` are
    read."""
    t, t64, cg, cd = lim
    stop = s.shape[1] if stop is None else stop
    if skip or stop < s.shape[1]:
        t, t64 = t.clone(), t64.clone()
        t[:skip] = torch.inf
        t64[:skip] = torch.inf
        t[stop:] = torch.inf
        t64[stop:] = torch.inf
    sp = _padded(s, 0)
    runs = sp.view(-1, _W, sp.shape[1])
    rc, col = torch.nonzero(runs.amax(1) >= t.unsqueeze(0), as_tuple=True)
    if rc.numel() * 4 > runs.shape[0] * runs.shape[2]:
        i, j = _dense(exact, (t, t64, cg, cd), rows_g, gdup_t, False)
        if i.numel():
            add(cols_q[j.cpu().numpy()], rows_g[i.cpu().numpy()],
                exact.block()[i, j].cpu().numpy())
        return
    if rc.numel():
        p, e = torch.nonzero(runs[rc, :, col] >= t[col].unsqueeze(1), as_tuple=True)
        i, j = rc[p] * _W + e, col[p]
        add(cols_q[j.cpu().numpy()], rows_g[i.cpu().numpy()], exact(i, j))
