"""The engine's per-query terms: each query's value against a brute-force NumPy reference, and
their means are the reported aggregates in every scope."""

from __future__ import annotations

import numpy as np
import pytest

from tests.metrics.reference import brute_force_terms, clustered_embeddings
from umlbench.metrics import MetricSpec, evaluate

RETRIEVAL = MetricSpec(nmi=False, f1=False)


def _inputs():
    """Two datasets, one with In-shop-style query/gallery rows, and a singleton class (its
    query has no relevant item and is excluded)."""
    rng = np.random.default_rng(5)
    emb, labels, datasets = clustered_embeddings(rng, 6, (2, 8), 6, spread=1.2, n_datasets=2)
    labels = labels.copy()
    labels[0] = 99  # a class of one image
    n = len(emb)
    is_q, is_g = np.ones(n, bool), np.ones(n, bool)
    shop = datasets == "ds1"
    flip = rng.random(n) < 0.5
    is_q[shop], is_g[shop] = flip[shop], ~flip[shop]
    return emb, labels, datasets, is_q, is_g


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_terms_match_brute_force_query_by_query(chunk_size):
    emb, labels, datasets, is_q, is_g = _inputs()
    spec = RETRIEVAL.with_dataset_recall_ks({"ds1": (1, 10)})
    res = evaluate(emb, labels, datasets, is_q, is_g, metrics=spec, chunk_size=chunk_size)
    assert set(res.per_query) == {"universal", "ds0", "ds1"}
    for scope in ("universal", "ds0", "ds1"):
        ks = (1, 2, 4, 8, 10) if scope == "ds1" else (1, 2, 4, 8)
        rows, ref, excluded = brute_force_terms(emb, labels, datasets, is_q, is_g, ks=ks,
                                                scope=None if scope == "universal" else scope)
        got = res.per_query[scope]
        assert got.rows.tolist() == sorted(rows)  # scored queries only, in input-row order
        assert 0 not in got.rows.tolist()  # the excluded singleton query
        order = np.argsort(rows)
        assert set(got.values) == set(ref)
        for m, v in ref.items():
            np.testing.assert_allclose(got.values[m], np.asarray(v)[order], atol=1e-12,
                                       err_msg=f"{scope} {m}")
        assert excluded == (res.universal if scope == "universal"
                            else res.per_dataset[scope])["num_excluded_queries"]


def test_term_means_are_the_aggregates():
    emb, labels, datasets, is_q, is_g = _inputs()
    res = evaluate(emb, labels, datasets, is_q, is_g)  # default metrics, NMI/F1 included
    for scope, terms in res.per_query.items():
        agg = res.universal if scope == "universal" else res.per_dataset[scope]
        assert len(terms.rows) == agg["num_queries"] - agg["num_excluded_queries"]
        assert "nmi" not in terms.values  # not a mean over queries
        for m, v in terms.values.items():
            assert v.mean() == pytest.approx(agg[m], abs=1e-12), (scope, m)
            if m.startswith("recall@") or m == "precision@1":
                assert set(np.unique(v)) <= {0.0, 1.0}
    assert "per_query" not in res.to_dict()  # the JSON form keeps only the aggregates


def test_scopes_not_asked_for_have_no_terms():
    emb, labels, datasets, is_q, is_g = _inputs()
    assert set(evaluate(emb, labels, datasets, is_q, is_g, metrics=RETRIEVAL,
                        universal=False).per_query) == {"ds0", "ds1"}
    assert evaluate(emb, labels, datasets, metrics=MetricSpec.from_names(["nmi"])
                    ).per_query == {}
