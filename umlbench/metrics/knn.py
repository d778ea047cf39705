"""Exact k-nearest-neighbour search by cosine similarity, in bounded memory.

Backends, chosen by :func:`make_searcher`:
    ``faiss-cpu``  ``faiss.knn`` (blocked BLAS + heaps; never materialises a Q x G matrix);
    ``faiss-gpu``  ``faiss.knn_gpu`` when faiss was built with CUDA (the ``gpu`` extra);
    ``torch``      chunked matmul + ``topk`` on any torch device (fallback when faiss-gpu is
                   missing, and the reference the GPU equality test compares against).

Tie rule (documented in the README): among neighbours with exactly equal similarity, the one with
the smaller gallery index ranks first. The query itself is removed *by index* (never by
similarity), so a duplicate image of the query still counts as a neighbour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Searcher", "make_searcher", "search_excluding_self", "has_faiss_gpu"]

try:  # faiss is a hard dependency, but keep the torch path usable without it
    import faiss
except ImportError:  # pragma: no cover
    faiss = None


def has_faiss_gpu() -> bool:
    return faiss is not None and hasattr(faiss, "knn_gpu") and faiss.get_num_gpus() > 0


@dataclass
class Searcher:
    """Top-k inner-product search of query chunks against a fixed gallery."""

    backend: str
    gallery: np.ndarray  # (G, D) float32, L2-normalised
    _search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) float32 -> sims (Q, k) float32 descending, idx (Q, k) int64 (-1 = none)."""
        k_eff = min(k, len(self.gallery))
        sims, idx = self._search(np.ascontiguousarray(queries, dtype=np.float32), k_eff)
        if k_eff < k:
            pad = k - k_eff
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        return _order_ties(sims, idx.astype(np.int64, copy=False))


def _order_ties(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-sort only the rows that contain equal similarities by (-similarity, index)."""
    rows = np.flatnonzero((sims[:, 1:] == sims[:, :-1]).any(axis=1))
    if len(rows):
        s, i = sims[rows], idx[rows]
        big = np.where(i < 0, np.iinfo(np.int64).max, i)
        order = _row_lexsort(-s, big)
        sims[rows] = np.take_along_axis(s, order, 1)
        idx[rows] = np.take_along_axis(i, order, 1)
    return sims, idx


def _row_lexsort(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Per-row argsort by (primary, secondary), both (R, K)."""
    order2 = np.argsort(secondary, axis=1, kind="stable")
    p = np.take_along_axis(primary, order2, 1)
    order1 = np.argsort(p, axis=1, kind="stable")
    return np.take_along_axis(order2, order1, 1)


def _faiss_cpu(gallery: np.ndarray):
    def search(q: np.ndarray, k: int):
        return faiss.knn(q, gallery, k, metric=faiss.METRIC_INNER_PRODUCT)

    return search


def _faiss_gpu(gallery: np.ndarray, device_id: int):
    res = faiss.StandardGpuResources()

    def search(q: np.ndarray, k: int):
        return faiss.knn_gpu(res, q, gallery, k, metric=faiss.METRIC_INNER_PRODUCT,
                             device=device_id)

    return search


def _torch(gallery: np.ndarray, device: torch.device, block: int = 65536):
    g = torch.from_numpy(gallery).to(device)

    @torch.no_grad()
    def search(q: np.ndarray, k: int):
        qt = torch.from_numpy(q).to(device)
        best_s = best_i = None
        # Gallery blocks bound the (Q x block) similarity matrix; results merged by topk.
        for start in range(0, g.shape[0], block):
            s = qt @ g[start : start + block].T
            kk = min(k, s.shape[1])
            bs, bi = s.topk(kk, dim=1)
            bi = bi + start
            if best_s is not None:
                bs, pos = torch.cat([best_s, bs], 1), torch.cat([best_i, bi], 1)
                top = bs.topk(min(k, bs.shape[1]), dim=1)
                bs, bi = top.values, pos.gather(1, top.indices)
            best_s, best_i = bs, bi
        return best_s.float().cpu().numpy(), best_i.cpu().numpy()

    return search


def make_searcher(gallery: np.ndarray, device: str = "cpu", backend: str | None = None) -> Searcher:
    """Pick the search backend for ``device`` ("cpu", "cuda", "cuda:1", ...).

    ``backend`` forces "faiss-cpu", "faiss-gpu" or "torch".
    """
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    dev = torch.device(device)
    if backend is None:
        if dev.type == "cuda":
            backend = "faiss-gpu" if has_faiss_gpu() else "torch"
        else:
            backend = "faiss-cpu" if faiss is not None else "torch"
    if backend == "faiss-cpu":
        fn = _faiss_cpu(gallery)
    elif backend == "faiss-gpu":
        fn = _faiss_gpu(gallery, dev.index or 0)
    elif backend == "torch":
        fn = _torch(gallery, dev)
    else:
        raise ValueError(f"unknown k-NN backend {backend!r}")
    return Searcher(backend, gallery, fn)


def search_excluding_self(
    searcher: Searcher, queries: np.ndarray, self_pos: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours with each query's own gallery entry removed by index.

    Args:
        queries: (Q, D) float32.
        self_pos: (Q,) int64, the query's position in the gallery, or -1 if it is not there.
        k: neighbours to return.
    Returns:
        sims (Q, k) float32 and idx (Q, k) int64 (gallery positions; -1 where none).
    """
    if not (self_pos >= 0).any():
        return searcher.search(queries, k)
    sims, idx = searcher.search(queries, k + 1)
    drop = idx == self_pos[:, None]
    # If the query is not among its k+1 neighbours (more than k exact duplicates ahead of it),
    # drop the last column instead so every row keeps k entries.
    missing = ~drop.any(axis=1)
    drop[missing, -1] = True
    # A row can match itself at most once (gallery positions are unique).
    keep = ~drop
    q = len(queries)
    return sims[keep].reshape(q, k), idx[keep].reshape(q, k)
