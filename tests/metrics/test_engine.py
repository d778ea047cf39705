"""The engine against a brute-force NumPy reference and pytorch-metric-learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.metrics.reference import brute_force, clustered_embeddings
from umlbench.errors import UserError
from umlbench.metrics import MetricSpec, evaluate

RETRIEVAL = MetricSpec(nmi=False, f1=False)
KEYS = ["recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r",
        "map@1000"]


def _check(res_scope, ref, excluded, keys=KEYS):
    for key in keys:
        assert res_scope[key] == pytest.approx(ref[key], abs=1e-6), key
    assert res_scope["num_excluded_queries"] == excluded


def _check_every_scope(res, emb, labels, datasets, keys=KEYS):
    """Leave-one-out results against brute force, universal and for every dataset."""
    all_rows = np.ones(len(emb), bool)
    for scope in [None, *np.unique(datasets)]:
        got = res.universal if scope is None else res.per_dataset[scope]
        _check(got, *brute_force(emb, labels, datasets, all_rows, all_rows, scope=scope), keys)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_matches_brute_force_per_dataset_and_universal(chunk_size):
    rng = np.random.default_rng(0)
    emb, labels, datasets = clustered_embeddings(rng, 6, (1, 9), 8, spread=1.0, n_datasets=3)
    res = evaluate(emb, labels, datasets, metrics=RETRIEVAL, chunk_size=chunk_size)
    _check_every_scope(res, emb, labels, datasets)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_queries_grouped_by_needed_neighbours_match_brute_force(chunk_size):
    # Without MAP@1000 each query needs max(8, R) neighbours: class sizes 1..40 spread the
    # queries over several k groups (8, 16, 32, 64), each searched with its own k.
    rng = np.random.default_rng(3)
    emb, labels, datasets = clustered_embeddings(rng, 5, (1, 40), 8, spread=1.3, n_datasets=3)
    spec = MetricSpec(map_at_1000=False, nmi=False, f1=False)
    res = evaluate(emb, labels, datasets, metrics=spec, chunk_size=chunk_size)
    _check_every_scope(res, emb, labels, datasets, keys=KEYS[:-1])


def test_inshop_style_query_gallery_and_mixed_datasets():
    rng = np.random.default_rng(1)
    emb, labels, datasets = clustered_embeddings(rng, 8, (2, 7), 6, spread=1.2, n_datasets=2)
    n = len(emb)
    is_q, is_g = np.ones(n, bool), np.ones(n, bool)
    shop = datasets == "ds1"
    flip = rng.random(n) < 0.5
    is_q[shop] = flip[shop]  # ds1 rows are either query or gallery, never both
    is_g[shop] = ~flip[shop]
    res = evaluate(emb, labels, datasets, is_q, is_g, metrics=RETRIEVAL, chunk_size=5)
    ref, exc = brute_force(emb, labels, datasets, is_q, is_g)
    _check(res.universal, ref, exc)
    for ds in ("ds0", "ds1"):
        ref, exc = brute_force(emb, labels, datasets, is_q, is_g, scope=ds)
        _check(res.per_dataset[ds], ref, exc)
    assert res.per_dataset["ds1"]["num_queries"] == int((shop & is_q).sum())


def test_labels_of_different_datasets_never_match():
    # Label 0 exists in datasets "a" and "b". Each query's nearest neighbour is the other
    # dataset's label-0 image; with classes as (dataset, label) that is a miss (the official
    # PUMA code's label collision would count it as a hit).
    emb = np.array([[1, 0], [0, 1], [1, 0.01], [0.01, 1]], np.float32)
    labels = np.array([0, 0, 0, 0])
    datasets = np.array(["a", "a", "b", "b"])
    res = evaluate(emb, labels, datasets, metrics=RETRIEVAL)
    assert res.universal["recall@1"] == 0.0
    assert res.universal["num_excluded_queries"] == 0
    # Inside one dataset the only neighbour is the same-class image: a hit.
    assert res.per_dataset["a"]["recall@1"] == 1.0
    assert res.per_dataset["b"]["recall@1"] == 1.0


def test_duplicates_count_as_neighbours_and_self_is_removed_by_index():
    # Rows 0 and 1 are the same image (identical embeddings), same class; row 2 another class
    # at the same point. Self-exclusion must remove row i itself, not "the first exact match".
    emb = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    labels = np.array([0, 0, 1, 2, 2])
    datasets = np.array(["a"] * 5)
    res = evaluate(emb, labels, datasets, metrics=MetricSpec(recall_ks=(1,), nmi=False, f1=False))
    # Query 1: neighbours (ties at sim 1) ordered by index: 0 (same class) -> hit.
    # Query 0: neighbours 1 (hit). Query 2 is a singleton class -> excluded. Rows 3, 4 hit.
    assert res.universal["recall@1"] == 1.0
    assert res.universal["num_excluded_queries"] == 1


def test_tie_rule_smaller_gallery_index_first():
    # Query 0's neighbours 1 (other class) and 2 (same class) tie exactly; index 1 wins.
    emb = np.array([[1, 0], [0, 1], [0, 1], [1, 0.0001]], np.float32)
    labels = np.array([0, 1, 0, 0])
    datasets = np.array(["a"] * 4)
    spec = MetricSpec(recall_ks=(1, 2), nmi=False, f1=False)
    res = evaluate(emb[[0, 1, 2]], labels[[0, 1, 2]], datasets[:3], metrics=spec)
    ref, _ = brute_force(emb[[0, 1, 2]], labels[[0, 1, 2]], datasets[:3], np.ones(3, bool),
                         np.ones(3, bool), ks=(1, 2))
    assert res.universal["recall@1"] == pytest.approx(ref["recall@1"])
    assert res.universal["recall@2"] == pytest.approx(ref["recall@2"])


def test_hand_computed_map_values():
    # One query (row 0) of class 0 with two relevant gallery items at ranks 1 and 3.
    emb = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [-1, 0]], np.float32)
    labels = np.array([0, 0, 1, 0, 2])
    datasets = np.array(["a"] * 5)
    is_q = np.array([True, False, False, False, False])
    res = evaluate(emb, labels, datasets, is_q, np.ones(5, bool), metrics=RETRIEVAL)
    u = res.universal
    assert u["recall@1"] == 1.0
    assert u["r_precision"] == pytest.approx(0.5)  # R = 2, top-2 holds one hit
    assert u["map@r"] == pytest.approx((1 / 1) / 2)  # only rank 1 is within R
    assert u["map@1000"] == pytest.approx((1 / 1 + 2 / 3) / 3)  # divided by freq = R + 1


def test_pytorch_metric_learning_agrees():
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    rng = np.random.default_rng(3)
    emb, labels, datasets = clustered_embeddings(rng, 40, (1, 12), 16, spread=1.5)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    calc = pml.AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count", device=torch.device("cpu"),
    )
    t = torch.from_numpy(x)
    y = torch.from_numpy(labels)
    ref = calc.get_accuracy(t, y, t, y, ref_includes_query=True)
    res = evaluate(emb, labels, datasets, metrics=RETRIEVAL)
    assert res.universal["precision@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert res.universal["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert res.universal["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    assert res.universal["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)


def test_pml_agrees_per_dataset_with_colliding_labels():
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    rng = np.random.default_rng(4)
    emb, labels, datasets = clustered_embeddings(rng, 15, (2, 10), 12, spread=1.3, n_datasets=3)
    res = evaluate(emb, labels, datasets, metrics=RETRIEVAL)
    calc = pml.AccuracyCalculator(include=("precision_at_1", "r_precision",
                                           "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
    for ds in np.unique(datasets):
        rows = datasets == ds
        t = torch.from_numpy(emb[rows] / np.linalg.norm(emb[rows], axis=1, keepdims=True))
        y = torch.from_numpy(labels[rows])
        ref = calc.get_accuracy(t, y, t, y, ref_includes_query=True)
        assert res.per_dataset[ds]["precision@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
        assert res.per_dataset[ds]["map@r"] == pytest.approx(
            ref["mean_average_precision_at_r"], abs=1e-6)


def test_harmonic_and_arithmetic_mean_of_recall_at_1():
    rng = np.random.default_rng(5)
    emb, labels, datasets = clustered_embeddings(rng, 5, (3, 6), 4, spread=1.5, n_datasets=3)
    res = evaluate(emb, labels, datasets, metrics=RETRIEVAL)
    r1 = [res.per_dataset[d]["recall@1"] for d in res.per_dataset]
    assert res.harmonic_mean == pytest.approx(len(r1) / sum(1 / v for v in r1))
    assert res.arithmetic_mean == pytest.approx(np.mean(r1))
    assert res.summary["harmonic_mean"]["map@r"] > 0


def test_torch_backend_equals_faiss():
    rng = np.random.default_rng(6)
    emb, labels, datasets = clustered_embeddings(rng, 10, (2, 8), 8, n_datasets=2)
    a = evaluate(emb, labels, datasets, metrics=RETRIEVAL, backend="faiss-cpu")
    b = evaluate(emb, labels, datasets, metrics=RETRIEVAL, backend="torch")
    for key in KEYS:
        assert a.universal[key] == pytest.approx(b.universal[key], abs=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_gpu_agree():
    """Exact scores: CPU and GPU give the same numbers, not merely close ones, also where
    every similarity ties (all rows identical: the gallery index decides)."""
    rng = np.random.default_rng(7)
    emb, labels, datasets = clustered_embeddings(rng, 50, (2, 10), 32, n_datasets=3)
    a = evaluate(emb, labels, datasets, device="cpu")
    b = evaluate(emb, labels, datasets, device="cuda")
    for key in KEYS:
        assert a.universal[key] == b.universal[key], key
        for ds in a.per_dataset:
            assert a.per_dataset[ds][key] == b.per_dataset[ds][key], (ds, key)
    ties = np.array([1, 0, 0, 1, 0, 1, 0, 1, 0, 1])
    same = np.ones((len(ties), 8))
    names = np.array(["a"] * len(ties))
    a = evaluate(same, ties, names, device="cpu").universal
    b = evaluate(same, ties, names, device="cuda").universal
    assert a == b
    assert a["recall@1"] == 0.4  # the example: faiss-cpu's value, the documented rule


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e, l, d: (np.where(np.arange(e.size).reshape(e.shape) == 3, np.nan, e), l, d),
         "NaN"),
        (lambda e, l, d: (e, l[:-1], d), "labels has shape"),
        (lambda e, l, d: (e, l, np.where(np.arange(len(d)) == 0, "lonely", d)), "fewer than two"),
    ],
)
def test_bad_input_is_a_user_error(mutate, message):
    rng = np.random.default_rng(8)
    emb, labels, datasets = clustered_embeddings(rng, 3, (3, 3), 4)
    e, l, d = mutate(emb, labels, datasets)
    with pytest.raises(UserError, match=message):
        evaluate(e, l, d)


def test_default_pass_precision_is_the_probed_faster_one(monkeypatch):
    """The default torch pass takes bf16x3 only where the device has bf16 units and the probe
    finds its matmul at least PROBE_RATIO times faster than float32; values never depend on it."""
    from umlbench.metrics import blockpass
    from umlbench.metrics.knn import Searcher

    x = np.eye(4, 8, dtype=np.float32)
    monkeypatch.setattr(blockpass, "_PROBED", {})
    monkeypatch.setattr(blockpass, "cpu_has_bf16", lambda: False)
    assert Searcher(x).mode == "fp32"  # no bf16 units: no probe at all
    assert blockpass._PROBED == {}
    monkeypatch.setattr(blockpass, "cpu_has_bf16", lambda: True)
    for fp32, bf16x3, expected in [(3.0, 1.0, "bf16x3"), (1.5, 1.0, "bf16x3"),
                                   (1.4, 1.0, "fp32"), (1.0, 3.0, "fp32")]:
        monkeypatch.setattr(blockpass, "_PROBED", {})
        monkeypatch.setattr(blockpass, "_probe", lambda device, dim, a=fp32, b=bf16x3: (
            "bf16x3" if b * blockpass.PROBE_RATIO <= a else "fp32", {"fp32": a, "bf16x3": b}))
        searcher = Searcher(x)
        assert searcher.mode == expected and searcher.backend == f"torch-{expected}"
    # The real probe: times both modes and applies the same rule to them.
    mode, seconds = blockpass._probe(torch.device("cpu"), 16)
    assert set(seconds) == {"fp32", "bf16x3"} and all(v > 0 for v in seconds.values())
    assert mode == ("bf16x3" if seconds["bf16x3"] * blockpass.PROBE_RATIO <= seconds["fp32"]
                    else "fp32")
