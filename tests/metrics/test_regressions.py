"""Regression tests for issue 15's bugs, each built from its reproduction."""

from __future__ import annotations

import numpy as np
import pytest

from tests.metrics.reference import brute_force, clustered_embeddings
from umlbench.errors import UserError
from umlbench.metrics import MetricSpec, evaluate, knn
from umlbench.metrics.knn import BACKENDS

RETRIEVAL = MetricSpec(recall_ks=(1, 2, 4, 8), nmi=False, f1=False)
CPU_BACKENDS = [b for b in BACKENDS if b != "faiss-gpu"]


def test_no_truncated_lists_when_some_queries_are_not_in_the_gallery():
    # Issue 15, bug 1: 3 rows, all queries, rows 0 and 1 in the gallery, one class. Query 2's
    # list has two items; every score is 1.0 in both scopes (universal was 0.8333).
    emb = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8]], np.float32)
    spec = MetricSpec(recall_ks=(1, 2, 3), nmi=False, f1=False)
    res = evaluate(emb, np.zeros(3, int), np.array(["a"] * 3), np.ones(3, bool),
                   np.array([True, True, False]), metrics=spec)
    for scope in (res.universal, res.per_dataset["a"]):
        for key in spec.retrieval_names:
            assert scope[key] == pytest.approx(1.0 if key != "map@1000" else scope[key]), key
        assert scope["r_precision"] == 1.0 and scope["map@r"] == 1.0
    # map@1000 with G <= 1000: every relevant item counts (queries 0, 1: freq 2; query 2: 2).
    assert res.universal["map@1000"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert res.universal["map@1000"] == res.per_dataset["a"]["map@1000"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_backend_follows_the_tie_rule(backend, monkeypatch):
    # Issue 15, bug 2: identical embeddings, labels [1,0,0,1,0,1,0,1,0,1]. Every neighbour
    # ties, so the smaller gallery index ranks first: query 0 sees row 1 (a miss), every other
    # query sees row 0 (label 1): R@1 = 4 / 10 on every backend (torch gave 0.5).
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 1, 0, 1])
    emb = np.ones((10, 4), np.float32)
    res = evaluate(emb, labels, np.array(["a"] * 10), metrics=RETRIEVAL, backend=backend)
    ref, _ = brute_force(emb, labels, np.array(["a"] * 10), np.ones(10, bool), np.ones(10, bool))
    assert res.universal["recall@1"] == pytest.approx(0.4)
    for key in RETRIEVAL.retrieval_names:
        assert res.universal[key] == pytest.approx(ref[key], abs=1e-12), key
        assert res.per_dataset["a"][key] == pytest.approx(ref[key], abs=1e-12), key


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_tie_heavy_inputs_give_identical_values_on_every_backend(backend):
    rng = np.random.default_rng(11)
    emb = rng.integers(-1, 2, size=(60, 3)).astype(np.float32)  # few distinct directions
    emb[np.abs(emb).sum(1) == 0, 0] = 1
    labels = rng.integers(0, 4, 60)
    datasets = np.where(np.arange(60) < 30, "a", "b")
    res = evaluate(emb, labels, datasets, metrics=RETRIEVAL, backend=backend, chunk_size=8)
    for scope in (None, "a", "b"):
        ref, _ = brute_force(emb, labels, datasets, np.ones(60, bool), np.ones(60, bool),
                               scope=scope)
        got = res.universal if scope is None else res.per_dataset[scope]
        for key in RETRIEVAL.retrieval_names:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), (scope, key)


@pytest.mark.parametrize("limit", [2, 3, 5])
def test_k_limited_search_merges_shards(limit, monkeypatch):
    # Issue 15, bug 3: faiss-gpu allows k <= 2048. The same merging runs on CPU with the
    # limit lowered: a class larger than the limit and recall@K beyond it still score exactly.
    monkeypatch.setitem(knn.K_LIMIT, "faiss-cpu", limit)
    rng = np.random.default_rng(3)
    emb, labels, datasets = clustered_embeddings(rng, 3, (8, 14), 6, spread=1.5, n_datasets=2)
    spec = MetricSpec(recall_ks=(1, 7, 20), nmi=False, f1=False)
    res = evaluate(emb, labels, datasets, metrics=spec, backend="faiss-cpu")
    n = len(emb)
    for scope in (None, "ds0", "ds1"):
        ref, _ = brute_force(emb, labels, datasets, np.ones(n, bool), np.ones(n, bool),
                             ks=(1, 7, 20), scope=scope)
        got = res.universal if scope is None else res.per_dataset[scope]
        for key in spec.retrieval_names:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), (scope, key)


def test_sharded_search_is_complete_above_its_bound():
    from umlbench.metrics.candidates import sharded_search

    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(37, 5)).astype(np.float32)
    queries = rng.normal(size=(6, 5)).astype(np.float32)
    full = queries @ gallery.T

    def shard(q, a, b, k):
        s = q @ gallery[a:b].T
        idx = np.argsort(-s, axis=1)[:, :k]
        return np.take_along_axis(s, idx, 1), idx

    search = sharded_search(shard, len(gallery), limit=4)
    for k in (3, 9, 17, 37):
        sims, idx, complete = search(queries, k)
        assert (np.diff(sims, axis=1) <= 0).all()
        for i in range(len(queries)):
            wanted = set(np.flatnonzero(full[i] > complete[i]).tolist())
            assert wanted <= set(idx[i].tolist())


@pytest.mark.parametrize("scale, dtype", [(1e20, np.float32), (1e-30, np.float32),
                                          (1e39, np.float64), (1e300, np.float64),
                                          (1e-300, np.float64)])
def test_extreme_magnitudes_score_like_unit_vectors(scale, dtype):
    # Issue 15, bug 4: float32 x 1e20 gave R@1 0.5 instead of 1.0; float64 x 1e39 became NaN
    # and was reported as 0.0. Normalising in float64 after scaling each row by its largest
    # value keeps every magnitude exact.
    rng = np.random.default_rng(4)
    emb, labels, datasets = clustered_embeddings(rng, 5, (3, 6), 8, spread=0.3)
    base = evaluate(emb, labels, datasets, metrics=RETRIEVAL)
    big = evaluate((emb.astype(np.float64) * scale).astype(dtype), labels, datasets,
                   metrics=RETRIEVAL)
    assert base.universal["recall@1"] == 1.0
    for key in RETRIEVAL.retrieval_names:
        assert big.universal[key] == base.universal[key], key


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_rejected_naming_the_rows(bad):
    rng = np.random.default_rng(5)
    emb, labels, datasets = clustered_embeddings(rng, 3, (3, 3), 4)
    emb[[2, 5], 1] = bad
    with pytest.raises(UserError, match=r"NaN or inf in 2 row\(s\): rows 2, 5"):
        evaluate(emb, labels, datasets)


def test_all_zero_rows_are_rejected_naming_the_rows():
    emb = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], np.float32)
    with pytest.raises(UserError, match=r"all-zero row\(s\).*rows 1"):
        evaluate(emb, np.array([0, 0, 1, 1]), np.array(["a"] * 4))


def test_float_labels_are_not_truncated():
    # Issue 15, bug 5: [0.2, 0.7, 0.2, 0.7] used to become [0, 0, 0, 0] (one class).
    emb = np.eye(4, dtype=np.float32) + 0.1
    with pytest.raises(UserError, match="labels must be integers or strings; row 0 has 0.2"):
        evaluate(emb, np.array([0.2, 0.7, 0.2, 0.7]), np.array(["a"] * 4))


def test_integral_float_and_string_labels_are_classes():
    rng = np.random.default_rng(6)
    emb, labels, datasets = clustered_embeddings(rng, 4, (3, 5), 6, spread=1.0)
    ints = evaluate(emb, labels, datasets, metrics=RETRIEVAL)
    names = np.array(["cat", "dog", "a label with spaces", "7"])[labels]
    for other in (labels.astype(np.float64), names, names.astype(object)):
        res = evaluate(emb, other, datasets, metrics=RETRIEVAL)
        assert res.universal == ints.universal


def test_summary_names_the_metric_it_summarises():
    rng = np.random.default_rng(7)
    emb, labels, datasets = clustered_embeddings(rng, 4, (3, 5), 6, n_datasets=2)
    res = evaluate(emb, labels, datasets, metrics=MetricSpec.from_names(["map@r", "r_precision"]))
    assert res.summary_metric == "r_precision"
    assert res.harmonic_mean == res.summary["harmonic_mean"]["r_precision"]
    res = evaluate(emb, labels, datasets, metrics=RETRIEVAL)
    assert res.summary_metric == "recall@1"


def test_recall_at_a_huge_k_is_one_line_error_or_exact():
    with pytest.raises(UserError, match="K must be between 1 and"):
        MetricSpec.from_names(["recall@99999999999999999999"])
    rng = np.random.default_rng(8)
    emb, labels, datasets = clustered_embeddings(rng, 3, (2, 4), 4)
    res = evaluate(emb, labels, datasets, metrics=MetricSpec.from_names(["recall@2147483647"]))
    assert res.universal["recall@2147483647"] == 1.0


def test_a_scope_whose_queries_are_all_excluded_is_nan_with_its_count():
    emb = np.array([[1, 0], [0, 1], [1, 1], [1, 0.5]], np.float32)
    res = evaluate(emb, np.array([0, 1, 2, 2]), np.array(["a", "a", "b", "b"]), metrics=RETRIEVAL)
    assert np.isnan(res.per_dataset["a"]["recall@1"])
    assert res.per_dataset["a"]["num_excluded_queries"] == 2
    assert res.per_dataset["b"]["recall@1"] == 1.0


@pytest.mark.parametrize("backend", ["torch", "torch-fp32"])
def test_large_classes_take_the_tiled_own_class_path(backend, monkeypatch):
    # Classes above ownclass._SMALL rows get their threshold from tiled matmuls (bounded by the
    # search's own error) instead of float64 pairs; lowered limits exercise that path here.
    from umlbench.metrics import ownclass

    monkeypatch.setattr(ownclass, "_SMALL", 3)
    monkeypatch.setattr(ownclass, "_TILE", 4)
    rng = np.random.default_rng(12)
    emb, labels, datasets = clustered_embeddings(rng, 4, (2, 13), 5, spread=1.2, n_datasets=2)
    n = len(emb)
    is_q, is_g = np.ones(n, bool), rng.random(n) < 0.8
    for spec in (RETRIEVAL, MetricSpec(recall_ks=(1, 3), r_precision=False, map_at_r=False,
                                       map_at_1000=False, nmi=False, f1=False)):
        res = evaluate(emb, labels, datasets, is_q, is_g, metrics=spec, backend=backend)
        for scope in (None, "ds0", "ds1"):
            ref, _ = brute_force(emb, labels, datasets, is_q, is_g, ks=spec.recall_ks,
                                 scope=scope)
            got = res.universal if scope is None else res.per_dataset[scope]
            for key in spec.retrieval_names:
                assert got[key] == pytest.approx(ref[key], abs=1e-12), (scope, key)


def test_raw_dot_products_above_one_rank_exactly():
    """Unnormalised rows (the official scoring of an ensemble average) with dot products far
    above 1: the rank resolution packs each query's values into a key that assumes [-1, 1], so
    the rows must be scaled to length <= 1 first (with one scale, MAP@R came out 0.0033 instead
    of 0.0042)."""
    rng = np.random.default_rng(0)
    emb = (rng.normal(size=(400, 64)) + 3.0) * rng.uniform(1.0, 3.0, (400, 1))
    labels = np.repeat(np.arange(100), 4)
    datasets = np.array(["a"] * 400)
    spec = MetricSpec.from_names(["recall@1", "recall@2", "map@r", "r_precision"])
    got = evaluate(emb, labels, datasets, metrics=spec, normalize=False).universal
    ref, _ = brute_force(emb, labels, datasets, np.ones(400, bool), np.ones(400, bool),
                         ks=(1, 2), unit=False)
    for key in ("recall@1", "recall@2", "map@r", "r_precision"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
