"""Ties and collapsed embeddings (issue 22): exact values and bounded memory.

The reference ranks rows that are copies of a few prototypes: the exact similarities between
prototypes (integer arithmetic) decide, then the smaller gallery index, so a few thousand rows
cost a few prototype pairs instead of millions of exact dot products.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from tests.metrics.reference import (all_tied_reference, brute_force, exact_ints, exact_sims,
                                     unit_rows)
from umlbench.metrics import MetricSpec, evaluate
from umlbench.metrics import candidates as candidates_mod
from umlbench.metrics import dedup as dedup_mod

KS = (1, 2, 4, 8)
METRICS = ([f"recall@{k}" for k in KS] + ["precision@1", "r_precision", "map@r", "map@1000"])
SPEC = MetricSpec.from_names(METRICS)


def prototype_reference(protos, proto_of, labels, datasets, is_q, is_g, scope=None):
    """Mean of every retrieval metric over the queries of ``scope`` (a dataset or None) for rows
    ``protos[proto_of]``; ties between equal similarities go to the smaller gallery index."""
    ints = exact_ints(unit_rows(protos))
    exact = np.array([exact_sims(ints, i, range(len(protos))) for i in range(len(protos))],
                     dtype=object)
    # Dense rank of each exact value within its row: 0 = most similar.
    level = np.zeros(exact.shape, np.int64)
    for i, row in enumerate(exact):
        values = sorted(set(row.tolist()), reverse=True)
        where = {v: k for k, v in enumerate(values)}
        level[i] = [where[v] for v in row]
    rows = np.arange(len(proto_of)) if scope is None else np.flatnonzero(datasets == scope)
    gallery = rows[is_g[rows]]
    out = {m: [] for m in METRICS}
    for i in rows[is_q[rows]]:
        cand = gallery[gallery != i]
        order = np.lexsort((cand, level[proto_of[i], proto_of[cand]]))  # gallery index = row
        rel = (labels[cand] == labels[i]) & (datasets[cand] == datasets[i])
        rel = rel[order]
        r = int(rel.sum())
        if r == 0:
            continue
        hits = np.cumsum(rel)
        prec = hits / np.arange(1, len(rel) + 1)
        for k in KS:
            out[f"recall@{k}"].append(float(rel[:k].any()))
        out["precision@1"].append(float(rel[0]))
        out["r_precision"].append(rel[:r].sum() / r)
        out["map@r"].append(prec[:r][rel[:r]].sum() / r)
        out["map@1000"].append(prec[:1000][rel[:1000]].sum() / (r + int(is_g[i])))
    return {m: float(np.mean(v)) for m, v in out.items()}


def _check(res, ref_of, datasets, names=METRICS):
    for m in names:
        assert res.universal[m] == pytest.approx(ref_of(None)[m], rel=1e-12, abs=1e-12), m
    for d in np.unique(datasets):
        ref = ref_of(d)
        for m in names:
            assert res.per_dataset[d][m] == pytest.approx(ref[m], rel=1e-12, abs=1e-12), (d, m)


@pytest.fixture(params=[False, True], ids=["default-store", "tiny-store"])
def store_limit(request, monkeypatch):
    """Also run with a store that compacts after a few thousand entries, so that dropping
    ties beyond cap (``Store._by_rank``) happens at these small sizes."""
    if request.param:
        monkeypatch.setattr(candidates_mod, "_BASE_LIMIT", 2048)
    return request.param


@pytest.fixture(params=["dedup", "candidates"])
def path(request, monkeypatch):
    """Both ways the engine ranks copies: counting per distinct row (``dedup.py``, taken when
    there are few distinct rows) and the candidate pass (taken otherwise, e.g. when only part of
    the rows are copies). Yields the path and the list of inputs that took the dedup path."""
    taken = []
    real = dedup_mod.relevant_ranks_dedup

    def counted(*a, **k):
        taken.append(len(a[2]))
        return real(*a, **k)

    monkeypatch.setattr(dedup_mod, "relevant_ranks_dedup", counted)
    if request.param == "candidates":
        monkeypatch.setattr(dedup_mod, "worthwhile", lambda *a: False)
    return request.param, taken


@pytest.fixture
def tie_drops(monkeypatch):
    """Counts the calls that drop ties beyond cap."""
    calls = [0]
    real = candidates_mod.Store._by_rank

    def counted(self, *a):
        calls[0] += 1
        return real(self, *a)

    monkeypatch.setattr(candidates_mod.Store, "_by_rank", counted)
    return calls


def test_identical_rows_rank_by_gallery_index(store_limit, tie_drops, path):
    n = 2500  # more than the 2 * 1000 + 64 candidates MAP@1000's depth lets a query keep
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(1, 32))
    proto_of = np.zeros(n, np.int64)
    labels = rng.integers(0, 12, n)
    datasets = np.array(["a", "b"])[rng.integers(0, 2, n)]
    ones = np.ones(n, bool)
    res = evaluate(protos[proto_of], labels, datasets, metrics=SPEC)
    _check(res, lambda d: prototype_reference(protos, proto_of, labels, datasets, ones, ones, d),
           datasets)
    _check_path(path, tie_drops, store_limit)


def _check_path(path, tie_drops, store_limit):
    name, taken = path
    if name == "dedup":
        assert taken and tie_drops[0] == 0  # counted per distinct row, no candidate store
    else:
        assert not taken
        assert tie_drops[0] > 0 or not store_limit  # the tiny store surely drops ties


def test_mixed_tie_groups_with_separate_queries(store_limit, tie_drops, path):
    """Groups of identical rows, prototypes a rounding apart (float64 cannot order them) and
    prototypes with permuted coordinates (distinct rows, exactly equal similarities)."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(12, 24))
    close = base[:4] * (1 + 2.0**-40)  # the same direction: equal unit rows or 1 ulp apart
    perm = base[:4][:, ::-1].copy()  # reversed coordinates: equal norms, other directions
    near = base[4:8] + 1e-7 * rng.normal(size=(4, 24))
    protos = np.vstack([base, close, perm, near])
    n = 1200
    # Half the rows in two big groups (one prototype and its rounding-apart twin), deeper than
    # any cap, the rest spread over every prototype.
    weights = np.full(len(protos), 0.5 / (len(protos) - 2))
    weights[[0, 12]] = 0.3, 0.2
    proto_of = rng.choice(len(protos), n, p=weights)
    labels = rng.integers(0, 6, n)
    datasets = np.array(["x", "y", "z"])[rng.integers(0, 3, n)]
    is_q = rng.random(n) < 0.5
    is_g = ~is_q | (rng.random(n) < 0.3)
    shallow = [m for m in METRICS if m != "map@1000"]  # a shallow cap: more ties dropped
    for names in (METRICS, shallow):
        res = evaluate(protos[proto_of], labels, datasets, is_q, is_g,
                       metrics=MetricSpec.from_names(names))
        _check(res, lambda d: prototype_reference(protos, proto_of, labels, datasets, is_q,
                                                  is_g, d), datasets, names)
    _check_path(path, tie_drops, store_limit)


@pytest.mark.parametrize("backend", ["torch-fp32", "torch-bf16x3", "faiss-cpu"])
def test_near_collapsed_rows_match_brute_force_and_pml(backend, store_limit):
    """``1 + 0.01 N(0, 1)``: every similarity lies within the bf16 error bound of every other."""
    if backend == "faiss-cpu":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    n = 300
    emb = (1 + 0.01 * rng.normal(size=(n, 64))).astype(np.float32)
    labels = rng.integers(0, 10, n)
    datasets = np.array(["p", "q"])[rng.integers(0, 2, n)]
    ones = np.ones(n, bool)
    res = evaluate(emb, labels, datasets, metrics=SPEC, backend=backend)
    for scope, got in [(None, res.universal), *res.per_dataset.items()]:
        ref, _ = brute_force(emb, labels, datasets, ones, ones, ks=KS, scope=scope)
        for m in METRICS:
            assert got[m] == pytest.approx(ref[m], rel=1e-12, abs=1e-12), (scope, m)
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    calc = pml.AccuracyCalculator(include=("precision_at_1", "r_precision",
                                           "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
    t = torch.from_numpy(unit_rows(emb))
    # One class per (dataset, label), as umlbench's universal scope defines it.
    y = torch.from_numpy(labels * 2 + (datasets == "q"))
    pml_res = calc.get_accuracy(t, y, t, y, ref_includes_query=True)
    # PML ranks by float32 products, which cannot order all of these near-ties: it agrees to
    # within the few pairs that rounding swaps.
    assert res.universal["precision@1"] == pytest.approx(pml_res["precision_at_1"], abs=0.02)
    assert res.universal["r_precision"] == pytest.approx(pml_res["r_precision"], abs=0.02)
    assert res.universal["map@r"] == pytest.approx(pml_res["mean_average_precision_at_r"],
                                                   abs=0.02)


def test_memory_of_identical_rows_stays_bounded(path):
    """3,000 identical rows: the pair list of the old resolution grew with the cube of the tie
    group (1,000 rows took > 6 GB); counting keeps the arrays to a few times the candidates."""
    n = 3000
    rng = np.random.default_rng(3)
    emb = np.ones((n, 16), np.float32)
    labels = rng.integers(0, 30, n)
    datasets = np.full(n, "a")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one worker: the peak does not depend on thread timing
    tracemalloc.start()
    try:
        res = evaluate(emb, labels, datasets, metrics=SPEC, per_dataset=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        torch.set_num_threads(threads)
    assert peak < 512 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    # Everything ties: a query's relevant items sit where their gallery indices put them.
    ones = np.ones(n, bool)
    ref = prototype_reference(np.ones((1, 16)), np.zeros(n, np.int64), labels, datasets,
                              ones, ones)
    for m in METRICS:
        assert res.universal[m] == pytest.approx(ref[m], rel=1e-12, abs=1e-12), m


@pytest.mark.parametrize("mode", ["fp32", "bf16x3"])
def test_kmeans_on_tie_groups_equals_the_exact_reference(mode):
    """Copies of a few prototypes: every point contends with every copy of a centroid."""
    from tests.metrics.reference import kmeans_bruteforce
    from umlbench.metrics.kmeans import kmeans

    rng = np.random.default_rng(4)
    protos = rng.normal(size=(4, 6))
    protos[3] = protos[2] * (1 + 2.0**-40)  # a rounding apart from another prototype
    x = unit_rows(protos[rng.choice(4, 120, p=[0.6, 0.2, 0.1, 0.1])])
    assert np.array_equal(kmeans(x, 7, seed=5, niter=4, mode=mode),
                          kmeans_bruteforce(x, 7, seed=5, niter=4))


def test_identical_rows_form_one_cluster():
    """All centroids start on the same point: the smaller index takes every point."""
    from tests.metrics.reference import pairwise_f1_bruteforce

    n = 400
    labels = np.random.default_rng(5).integers(0, 8, n)
    res = evaluate(np.ones((n, 12)), labels, np.full(n, "a"), metrics=MetricSpec(
        recall_ks=(1,), nmi=True, f1=True), per_dataset=False)
    assert res.universal["nmi"] == 0.0
    assert res.universal["f1"] == pytest.approx(pairwise_f1_bruteforce(labels, np.zeros(n)),
                                                rel=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_copies_of_a_few_rows_match_brute_force_per_query(path, normalize):
    """Per-query terms on copies of a few prototypes, both ways (``path``): raw dot products
    where another row outscores the query's own, distinct rows with exactly equal similarity
    (permuted coordinates), query-only and gallery-only rows, three datasets."""
    from tests.metrics.reference import brute_force_terms

    rng = np.random.default_rng(6)
    # Integer rows of norm 3: unit rows are the same values permuted, so the exact dots of
    # row 2 (its first two coordinates equal) with rows 0 and 3 (those two swapped) are equal.
    protos = np.zeros((5, 8))
    protos[0, :3] = 1, 2, 2
    protos[1] = 3 * protos[0]  # raw dot: outscores row 0's copies for their own queries
    protos[2, :3] = 2, 2, 1
    protos[3, :3] = 2, 1, 2
    protos[4] = rng.normal(size=8)
    n = 240
    proto_of = rng.choice(5, n, p=[0.4, 0.2, 0.2, 0.1, 0.1])
    emb = protos[proto_of]
    labels = rng.integers(0, 4, n)
    datasets = np.array(["u", "v", "w"])[rng.integers(0, 3, n)]
    is_q = rng.random(n) < 0.7
    is_g = ~is_q | (rng.random(n) < 0.6)
    res = evaluate(emb, labels, datasets, is_q, is_g, metrics=SPEC, normalize=normalize)
    for scope in (None, "u", "v", "w"):
        rows, ref, _ = brute_force_terms(emb, labels, datasets, is_q, is_g, KS, scope,
                                         unit=normalize)
        got = res.per_query["universal" if scope is None else scope]
        assert np.array_equal(got.rows, rows), scope
        for m in METRICS:
            assert np.allclose(got.values[m], ref[m], rtol=0, atol=1e-12), (scope, m)
    assert bool(path[1]) == (path[0] == "dedup")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("held", [-1, 100_000, 10**9], ids=["one-way", "banded", "symmetric"])
def test_column_horizon_bounds_memory_with_the_same_terms(monkeypatch, threads, held):
    """The torch pass lets a block's columns serve only the next few blocks when the store
    would otherwise hold more than ``HELD_ENTRIES`` (later blocks read those rows themselves):
    the same exact terms whether every block reads one way (-1), a band of one block (a
    (query, gallery) budget of 2,064 + 32 per query of a 32-row block: 67,072 entries) or the
    whole symmetric pass; query-only and gallery-only rows, two datasets."""
    from tests.metrics.reference import brute_force_terms
    from umlbench.metrics import blockpass

    monkeypatch.setattr(blockpass, "HELD_ENTRIES", held)
    seen = []
    real = blockpass.collect_blocks

    def spy(*a, **k):
        info = real(*a, **k)
        seen.append(info.horizon)
        return info

    monkeypatch.setattr(blockpass, "collect_blocks", spy)
    rng = np.random.default_rng(7)
    n = 320
    emb = (1 + 0.01 * rng.normal(size=(n, 16))).astype(np.float32)
    emb[: n // 3] = rng.normal(size=(4, 16))[rng.integers(0, 4, n // 3)]  # copies and ties
    labels = rng.integers(0, 6, n)
    datasets = np.array(["p", "q"])[rng.integers(0, 2, n)]
    is_q = rng.random(n) < 0.8
    is_g = ~is_q | (rng.random(n) < 0.7)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = evaluate(emb, labels, datasets, is_q, is_g, metrics=SPEC, chunk_size=32,
                       backend="torch-bf16")
    finally:
        torch.set_num_threads(old)
    for scope in (None, "p", "q"):
        rows, ref, _ = brute_force_terms(emb, labels, datasets, is_q, is_g, KS, scope)
        got = res.per_query["universal" if scope is None else scope]
        assert np.array_equal(got.rows, rows), scope
        for m in METRICS:
            assert np.allclose(got.values[m], ref[m], rtol=0, atol=1e-12), (scope, m)
    h = seen[0]  # the universal pass
    blocks = np.arange(len(h))
    if held < 0:
        assert np.array_equal(h, blocks)
    elif held < 10**9:
        # The first block serves one more (no rate seen yet), so blocks 2.. read its rows;
        # later blocks serve as far as the rate seen projects the store to fit.
        assert h[0] == 1 and (h >= blocks).all(), h
    else:
        assert (h == len(h) - 1).all(), h


@pytest.mark.parametrize("pad", [1, 7, 1 << 22])
def test_kth_largest_per_query_equals_sorting(monkeypatch, pad):
    """The store's threshold raise reads each over-budget query's k-th largest value from a
    padded matrix, a slice of queries at a time (``pad`` entries): equal to sorting each."""
    from umlbench.metrics.candidates import _kth_largest

    monkeypatch.setattr(candidates_mod, "_PAD_ENTRIES", pad)
    rng = np.random.default_rng(8)
    for _ in range(50):
        idx = np.sort(rng.choice(100, int(rng.integers(1, 30)), replace=False))
        counts = rng.integers(1, 40, len(idx))
        k = np.array([rng.integers(1, c + 1) for c in counts])
        q = np.repeat(idx, counts)
        s = rng.normal(size=len(q))
        s[rng.random(len(q)) < 0.3] = 0.5  # ties
        ref = [np.sort(s[q == i])[::-1][kk - 1] for i, kk in zip(idx, k)]
        assert np.array_equal(_kth_largest(q, s, idx, k), ref)


def test_pml_many_tied_distances_10000_identical_rows():
    """The issue's case from pytorch-metric-learning's tests: 10,000 identical rows, every
    metric, once tried to allocate 95 GiB. Counted per distinct row: the closed form, in well
    under 256 MiB of Python-side allocations."""
    n = 10_000
    labels = np.random.default_rng(9).integers(0, 10, n)
    tracemalloc.start()
    try:
        res = evaluate(np.ones((n, 2), np.float32), labels, np.full(n, "a"), metrics=SPEC)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    ref = all_tied_reference(labels, KS)
    for m in METRICS:
        assert res.universal[m] == pytest.approx(ref[m], rel=1e-12, abs=1e-12), m
        assert res.per_dataset["a"][m] == res.universal[m]


def test_1000_near_collapsed_rows_in_bounded_memory():
    """The issue's other case: 1,000 rows of ``1 + 0.01 N(0, 1)``, 64-d, 10 classes (it ran out
    of memory; 600 rows took 2 GB). Against an independent float64 NumPy ranking (the values
    lie ~1e-5 apart, float64 errs by ~1e-14), on the default and the split-bf16 pass."""
    n = 1000
    rng = np.random.default_rng(10)
    emb = (1 + 0.01 * rng.normal(size=(n, 64))).astype(np.float32)
    labels = rng.integers(0, 10, n)
    x = unit_rows(emb).astype(np.float64)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :n - 1]  # ties: smaller index first
    rel = labels[order] == labels[:, None]
    r = rel.sum(1)
    hits = np.cumsum(rel, 1)
    prec = hits / np.arange(1, n)
    ref = {f"recall@{k}": rel[:, :k].any(1).mean() for k in KS}
    ref["precision@1"] = rel[:, 0].mean()
    within = rel & (np.arange(n - 1)[None, :] < r[:, None])
    ref["r_precision"] = (within.sum(1) / r).mean()
    ref["map@r"] = (np.where(within, prec, 0).sum(1) / r).mean()
    ref["map@1000"] = (np.where(rel, prec, 0)[:, :1000].sum(1) / (r + 1)).mean()
    for backend in (None, "torch-bf16x3"):
        tracemalloc.start()
        try:
            res = evaluate(emb, labels, np.full(n, "a"), metrics=SPEC, backend=backend)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 256 * 2**20, (backend, f"peak {peak / 2**20:.0f} MiB")
        for m in METRICS:
            assert res.universal[m] == pytest.approx(ref[m], rel=1e-12, abs=1e-12), (backend, m)
