"""Small definitions that must not be silent (issue 22, section 2): which rows NMI/F1 cluster
when query and gallery rows differ, labels of mixed types, K that is not an integer, and
1-dimensional embeddings under L2 normalisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from umlbench.errors import UserError
from umlbench.metrics import MetricSpec, evaluate
from umlbench.metrics import engine as engine_module
from umlbench.metrics.clustering import pairwise_f1


def _inshop_like():
    """Query and gallery rows at two well-separated points (one-hot in 8-d, noise 0.01): the
    clustering is the partition by point for any k-means start (k = 2), so NMI/F1 follow from
    the labels alone. Queries: class 0 x6 at A, class 1 x3 at A and x5 at B; gallery: class 0
    x6 at B, class 1 x2 at B. Returns (embeddings, labels, point, is_query)."""
    rng = np.random.default_rng(0)
    spots = np.eye(8)[:2]
    rows = [(0, 0, 6, True), (1, 0, 3, True), (1, 1, 5, True), (0, 1, 6, False),
            (1, 1, 2, False)]
    x = np.concatenate([spots[p] + 0.01 * rng.normal(size=(n, 8)) for _, p, n, _ in rows])
    labels = np.concatenate([[c] * n for c, _, n, _ in rows])
    point = np.concatenate([[p] * n for _, p, n, _ in rows])
    is_query = np.concatenate([[q] * n for _, _, n, q in rows])
    return x.astype(np.float32), labels, point, is_query


def _scores(cluster_rows, seed=1234):
    x, y, _, q = _inshop_like()
    spec = MetricSpec(recall_ks=(1,), cluster_rows=cluster_rows)
    return evaluate(x, y, ["inshop"] * len(y), q, ~q, metrics=spec, seed=seed)


def test_default_clusters_query_and_gallery_rows_together():
    _, y, point, _ = _inshop_like()
    for seed in (0, 1, 1234):
        res = _scores("all", seed)
        for scope in (res.universal, res.per_dataset["inshop"]):
            assert scope["nmi"] == pytest.approx(normalized_mutual_info_score(y, point), abs=1e-12)
            assert scope["f1"] == pytest.approx(pairwise_f1(y, point), abs=1e-12)


def test_queries_option_clusters_the_query_rows_only_as_pml():
    """PML's AccuracyCalculator clusters the queries (k = their classes): same NMI."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, y, point, q = _inshop_like()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pml = AccuracyCalculator(include=("NMI",)).get_accuracy(
        torch.tensor(xn[q]), torch.tensor(y[q]), torch.tensor(xn[~q]), torch.tensor(y[~q]),
        ref_includes_query=False)["NMI"]
    brute = normalized_mutual_info_score(y[q], point[q])
    assert pml == pytest.approx(brute, abs=1e-12)
    for seed in (0, 1, 1234):
        res = _scores("queries", seed)
        assert res.universal["nmi"] == pytest.approx(pml, abs=1e-12)
        assert res.universal["f1"] == pytest.approx(pairwise_f1(y[q], point[q]), abs=1e-12)
    # The two readings differ on this input (0.03 vs 0.41): the option is not a no-op.
    assert abs(_scores("all").universal["nmi"] - _scores("queries").universal["nmi"]) > 0.3


def test_leave_one_out_rows_give_the_same_clustering_either_way():
    x, y, _, _ = _inshop_like()
    a = evaluate(x, y, ["d"] * len(y), metrics=MetricSpec(recall_ks=(1,), cluster_rows="all"))
    b = evaluate(x, y, ["d"] * len(y), metrics=MetricSpec(recall_ks=(1,),
                                                        cluster_rows="queries"))
    assert a.universal == b.universal


def test_cluster_rows_is_a_config_key_and_a_checked_choice():
    from umlbench.runner import build_config

    assert build_config("puma", "mini").eval.cluster_rows == "all"
    assert build_config("puma", "mini", overrides=["eval.cluster_rows=queries"]
                        ).eval.cluster_rows == "queries"
    with pytest.raises(UserError, match="eval.cluster_rows must be one of all, queries"):
        build_config("puma", "mini", overrides=["eval.cluster_rows=gallery"])
    with pytest.raises(UserError, match="cluster_rows must be one of all, queries"):
        MetricSpec(cluster_rows="gallery")
    assert MetricSpec.from_names(["nmi"], "queries").cluster_rows == "queries"


@pytest.mark.parametrize("labels", [[1, "1", 2, 2], np.array([1, "1", 2, 2], dtype=object),
                                    [1.0, "a", 2, "b"]])
def test_labels_mixing_numbers_and_strings_are_an_error_naming_the_types(labels):
    x = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(UserError, match=r"labels mix numbers \((float, )?int\) and strings "
                                        r"\(str\), e\.g\. row 1"):
        evaluate(x, labels, ["d"] * 4)


def test_labels_of_one_type_still_work():
    x = np.random.default_rng(0).normal(size=(4, 3))
    for labels in ([1, 1, 2, 2], ["1", "1", "2", "2"], np.array([1, 1, 2, 2], dtype=object),
                   [1, 1.0, 2, 2]):
        assert evaluate(x, labels, ["d"] * 4).universal["num_queries"] == 4


@pytest.mark.parametrize("k, kind", [(1.5, "float"), ("max", "str"), (True, "bool"),
                                     (2.0, "float")])
def test_recall_k_must_be_an_integer(k, kind):
    with pytest.raises(UserError, match=rf"K must be an integer between 1 and \d+, "
                                        rf"got {k!r} \({kind}\)"):
        MetricSpec(recall_ks=(k,))
    with pytest.raises(UserError, match="K must be an integer"):
        MetricSpec(dataset_recall_ks=(("d", (k,)),))
    assert MetricSpec(recall_ks=(np.int64(3),)).recall_ks == (3,)


def test_one_dimensional_embeddings_warn_once_with_the_reason(monkeypatch):
    monkeypatch.setattr(engine_module, "_WARNED_1D", False)
    x = np.array([[0.5], [2.0], [-1.0], [3.0]])
    with pytest.warns(UserWarning, match=r"1-dimensional embeddings: L2 normalisation .* \+1 "
                                         r"or -1"):
        evaluate(x, [0, 0, 1, 1], ["d"] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second evaluation stays quiet
        evaluate(x, [0, 0, 1, 1], ["d"] * 4)
        evaluate(x, [0, 0, 1, 1], ["d"] * 4, normalize=False)  # raw values: nothing collapses
        evaluate(np.hstack([x, x]), [0, 0, 1, 1], ["d"] * 4)


def test_evaluate_cli_takes_the_cluster_rows_option(tmp_path):
    import json

    from click.testing import CliRunner

    from umlbench.cli import cli

    x, y, point, q = _inshop_like()
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=x, labels=y, datasets=np.array(["inshop"] * len(y)),
             is_query=q, is_gallery=~q)
    got = {}
    for rows in ("all", "queries"):
        res = CliRunner().invoke(cli, ["evaluate", str(path), "--json", "--metrics", "nmi",
                                       "--cluster-rows", rows])
        assert res.exit_code == 0, res.output
        got[rows] = json.loads(res.stdout)["universal"]["nmi"]
    assert got["all"] == pytest.approx(normalized_mutual_info_score(y, point), abs=1e-12)
    assert got["queries"] == pytest.approx(normalized_mutual_info_score(y[q], point[q]),
                                           abs=1e-12)
