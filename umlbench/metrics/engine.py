"""The evaluation engine: one chunked k-NN search per protocol serves every retrieval metric.

Input is one table of N embeddings with, per row, a label, a dataset name and two flags: whether
the row is a query and whether it is in the gallery (both True = leave-one-out, the usual DML
protocol; In-shop has disjoint query and gallery rows). A class is the pair (dataset, label), so
equal labels of different datasets never match.

Universal scores search every query against the whole gallery. Per-dataset scores restrict the
gallery to the query's dataset; they are read off the universal neighbour lists whenever those
contain enough same-dataset neighbours to be exact, and only the remaining queries are searched
again against their own dataset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from umlbench.errors import UserError
from umlbench.metrics import clustering, retrieval
from umlbench.metrics.knn import make_searcher, search_excluding_self
from umlbench.metrics.summary import arithmetic_mean, harmonic_mean

__all__ = ["MetricSpec", "EvalResult", "evaluate", "DEFAULT_METRICS", "RETRIEVAL_ONLY"]

_CHUNK_BYTES = 256 * 2**20  # working memory per query chunk (all (Q, K) temporaries)
_BYTES_PER_ENTRY = 64


@dataclass(frozen=True)
class MetricSpec:
    """Which metrics to compute. Keys in results: recall@K, precision@1, r_precision, map@r,
    map@1000, nmi, f1."""

    recall_ks: tuple[int, ...] = (1, 2, 4, 8)
    precision_at_1: bool = True
    r_precision: bool = True
    map_at_r: bool = True
    map_at_1000: bool = True
    nmi: bool = True
    f1: bool = True

    @classmethod
    def from_names(cls, names: Sequence[str]) -> MetricSpec:
        """Parse names such as ``["recall@1", "recall@10", "map@r", "nmi"]``."""
        ks, flags = [], dict.fromkeys(
            ("precision_at_1", "r_precision", "map_at_r", "map_at_1000", "nmi", "f1"), False
        )
        alias = {"precision@1": "precision_at_1", "r_precision": "r_precision",
                 "map@r": "map_at_r", "map@1000": "map_at_1000", "nmi": "nmi", "f1": "f1"}
        for name in names:
            name = name.strip().lower()
            if name.startswith("recall@") and name[7:].isdigit() and int(name[7:]) > 0:
                ks.append(int(name[7:]))
            elif name in alias:
                flags[alias[name]] = True
            else:
                raise UserError(
                    f"unknown metric {name!r}; known: recall@K, precision@1, r_precision, "
                    "map@r, map@1000, nmi, f1"
                )
        return cls(recall_ks=tuple(sorted(set(ks))), **flags)

    def names(self) -> list[str]:
        out = [f"recall@{k}" for k in self.recall_ks]
        for flag, name in (("precision_at_1", "precision@1"), ("r_precision", "r_precision"),
                           ("map_at_r", "map@r"), ("map_at_1000", "map@1000"),
                           ("nmi", "nmi"), ("f1", "f1")):
            if getattr(self, flag):
                out.append(name)
        return out

    @property
    def needs_r(self) -> bool:
        return self.r_precision or self.map_at_r

    @property
    def retrieval_names(self) -> list[str]:
        return [n for n in self.names() if n not in ("nmi", "f1")]


DEFAULT_METRICS = MetricSpec()
RETRIEVAL_ONLY = MetricSpec(nmi=False, f1=False)


@dataclass
class EvalResult:
    """Scores of one evaluation. ``per_dataset[name]`` and ``universal`` map metric -> value and
    also hold ``num_queries`` and ``num_excluded_queries`` (queries without any relevant gallery
    item, left out of every retrieval mean). ``harmonic_mean``/``arithmetic_mean`` summarise the
    per-dataset Recall@1; ``summary`` holds both means for every metric."""

    per_dataset: dict[str, dict[str, float]]
    universal: dict[str, float]
    harmonic_mean: float
    arithmetic_mean: float
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    backend: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _validate(emb, labels, datasets, is_query, is_gallery, normalize=True) -> None:
    n = emb.shape[0] if emb.ndim == 2 else -1
    if emb.ndim != 2 or n == 0:
        raise UserError(f"embeddings must be a non-empty (N, D) array, got shape {emb.shape}")
    for name, arr in (("labels", labels), ("datasets", datasets), ("is_query", is_query),
                      ("is_gallery", is_gallery)):
        if arr.shape != (n,):
            raise UserError(f"{name} has shape {arr.shape}, expected ({n},) to match embeddings")
    if not np.isfinite(emb).all():
        bad = int((~np.isfinite(emb).all(axis=1)).sum())
        raise UserError(f"embeddings contain NaN or inf in {bad} rows")
    if normalize and (np.linalg.norm(emb, axis=1) == 0).any():
        raise UserError("embeddings contain all-zero rows (cosine similarity is undefined)")
    if not is_query.any() or not is_gallery.any():
        raise UserError("need at least one query row and one gallery row")
    for ds in np.unique(datasets):
        rows = datasets == ds
        if (rows & (is_query | is_gallery)).sum() < 2:
            raise UserError(f"dataset {ds!r} has fewer than two samples; nothing to retrieve")


def _score(rel, r, freq, spec: MetricSpec) -> dict[str, np.ndarray]:
    out = {f"recall@{k}": retrieval.recall_at_k(rel, k) for k in spec.recall_ks}
    if spec.precision_at_1:
        out["precision@1"] = retrieval.precision_at_1(rel)
    prec = retrieval.precision_curve(rel) if (spec.map_at_r or spec.map_at_1000) else None
    if spec.r_precision:
        out["r_precision"] = retrieval.r_precision(rel, r)
    if spec.map_at_r:
        out["map@r"] = retrieval.map_at_r(rel, r, prec)
    if spec.map_at_1000:
        out["map@1000"] = retrieval.map_at_1000(rel, freq, prec)
    return out


def _need(spec: MetricSpec, r: np.ndarray) -> np.ndarray:
    """Neighbours each query needs: (Q,) int64."""
    need = np.full(len(r), max(spec.recall_ks, default=1), dtype=np.int64)
    if spec.precision_at_1:
        need = np.maximum(need, 1)
    if spec.needs_r:
        need = np.maximum(need, r)
    if spec.map_at_1000:
        need = np.maximum(need, 1000)
    return need


def _query_chunks(need: np.ndarray, k: int, chunk_size: int | None):
    """Yield (query positions, k for them): queries grouped by how many neighbours they need
    (rounded up to a power of two, at most ``k``), each group cut into chunks whose (Q, k)
    temporaries fit ``_CHUNK_BYTES``. Most queries of a benchmark need few neighbours (SOP's
    MAP@R needs <= 11), so searching each group with its own k avoids paying the largest
    class's k for every query; the metrics read only the first ``need`` columns."""
    bucket = np.minimum(2 ** np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64), k)
    for kb in np.unique(bucket):
        ids = np.flatnonzero(bucket == kb)
        size = chunk_size or max(64, min(16384, _CHUNK_BYTES // (_BYTES_PER_ENTRY * (kb + 1))))
        for start in range(0, len(ids), size):
            yield ids[start:start + size], int(kb)


def evaluate(
    embeddings: np.ndarray,
    labels: np.ndarray,
    datasets: np.ndarray,
    is_query: np.ndarray | None = None,
    is_gallery: np.ndarray | None = None,
    *,
    metrics: MetricSpec = DEFAULT_METRICS,
    device: str = "cpu",
    backend: str | None = None,
    per_dataset: bool = True,
    universal: bool = True,
    chunk_size: int | None = None,
    seed: int = 1234,
    progress: Callable[[int, int], None] | None = None,
    normalize: bool = True,
) -> EvalResult:
    """Score embeddings per dataset and universally.

    Args:
        embeddings: (N, D) float; L2-normalised here (cosine similarity) unless ``normalize``
            is False, which ranks by the raw dot product (the official PUMA scoring of
            un-normalised embeddings: ensembles of dataset-specific models, Poincare-ball points).
        labels: (N,) int, class label inside each dataset.
        datasets: (N,) str, dataset name per row.
        is_query, is_gallery: (N,) bool; default all True (leave-one-out).
        metrics: which metrics; device: "cpu" or "cuda[:i]"; backend: force a k-NN backend.
        progress: called with (queries done, total) after every chunk.
    """
    t0 = time.perf_counter()
    emb = np.asarray(embeddings)
    labels = np.asarray(labels)
    datasets = np.asarray(datasets).astype(str)
    n = emb.shape[0] if emb.ndim == 2 else 0
    is_query = np.ones(n, bool) if is_query is None else np.asarray(is_query, bool)
    is_gallery = np.ones(n, bool) if is_gallery is None else np.asarray(is_gallery, bool)
    _validate(emb, labels, datasets, is_query, is_gallery, normalize)
    x = emb.astype(np.float32, copy=True)
    if normalize:
        x /= np.linalg.norm(x, axis=1, keepdims=True)

    ds_code, ds_names = pd.factorize(datasets)  # datasets in order of first appearance
    # A class is the pair (dataset, label): factorise the pairs into one integer id.
    _, cls = np.unique(np.stack([ds_code, labels.astype(np.int64)], 1), axis=0,
                       return_inverse=True)
    cls = cls.reshape(-1).astype(np.int64)

    qrows, grows = np.flatnonzero(is_query), np.flatnonzero(is_gallery)
    gpos = np.full(n, -1, np.int64)
    gpos[grows] = np.arange(len(grows))
    self_pos = gpos[qrows]
    qcls, gcls = cls[qrows], cls[grows]
    qds, gds = ds_code[qrows], ds_code[grows]
    in_gallery = (self_pos >= 0).astype(np.int64)
    r = np.bincount(gcls, minlength=cls.max() + 1)[qcls] - in_gallery
    freq = np.maximum(r + in_gallery, 1)  # lone queries are excluded later; avoid 0/0
    valid = r >= 1
    r_safe = np.maximum(r, 1)
    need = _need(metrics, r_safe)
    g_per_ds = np.bincount(gds, minlength=len(ds_names))
    avail_ds = g_per_ds[qds] - in_gallery  # same-dataset gallery items other than the query
    need_ds = np.minimum(need, np.maximum(avail_ds, 0))

    names = metrics.retrieval_names
    uni = {m: np.zeros(len(qrows)) for m in names}
    per = {m: np.zeros(len(qrows)) for m in names}
    exact = np.zeros(len(qrows), bool)
    k_max = int(min(max(need.max(initial=1), 1), max(len(grows) - in_gallery.max(initial=0), 1)))

    searcher = make_searcher(x[grows], device, backend)
    if names and universal:
        done = 0
        for sl, k in _query_chunks(need, k_max, chunk_size):
            _, idx = search_excluding_self(searcher, x[qrows[sl]], self_pos[sl], k)
            ok = idx >= 0
            safe = np.where(ok, idx, 0)
            rel = (gcls[safe] == qcls[sl, None]) & ok
            for m, v in _score(rel, r_safe[sl], freq[sl], metrics).items():
                uni[m][sl] = v
            if per_dataset:
                # The dataset's own top list is the universal list filtered to that dataset; it
                # is exact when it still holds every neighbour the metrics need.
                same = (gds[safe] == qds[sl, None]) & ok
                count = same.sum(axis=1)
                order = np.argsort(~same, axis=1, kind="stable")  # same dataset first, rank kept
                rel_d = np.take_along_axis(rel, order, 1)
                rel_d &= np.arange(k)[None, :] < count[:, None]
                ex = count >= need_ds[sl]
                exact[sl] = ex
                rows = np.flatnonzero(ex)
                if len(rows):
                    sub = _score(rel_d[rows], r_safe[sl][rows], freq[sl][rows], metrics)
                    for m, v in sub.items():
                        per[m][sl[rows]] = v
            done += len(sl)
            if progress:
                progress(done, len(qrows))
    if names and per_dataset:
        _fallback_per_dataset(x, qrows, grows, self_pos, qcls, gcls, qds, gds, r_safe, freq,
                              need_ds, exact, per, metrics, device, backend, chunk_size)

    result_uni = _aggregate(uni, valid, np.ones(len(qrows), bool), names) if universal else {}
    result_ds: dict[str, dict[str, float]] = {}
    if per_dataset:
        for d, name in enumerate(ds_names):
            result_ds[str(name)] = _aggregate(per, valid, qds == d, names)
    if metrics.nmi or metrics.f1:
        rows_all = np.flatnonzero(is_query | is_gallery)
        if universal:
            result_uni.update(_cluster_scores(x, cls, rows_all, metrics, seed, device))
        if per_dataset:
            for d, name in enumerate(ds_names):
                rows = rows_all[ds_code[rows_all] == d]
                result_ds[str(name)].update(_cluster_scores(x, cls, rows, metrics, seed, device))

    summary: dict[str, dict[str, float]] = {"harmonic_mean": {}, "arithmetic_mean": {}}
    if result_ds:
        for m in metrics.names():
            vals = [result_ds[d][m] for d in result_ds]
            summary["harmonic_mean"][m] = harmonic_mean(vals)
            summary["arithmetic_mean"][m] = arithmetic_mean(vals)
    key = "recall@1" if "recall@1" in metrics.names() else (metrics.names() or [""])[0]
    return EvalResult(
        per_dataset=result_ds,
        universal=result_uni,
        harmonic_mean=summary["harmonic_mean"].get(key, float("nan")),
        arithmetic_mean=summary["arithmetic_mean"].get(key, float("nan")),
        summary=summary,
        seconds=time.perf_counter() - t0,
        backend=searcher.backend,
    )


def _fallback_per_dataset(x, qrows, grows, self_pos, qcls, gcls, qds, gds, r, freq, need_ds,
                          exact, per, metrics, device, backend, chunk_size) -> None:
    """Search the queries whose universal lists were too short against their own dataset."""
    for d in np.unique(qds[~exact]):
        q_idx = np.flatnonzero((~exact) & (qds == d))
        g_idx = np.flatnonzero(gds == d)
        local = np.full(len(grows), -1, np.int64)
        local[g_idx] = np.arange(len(g_idx))
        sp = np.where(self_pos[q_idx] >= 0, local[np.maximum(self_pos[q_idx], 0)], -1)
        k_max = int(max(1, min(need_ds[q_idx].max(initial=1), len(g_idx) - (sp >= 0).max())))
        searcher = make_searcher(x[grows[g_idx]], device, backend)
        for sl, k in _query_chunks(need_ds[q_idx], k_max, chunk_size):
            rows = q_idx[sl]
            _, idx = search_excluding_self(searcher, x[qrows[rows]], sp[sl], k)
            ok = idx >= 0
            rel = (gcls[g_idx[np.where(ok, idx, 0)]] == qcls[rows, None]) & ok
            for m, v in _score(rel, r[rows], freq[rows], metrics).items():
                per[m][rows] = v


def _aggregate(values: dict[str, np.ndarray], valid, mask, names) -> dict[str, float]:
    use = valid & mask
    out = {m: float(values[m][use].mean()) if use.any() else float("nan") for m in names}
    out["num_queries"] = int(mask.sum())
    out["num_excluded_queries"] = int((mask & ~valid).sum())
    return out


def _cluster_scores(x, cls, rows, metrics: MetricSpec, seed, device) -> dict[str, float]:
    classes = cls[rows]
    k = len(np.unique(classes))
    assign = clustering.kmeans_assign(x[rows], k, seed=seed, gpu=str(device).startswith("cuda")
                                      and _faiss_gpu_ok())
    out = {}
    if metrics.nmi:
        out["nmi"] = clustering.nmi(classes, assign)
    if metrics.f1:
        out["f1"] = clustering.pairwise_f1(classes, assign)
    return out


def _faiss_gpu_ok() -> bool:
    from umlbench.metrics.knn import has_faiss_gpu

    return has_faiss_gpu()
