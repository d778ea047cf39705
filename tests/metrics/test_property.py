"""Property test: every metric equals the brute-force reference on random small inputs.

Inputs mix leave-one-out datasets with query/gallery datasets (some rows both, some neither),
draw embeddings from a coarse grid (many exact ties and duplicates) or from a Gaussian, and run
on a random backend, block size and metric selection.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.metrics.reference import brute_force
from umlbench.metrics import MetricSpec, evaluate
from umlbench.metrics.knn import BACKENDS

EXAMPLES = int(os.environ.get("UMLBENCH_PROPERTY_EXAMPLES", "60"))  # 600 ran clean


@st.composite
def problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dim = draw(st.integers(2, 6))
    grid = draw(st.booleans())
    embs, labels, names, isq, isg = [], [], [], [], []
    for d in range(draw(st.integers(1, 3))):
        n = draw(st.integers(2, 25))
        lab = rng.integers(0, draw(st.integers(1, 6)), n)
        centres = rng.normal(size=(lab.max() + 1, dim))
        e = centres[lab] + draw(st.sampled_from([0.1, 1.0, 5.0])) * rng.normal(size=(n, dim))
        if grid:
            e = np.round(e)
            e[np.abs(e).sum(1) == 0, 0] = 1.0
        kind = draw(st.sampled_from(["loo", "split", "mixed"]))
        q = np.ones(n, bool) if kind == "loo" else rng.random(n) < 0.5
        g = np.ones(n, bool) if kind == "loo" else ~q | ((rng.random(n) < 0.3) & (kind == "mixed"))
        if not (q | g).sum() >= 2:
            q[:2] = g[:2] = True
        embs.append(e.astype(np.float32))
        labels.append(lab)
        names.append(np.full(n, f"d{d}"))
        isq.append(q)
        isg.append(g)
    isq, isg = np.concatenate(isq), np.concatenate(isg)
    if not isq.any() or not isg.any():
        isq[0] = isg[-1] = True
    ks = tuple(sorted(set(draw(st.lists(st.integers(1, 40), min_size=0, max_size=3)))))
    spec = MetricSpec(recall_ks=ks, precision_at_1=draw(st.booleans()),
                      r_precision=draw(st.booleans()), map_at_r=draw(st.booleans()),
                      map_at_1000=draw(st.booleans()), nmi=False, f1=False)
    backend = draw(st.sampled_from([b for b in BACKENDS if b != "faiss-gpu"]))
    chunk = draw(st.sampled_from([None, 2, 3, 7]))
    return (np.concatenate(embs), np.concatenate(labels), np.concatenate(names), isq, isg,
            spec, backend, chunk)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_every_metric_matches_brute_force(problem):
    emb, labels, datasets, isq, isg, spec, backend, chunk = problem
    used = isq | isg
    if any((datasets[used] == d).sum() < 2 for d in np.unique(datasets[used])):
        return  # the engine rejects a dataset with fewer than two samples (tested elsewhere)
    res = evaluate(emb, labels, datasets, isq, isg, metrics=spec, backend=backend,
                   chunk_size=chunk)
    _assert_matches_reference(res, problem, emb, unit=True)


def _assert_matches_reference(res, problem, emb, unit):
    """Every scope's every retrieval metric equals the brute-force reference's."""
    _, labels, datasets, isq, isg, spec, backend, _ = problem
    ks = spec.recall_ks or (1,)
    for scope in [None, *np.unique(datasets)]:
        ref, excluded = brute_force(emb, labels, datasets, isq, isg, ks=ks, scope=scope,
                                    unit=unit)
        got = res.universal if scope is None else res.per_dataset[scope]
        assert got["num_excluded_queries"] == excluded
        for key in spec.retrieval_names:
            if np.isnan(ref[key]):
                assert np.isnan(got[key]), (scope, key)
            else:
                assert got[key] == pytest.approx(ref[key], abs=1e-12), (scope, key, backend)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.floats(min_value=-30, max_value=30))
def test_raw_dot_product_scoring_matches_brute_force(problem, log_scale):
    """``normalize=False`` (official scoring of un-normalised ensembles) ranks by the raw dot
    product at any magnitude: rows of lengths differing up to 100x, scaled by up to 1e+-30."""
    emb, labels, datasets, isq, isg, spec, backend, chunk = problem
    used = isq | isg
    if any((datasets[used] == d).sum() < 2 for d in np.unique(datasets[used])):
        return
    lengths = np.random.default_rng(len(emb)).uniform(0.1, 10.0, (len(emb), 1))
    emb = np.asarray(emb, np.float64) * lengths * 10.0**log_scale
    res = evaluate(emb, labels, datasets, isq, isg, metrics=spec, backend=backend,
                   chunk_size=chunk, normalize=False)
    _assert_matches_reference(res, problem, emb, unit=False)
