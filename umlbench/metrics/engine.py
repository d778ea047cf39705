"""The evaluation engine: one candidate pass per protocol serves every retrieval metric, exactly.

Input is one table of N embeddings with, per row, a label, a dataset name and two flags: whether
the row is a query and whether it is in the gallery (both True = leave-one-out, the usual DML
protocol; In-shop has disjoint query and gallery rows). A class is the pair (dataset, label), so
equal labels of different datasets never match.

Every retrieval metric depends only on where a query's relevant items rank (``retrieval.py``),
and exactness needs only the neighbours that can rank above one of them. So each query gets a
threshold from its own class (its worst relevant similarity, or its best when only Recall@K /
P@1 are asked for, minus the error bounds), the candidate pass (``knn.py``) collects every gallery
item above it, and ``ranks.py`` turns the candidates into exact ranks. A query that collects far
more than the deepest rank any metric reads (a poorly trained model) has its threshold raised,
which never drops a neighbour within that depth. Per-dataset ranks are read off the same
candidates (counting only same-dataset items); queries whose candidates cannot prove them are
searched again within their dataset.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from umlbench.errors import UserError
from umlbench.metrics import dedup, retrieval
from umlbench.metrics.exact import duplicate_ids, normalise
from umlbench.metrics.knn import Searcher
from umlbench.metrics.ranks import exact_rank_order, relevant_ranks
from umlbench.metrics.spec import DEFAULT_METRICS, RETRIEVAL_ONLY, MetricSpec
from umlbench.metrics.summary import arithmetic_mean, harmonic_mean

__all__ = [
    "DEFAULT_METRICS",
    "RETRIEVAL_ONLY",
    "EvalResult",
    "MetricSpec",
    "QueryScores",
    "class_codes",
    "evaluate",
]


@dataclass(frozen=True)
class QueryScores:
    """The terms of one scope's retrieval means: ``rows`` (n,) int64, the input rows of the
    scope's scored queries (excluded queries are not here), in increasing order; ``values``
    metric -> (n,) float64, each query's term (Recall@K / Precision@1 hits are 0.0 or 1.0), so
    that the scope's metric is ``values[m].mean()``."""

    rows: np.ndarray
    values: dict[str, np.ndarray]


@dataclass
class EvalResult:
    """Scores of one evaluation. ``per_dataset[name]`` and ``universal`` map metric -> value and
    also hold ``num_queries`` and ``num_excluded_queries`` (queries without any relevant gallery
    item, left out of every retrieval mean; a metric is NaN when every query of a scope is
    excluded). ``harmonic_mean``/``arithmetic_mean`` summarise the per-dataset
    ``summary_metric`` (Recall@1 when computed); ``summary`` holds both means for every metric.
    ``per_query`` holds, per scope (dataset names and ``"universal"``), the per-query terms of
    its retrieval metrics (:class:`QueryScores`); it is left out of :meth:`to_dict`."""

    per_dataset: dict[str, dict[str, float]]
    universal: dict[str, float]
    harmonic_mean: float
    arithmetic_mean: float
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    backend: str = ""
    summary_metric: str = "recall@1"
    per_query: dict[str, QueryScores] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        out = asdict(replace(self, per_query={}))
        del out["per_query"]
        return out


_WARNED_1D = False  # the 1-dimensional embedding warning was given (see evaluate)


def _label_array(labels) -> np.ndarray:
    """``labels`` as an array, refusing a mix of numbers and strings: NumPy would turn
    ``[1, "1"]`` into the strings ``["1", "1"]``, silently one class."""
    if isinstance(labels, np.ndarray) and labels.dtype != object:
        return labels
    values = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    kinds = {type(v) for v in values}
    numeric = sorted(k.__name__ for k in kinds
                     if issubclass(k, (numbers.Number, np.number)))
    text = sorted(k.__name__ for k in kinds if issubclass(k, (str, bytes, np.str_, np.bytes_)))
    if numeric and text:
        first = next(i for i, v in enumerate(values) if type(v).__name__ in text)
        raise UserError(f"labels mix numbers ({', '.join(numeric)}) and strings "
                        f"({', '.join(text)}), e.g. row {first} is {values[first]!r}; "
                        "use one type so that 1 and '1' are not merged or split silently")
    return np.asarray(labels)


def class_codes(labels: np.ndarray) -> np.ndarray:
    """Labels -> (N,) int64 class codes. Integers (and integral floats) keep their values;
    strings are classes by name; non-integral or non-finite floats are a UserError."""
    labels = np.asarray(labels)
    if labels.dtype == object:
        kinds = {type(v) for v in labels.tolist()}
        if kinds <= {int, float, bool} or all(issubclass(k, (np.number, int, float, bool))
                                               for k in kinds):
            labels = np.asarray(labels.tolist(), dtype=np.float64)
        else:
            labels = labels.astype(str)
    if labels.dtype.kind in "biu":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if len(bad):
            raise UserError(f"labels must be integers or strings; row {int(bad[0])} has "
                            f"{float(labels[bad[0]])!r} ({len(bad)} non-integral value(s)), which "
                            "would be truncated")
        if np.abs(labels).max(initial=0) >= 2.0**62:
            raise UserError("labels are too large to be class ids")
        return labels.astype(np.int64)
    if labels.dtype.kind in "US":
        return np.unique(labels, return_inverse=True)[1].reshape(-1).astype(np.int64)
    raise UserError(f"labels must be integers or strings, got dtype {labels.dtype}")


def _validate(emb, labels, datasets, is_query, is_gallery) -> None:
    n = emb.shape[0] if emb.ndim == 2 else -1
    if emb.ndim != 2 or n == 0 or emb.shape[1] == 0:
        raise UserError(f"embeddings must be a non-empty (N, D) array, got shape {emb.shape}")
    if emb.dtype.kind not in "fiub":
        raise UserError(f"embeddings must be numeric, got dtype {emb.dtype}")
    for name, arr in (("labels", labels), ("datasets", datasets), ("is_query", is_query),
                      ("is_gallery", is_gallery)):
        if arr.shape != (n,):
            raise UserError(f"{name} has shape {arr.shape}, expected ({n},) to match embeddings")
    if not is_query.any() or not is_gallery.any():
        raise UserError("need at least one query row and one gallery row")
    names, counts = np.unique(datasets[is_query | is_gallery], return_counts=True)
    for ds, c in zip(names, counts):
        if c < 2:
            raise UserError(f"dataset {ds!r} has fewer than two samples; nothing to retrieve")


def _need(spec: MetricSpec, r: np.ndarray) -> np.ndarray:
    """Deepest rank any requested metric reads, per query: (Q,) int64."""
    need = np.full(len(r), max(spec.recall_ks, default=1), dtype=np.int64)
    if spec.needs_r:
        need = np.maximum(need, r)
    if spec.map_at_1000:
        need = np.maximum(need, 1000)
    return need


def _scores(owner, pos, j, r, freq, nq, spec: MetricSpec) -> dict[str, np.ndarray]:
    first = retrieval.first_rank(owner, pos, nq)
    out = {f"recall@{k}": retrieval.recall_at_k(first, k) for k in spec.recall_ks}
    if spec.precision_at_1:
        out["precision@1"] = retrieval.precision_at_1(first)
    if spec.r_precision:
        out["r_precision"] = retrieval.r_precision(owner, pos, r)
    if spec.map_at_r:
        out["map@r"] = retrieval.map_at_r(owner, pos, j, r)
    if spec.map_at_1000:
        out["map@1000"] = retrieval.map_at_1000(owner, pos, j, freq)
    return out


@dataclass
class _Problem:
    """Queries (rows ``qrow``) against a gallery (rows ``grow``), with their class structure."""

    qrow: np.ndarray
    grow: np.ndarray
    self_pos: np.ndarray
    qcls: np.ndarray
    gcls: np.ndarray
    qds: np.ndarray
    gds: np.ndarray

    @classmethod
    def build(cls, qrow, grow, cls_of_row, ds_of_row) -> _Problem:
        where = np.full(len(cls_of_row), -1, np.int64)
        where[grow] = np.arange(len(grow))
        return cls(qrow, grow, where[qrow], cls_of_row[qrow], cls_of_row[grow],
                   ds_of_row[qrow], ds_of_row[grow])

    def relevant_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """r: same-class gallery items other than the query; freq: ooDML's class frequency."""
        inside = (self.self_pos >= 0).astype(np.int64)
        r = np.bincount(self.gcls, minlength=self.qcls.max(initial=0) + 1)[self.qcls] - inside
        return r, np.maximum(r + inside, 1)


def _search(searcher: Searcher, x, p: _Problem, spec: MetricSpec, cap, need_ds, norm_sq, dup):
    """Per-query scores of every query of ``p``: (whole gallery, own dataset, covered_ds)."""
    r, freq = p.relevant_counts()
    use_max = not (spec.needs_r or spec.map_at_1000)  # only the first relevant item matters
    t = searcher.own_class_threshold(p.qrow, p.grow, p.qcls, p.gcls, use_max)
    t[r < 1] = np.inf
    nq = len(p.qrow)
    uni = {m: np.zeros(nq) for m in spec.retrieval_names}
    own = {m: np.zeros(nq) for m in spec.retrieval_names}
    covered = np.zeros(nq, bool)

    def emit(members, q, g, s, cand):  # one complete group of queries at a time
        rk = relevant_ranks(x, members, q, g, s, cand, p.qrow, p.grow, p.qcls, p.gcls, p.qds,
                            p.gds, need_ds, norm_sq, dup)
        for out, pos in ((uni, rk.pos), (own, rk.pos_ds)):
            got = _scores(rk.owner, pos, rk.j, r[members], freq[members], len(members), spec)
            for m, v in got.items():
                out[m][members] = v
        covered[members] = rk.covered_ds

    order = exact_rank_order(x, p.qrow, p.grow, dup, searcher.eps_val, norm_sq)
    searcher.candidates(p.qrow, p.grow, p.self_pos, t, cap, emit, order, dup[p.grow])
    return uni, own, covered


def _search_dedup(x, p: _Problem, spec: MetricSpec, need, norm_sq, dup):
    """Per-query scores of every query of ``p`` by counting per distinct row (``dedup.py``)."""
    r, freq = p.relevant_counts()
    out = {m: np.zeros(len(p.qrow)) for m in spec.retrieval_names}

    def consume(queries, owner, pos, j):
        got = _scores(owner, pos, j, r[queries], freq[queries], len(queries), spec)
        for m, v in got.items():
            out[m][queries] = v

    dedup.relevant_ranks_dedup(x, dup, p.qrow, p.self_pos, p.qcls, p.grow, p.gcls, need,
                               norm_sq, consume)
    return out


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
    n_clusters: int | None = None,
) -> EvalResult:
    """Score embeddings per dataset and universally.

    Args:
        embeddings: (N, D) float (any float or integer dtype); L2-normalised here in float64
            (cosine similarity) unless ``normalize`` is False, which ranks by the raw dot
            product (the official PUMA scoring of un-normalised embeddings: ensembles of
            dataset-specific models, Poincare-ball points).
        labels: (N,) class label inside each dataset: integers, integral floats or strings.
        datasets: (N,) str, dataset name per row.
        is_query, is_gallery: (N,) bool; default all True (leave-one-out).
        metrics: which metrics; device: "cpu" or "cuda[:i]"; backend: force a search backend
            (``knn.BACKENDS``); chunk_size: rows per similarity block (tests use tiny ones).
        progress: called with (blocks done, total) during each search.
        n_clusters: k of the NMI/F1 k-means; default the number of classes scored (ooDML's
            few-shot episodes on SOP use the number of support classes instead).
    """
    t0 = time.perf_counter()
    emb = np.asarray(embeddings)
    labels = _label_array(labels)
    datasets = np.asarray(datasets).astype(str)
    n = emb.shape[0] if emb.ndim == 2 else 0
    is_query = np.ones(n, bool) if is_query is None else np.asarray(is_query, bool)
    is_gallery = np.ones(n, bool) if is_gallery is None else np.asarray(is_gallery, bool)
    _validate(emb, labels, datasets, is_query, is_gallery)
    global _WARNED_1D
    if emb.shape[1] == 1 and normalize and not _WARNED_1D:
        # Unit length in one dimension is +1 or -1: every row ties with half of the others.
        # Once per process: an evaluation every epoch would repeat it.
        _WARNED_1D = True
        warnings.warn("1-dimensional embeddings: L2 normalisation (cosine similarity) maps every "
                      "row to +1 or -1, so all rows of a sign tie and only the tie rule orders "
                      "them; pass normalize=False to rank by the raw value", UserWarning,
                      stacklevel=2)
    codes = class_codes(labels)
    uniq, first_row, inv = np.unique(datasets, return_index=True, return_inverse=True)
    ds_names = uniq[np.argsort(first_row)]  # datasets in order of first appearance
    ds_code = np.argsort(np.argsort(first_row))[inv.reshape(-1)]
    # A class is the pair (dataset, label): factorise the pairs into one integer id.
    label_code = np.unique(codes, return_inverse=True)[1].reshape(-1)
    cls = np.unique(ds_code * (label_code.max() + 1) + label_code,
                    return_inverse=True)[1].reshape(-1)
    # Working order: rows that are query and gallery, then gallery-only, then query-only rows
    # (rows that are neither are dropped), each sorted by class. The search reads each group
    # as one slice and finds a query's own class near the diagonal. Gallery positions keep the
    # input order, which is what the tie rule refers to.
    used = np.flatnonzero(is_query | is_gallery)
    group = np.where(is_query & is_gallery, 0, np.where(is_gallery, 1, 2))[used]
    perm = used[np.lexsort((cls[used], group))]
    x = normalise(emb, perm, unit=normalize)
    cls, ds_code = cls[perm], ds_code[perm]
    isq, isg = is_query[perm], is_gallery[perm]
    norm_sq = max(float((x[i:i + 65536].astype(np.float64) ** 2).sum(1).max())
                  for i in range(0, len(x), 65536))
    block = (chunk_size, chunk_size) if chunk_size else None
    searcher = Searcher(x, device, backend, block=block, norm_sq=norm_sq, progress=progress)

    names = metrics.retrieval_names
    dup = duplicate_ids(x) if names else None  # bit-identical rows: ties without arithmetic
    # Per-query scores cover every K of any scope; each scope averages only its own metrics.
    scored = replace(metrics, recall_ks=metrics.all_recall_ks, dataset_recall_ks=())
    qrows = np.flatnonzero(isq)
    grows = np.flatnonzero(isg)
    grows = grows[np.argsort(perm[grows], kind="stable")]
    prob = _Problem.build(qrows, grows, cls, ds_code)
    r, _ = prob.relevant_counts()
    valid = r >= 1
    need = _need(metrics, r)
    own_k = dict(metrics.dataset_recall_ks)
    own_k = np.array([max(own_k.get(str(d), ()), default=1) for d in ds_names])[prob.qds]
    avail_ds = np.bincount(prob.gds, minlength=len(ds_names))[prob.qds] - (prob.self_pos >= 0)
    need_ds = np.minimum(np.maximum(need, own_k), np.maximum(avail_ds, 1))
    uni = {m: np.zeros(len(qrows)) for m in scored.retrieval_names}
    per = {m: np.zeros(len(qrows)) for m in scored.retrieval_names}
    if names and dedup.worthwhile(dup, qrows, prob.qcls):
        # Few distinct rows (a collapsed model): rank by counting per distinct row.
        if universal:
            uni = _search_dedup(x, prob, scored, np.maximum(need, need_ds), norm_sq, dup)
        if per_dataset:
            for d in np.unique(prob.qds):
                qi = np.flatnonzero(prob.qds == d)
                sub = _Problem.build(qrows[qi], grows[prob.gds == d], cls, ds_code)
                got = _search_dedup(x, sub, scored, need_ds[qi], norm_sq, dup)
                for m in scored.retrieval_names:
                    per[m][qi] = got[m]
    elif names:
        todo = np.ones(len(qrows), bool)
        if universal:
            uni, own, covered = _search(searcher, x, prob, scored, np.maximum(need, need_ds),
                                        need_ds, norm_sq, dup)
            if per_dataset:
                per, todo = own, ~covered
        if per_dataset:
            for d in np.unique(prob.qds[todo]):
                qi = np.flatnonzero(todo & (prob.qds == d))
                sub = _Problem.build(qrows[qi], grows[prob.gds == d], cls, ds_code)
                got, _, _ = _search(searcher, x, sub, scored, need_ds[qi], need_ds[qi],
                                    norm_sq, dup)
                for m in scored.retrieval_names:
                    per[m][qi] = got[m]

    result_uni = _aggregate(uni, valid, np.ones(len(qrows), bool), names) if universal else {}
    result_ds: dict[str, dict[str, float]] = {}
    # The terms of every mean, by input row (the working order is a permutation of it).
    per_query: dict[str, QueryScores] = {}
    if universal and names:
        per_query["universal"] = _terms(uni, valid, perm[qrows], names)
    if per_dataset:
        for d, name in enumerate(ds_names):
            own_names = metrics.for_dataset(str(name)).retrieval_names
            result_ds[str(name)] = _aggregate(per, valid, prob.qds == d, own_names)
            if own_names:
                per_query[str(name)] = _terms(per, valid & (prob.qds == d), perm[qrows],
                                              own_names)
    if metrics.nmi or metrics.f1:
        from umlbench.metrics.clustering import cluster_scores

        rows_all = np.argsort(perm, kind="stable")  # clustered in input order
        if metrics.cluster_rows == "queries":  # PML's reading: the query rows only
            rows_all = rows_all[isq[rows_all]]
        if universal:
            result_uni.update(cluster_scores(searcher, cls, rows_all, metrics, seed, n_clusters))
        if per_dataset:
            for d, name in enumerate(ds_names):
                rows = rows_all[ds_code[rows_all] == d]
                result_ds[str(name)].update(
                    cluster_scores(searcher, cls, rows, metrics, seed, n_clusters) if len(rows)
                    else {m: float("nan") for m in ("nmi", "f1") if getattr(metrics, m)})

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
        summary_metric=key,
        per_query=per_query,
    )


def _terms(values: dict[str, np.ndarray], use: np.ndarray, rows: np.ndarray,
           names) -> QueryScores:
    """The scored queries ``use`` of one scope as :class:`QueryScores` (in input-row order)."""
    order = np.argsort(rows[use], kind="stable")
    return QueryScores(rows[use][order], {m: values[m][use][order] for m in names})


def _aggregate(values: dict[str, np.ndarray], valid, mask, names) -> dict[str, float]:
    use = valid & mask
    # An exactly rounded sum: the mean does not depend on the order of the queries.
    out = {m: math.fsum(values[m][use].tolist()) / use.sum() if use.any() else float("nan")
           for m in names}
    out["num_queries"] = int(mask.sum())
    out["num_excluded_queries"] = int((mask & ~valid).sum())
    return out
