"""Issue 13, item 10: each dataset's literature Recall@K list, computed and recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.metrics.reference import brute_force, clustered_embeddings
from umlbench.data.registry import DATASETS, dataset_recall_ks, suite_datasets
from umlbench.metrics import MetricSpec, evaluate

LITERATURE = {"sop": (1, 10, 100, 1000), "inshop": (1, 10, 20, 30)}


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_its_literature_k_list(name):
    ks = DATASETS.get(name).recall_ks
    assert ks == tuple(sorted(set(ks))) and ks[0] == 1
    base = name.removeprefix("mini-")  # mini-sop and mini-inshop mirror SOP and In-shop
    assert ks == LITERATURE.get(base, (1, 2, 4, 8))


def test_each_scope_scores_its_own_list_exactly():
    rng = np.random.default_rng(0)
    emb, labels, datasets = clustered_embeddings(rng, 6, (2, 9), 6, spread=1.5, n_datasets=2)
    lists = {"ds0": (1, 10, 100, 1000), "ds1": (1, 10, 20, 30)}
    spec = MetricSpec(recall_ks=(1, 2), nmi=False, f1=False).with_dataset_recall_ks(lists)
    res = evaluate(emb, labels, datasets, metrics=spec, chunk_size=5)
    n = len(emb)
    assert {k for k in res.universal if k.startswith("recall@")} == {"recall@1", "recall@2"}
    assert set(res.summary["harmonic_mean"]) == set(MetricSpec(recall_ks=(1, 2)).names()) - {
        "nmi", "f1"}
    for ds, ks in lists.items():
        got = res.per_dataset[ds]
        assert {k for k in got if k.startswith("recall@")} == {f"recall@{k}" for k in {1, 2, *ks}}
        ref, _ = brute_force(emb, labels, datasets, np.ones(n, bool), np.ones(n, bool),
                             ks=tuple(sorted({1, 2, *ks})), scope=ds)
        for key in got:
            if not key.startswith("num_"):
                assert got[key] == pytest.approx(ref[key], abs=1e-12), (ds, key)


def test_the_registry_gives_the_mini_suite_its_lists():
    lists = dataset_recall_ks(suite_datasets("mini"))
    assert lists["mini-sop"] == (1, 10, 100, 1000) and lists["mini-inshop"] == (1, 10, 20, 30)
    assert lists["mini-cub"] == (1, 2, 4, 8)
    assert dataset_recall_ks(["not-a-dataset"]) == {}


def test_run_records_hold_each_datasets_list(env_root):
    from click.testing import CliRunner

    from umlbench.cli import cli

    sets = ["data.datasets=[mini-sop,mini-inshop,mini-flowers]", "eval.metrics=[recall@1,map@r]"]
    res = CliRunner().invoke(cli, ["run", "--method", "off-the-shelf",
                                   *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    rec = json.loads(next((env_root / "results" / "mini").glob("*.json")).read_text())
    per = rec["metrics"]["per_dataset"]
    for ds, ks in (("mini-sop", (1, 10, 100, 1000)), ("mini-inshop", (1, 10, 20, 30)),
                   ("mini-flowers", (1, 2, 4, 8))):
        assert {k for k in per[ds] if k.startswith("recall@")} == {f"recall@{k}" for k in ks}
        assert "map@r" in per[ds]
    assert {k for k in rec["metrics"]["universal"] if k.startswith("recall@")} == {"recall@1"}
    assert set(rec["metrics"]["summary"]["harmonic_mean"]) == {"recall@1", "map@r"}
    assert rec["harmonic_mean"] == rec["metrics"]["summary"]["harmonic_mean"]["recall@1"]


@pytest.mark.parametrize("name", DATASETS.names())
def test_the_leaderboards_paper_view_reads_the_same_lists(name):
    # The leaderboard lays out records only; its copy of the lists must not drift from the
    # dataset specs that decide what every run computes.
    from umlbench.results.leaderboard import paper_recall_ks

    assert paper_recall_ks(name) == DATASETS.get(name).recall_ks
