"""Exact search by cosine similarity: candidate backends behind one interface.

Backends, chosen by :class:`Searcher` (every one gives the same exact results; see ``exact.py``):
    ``torch``      blocked matmul with a threshold per query (``blockpass.py``), in the faster
                   of two exact precisions on the machine at hand (``blockpass.fastest_mode``, a
                   short probe): each float32 split into two bf16 parts ("bf16x3", error
                   <= 1e-4; only where the device has bf16 units, CPU avx512_bf16/AMX or CUDA)
                   or IEEE float32. The default.
    ``torch-fp32`` the same pass in IEEE float32 (the "exact fp32" reference of the benchmark).
    ``torch-bf16`` / ``torch-bf16x3``: the pass in one bf16 part (error <= 8e-3) / two parts.
    ``faiss-cpu``  ``faiss.knn`` (float32 BLAS + heaps), k doubled until the list is complete.
    ``faiss-gpu``  ``faiss.knn_gpu``; it allows k <= 2048, so larger k merges gallery shards.

Tie rule (documented in the README): among neighbours with exactly equal similarity, the one with
the smaller gallery index ranks first. The query itself is removed *by index* (never by
similarity), so a duplicate image of the query still counts as a neighbour.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from umlbench.errors import UserError
from umlbench.metrics import blockpass
from umlbench.metrics.candidates import (MARGIN, Candidates, Emit, Order, collect_topk,
                                         sharded_search)
from umlbench.metrics.exact import compare_pairs, dot_error_bound, ref_dots
from umlbench.metrics.ownclass import own_class_best

__all__ = ["BACKENDS", "K_LIMIT", "Searcher", "exact_knn", "has_faiss_gpu"]

BACKENDS = ("torch", "torch-fp32", "torch-bf16", "torch-bf16x3", "faiss-cpu", "faiss-gpu")
# Largest k one faiss call accepts (faiss-gpu: 2048); tests lower it to exercise the merging.
K_LIMIT: dict[str, int | None] = {"faiss-cpu": None, "faiss-gpu": 2048}


def _faiss():
    import faiss  # imported lazily: it costs memory and time and is not the default backend

    return faiss


def has_faiss_gpu() -> bool:
    try:
        faiss = _faiss()
    except ImportError:  # pragma: no cover
        return False
    return hasattr(faiss, "knn_gpu") and faiss.get_num_gpus() > 0


class Searcher:
    """Candidate search over the rows of ``x`` (N, D) float32 unit vectors."""

    def __init__(self, x: np.ndarray, device: str = "cpu", backend: str | None = None,
                 block: tuple[int, int] | None = None, norm_sq: float = 1.0,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.x, self.device, self.block, self.norm_sq = x, torch.device(device), block, norm_sq
        self.progress = progress
        backend = backend or "torch"
        if backend not in BACKENDS:
            raise UserError(f"unknown search backend {backend!r}; known: {', '.join(BACKENDS)}")
        # Whether the device multiplies bf16 natively (k-means uses one bf16 part there).
        self.bf16_units = self.device.type == "cuda" or blockpass.cpu_has_bf16()
        if backend == "torch":  # the faster exact pass here, by a short probe
            self.mode = blockpass.fastest_mode(self.device, x.shape[1])
        else:
            self.mode = {"torch-bf16": "bf16", "torch-bf16x3": "bf16x3"}.get(backend, "fp32")
        self.kind = backend
        self.backend = f"torch-{self.mode}" if backend.startswith("torch") else backend
        self.eps = dot_error_bound(x.shape[1], self.mode, norm_sq)
        # Bound on the stored values: the torch pass recomputes them in float64, faiss stores
        # its own.
        self.eps_val = dot_error_bound(x.shape[1], "fp64", norm_sq) \
            if backend.startswith("torch") else self.eps
        self._xt: torch.Tensor | None = None

    @property
    def xt(self) -> torch.Tensor:
        """``x`` as a tensor on the device (shares memory on CPU)."""
        if self._xt is None:
            self._xt = torch.from_numpy(self.x).to(self.device)
        return self._xt

    def own_class_threshold(self, qrow, grow, qcls, gcls, use_max: bool) -> np.ndarray:
        """Per query, a threshold every needed neighbour reaches (see ``engine.py``): the best
        (``use_max``) or worst relevant similarity minus both error bounds. (Q,) float64;
        +inf where a query has no relevant item."""
        v, err = own_class_best(self.xt, qrow, grow, qcls, gcls, use_max, self.mode,
                                self.norm_sq)
        return np.where(np.isnan(v), np.inf, v - err - self.eps - MARGIN)

    def candidates(self, qrow: np.ndarray, grow: np.ndarray, self_pos: np.ndarray,
                   t: np.ndarray, cap: np.ndarray, emit: Emit,
                   order: Order | None = None,
                   gallery_dup: np.ndarray | None = None) -> Candidates:
        """Every gallery item selected at threshold ``t`` per query, handed to ``emit`` group
        by group (``candidates.Store``; ``order`` lets the torch pass drop ties beyond cap,
        ``gallery_dup`` (G,) the duplicate ids of the gallery rows lets it skip them early)."""
        if self.kind.startswith("torch"):
            return blockpass.collect_blocks(self.xt, qrow, grow, self_pos, t, cap, self.mode,
                                            self.norm_sq, emit, block=self.block,
                                            progress=self.progress, order=order,
                                            gallery_dup=gallery_dup)
        gallery = np.ascontiguousarray(self.x[grow])
        search = sharded_search(self._shard_fn(gallery), len(gallery), K_LIMIT[self.kind] or
                                len(gallery))
        return collect_topk(search, self.x[qrow], len(gallery), self_pos, t, cap, self.eps,
                            self.backend, emit)

    def _shard_fn(self, gallery: np.ndarray):
        faiss = _faiss()
        if self.kind == "faiss-gpu":
            res = faiss.StandardGpuResources()

            def shard(q, a, b, k):
                return faiss.knn_gpu(res, np.ascontiguousarray(q), gallery[a:b], k,
                                     metric=faiss.METRIC_INNER_PRODUCT,
                                     device=self.device.index or 0)
        else:
            def shard(q, a, b, k):
                return faiss.knn(np.ascontiguousarray(q), gallery[a:b], k,
                                 metric=faiss.METRIC_INNER_PRODUCT)
        return shard


def exact_knn(x: np.ndarray, k: int, qrow: np.ndarray | None = None,
              grow: np.ndarray | None = None, self_pos: np.ndarray | None = None,
              **searcher_args) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest gallery items of each query, index for index.

    x: (N, D) float32 unit rows; qrow/grow: query and gallery rows (default: all, leave-one-out);
    self_pos: (Q,) position of each query in the gallery, -1 if absent (default: derived).
    Returns idx (Q, k) int64 gallery positions (-1 where the gallery is too small) and sims
    (Q, k) float64 (the float64 values of the exact ranking; NaN where idx is -1).
    """
    n = len(x)
    qrow = np.arange(n) if qrow is None else np.asarray(qrow, np.int64)
    grow = np.arange(n) if grow is None else np.asarray(grow, np.int64)
    if self_pos is None:
        where = np.full(n, -1, np.int64)
        where[grow] = np.arange(len(grow))
        self_pos = where[qrow]
    searcher = Searcher(x, **searcher_args)
    cap = np.full(len(qrow), k, np.int64)
    eps64 = dot_error_bound(x.shape[1], "fp64", searcher.norm_sq)
    idx = np.full((len(qrow), k), -1, np.int64)
    sims = np.full((len(qrow), k), np.nan)

    def emit(members, q, g, s, cand):
        order = np.lexsort((-s, q))
        q, g, s = q[order], g[order], s[order].astype(np.float64)
        ref = ref_dots(x, qrow[q], grow[g])
        for i in np.unique(q):
            a, b = np.searchsorted(q, [i, i + 1])
            ranked = _exact_order(x, qrow[i], grow, g[a:b], s[a:b], ref[a:b], cand.eps_val,
                                  eps64)[:k]
            idx[i, :len(ranked)] = g[a:b][ranked]
            sims[i, :len(ranked)] = ref[a:b][ranked]

    searcher.candidates(qrow, grow, self_pos, np.full(len(qrow), -np.inf), cap, emit)
    return idx, sims


def _exact_order(x, qr, grow, g, s, ref, eps, eps64) -> np.ndarray:
    """Positions of one query's candidates (sorted by s_hat, descending) in exact order."""
    out = list(range(len(g)))
    # Runs of s_hat closer than 2 eps may be in any exact order: sort each run exactly.
    breaks = np.flatnonzero(s[:-1] - s[1:] > 2 * eps) + 1
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(g)]):
        if b - a < 2:
            continue
        run = list(range(a, b))
        run.sort(key=lambda p: (-ref[p], g[p]))
        # float64 may not separate neighbours in the run: insertion-sort with exact comparisons.
        for i in range(1, len(run)):
            j = i
            while j > 0 and _before(x, qr, grow, g, ref, run[j], run[j - 1], eps64):
                run[j - 1], run[j] = run[j], run[j - 1]
                j -= 1
        out[a:b] = run
    return np.asarray(out, np.int64)


def _before(x, qr, grow, g, ref, p, o, eps64) -> bool:
    """Whether candidate p ranks before candidate o (exact similarity, then gallery index)."""
    if abs(ref[p] - ref[o]) > 2 * eps64:
        return ref[p] > ref[o]
    sign = compare_pairs(x, np.array([qr]), np.array([grow[g[p]]]), np.array([grow[g[o]]]),
                         ref[p:p + 1], ref[o:o + 1], eps64)[0]
    return sign > 0 or (sign == 0 and g[p] < g[o])
