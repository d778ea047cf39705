"""The real-suite path end to end, on CPU: the eight datasets in their official layouts ->
``umlbench run --method puma --suite uml`` with the real ViT-S/16 -> record -> leaderboard.

The datasets are the tiny official-format fixtures of ``tests/data/fixtures.py`` (a few images
each), prepared through the real code path into the default image store (the packed original
files). Only what a CPU cannot afford differs from ``--suite uml``'s defaults: random weights
(``backbone.pretrained=false``, no download), two steps of a batch of 4, no DataLoader workers.
The input is 224 px, as on the real suite.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from click.testing import CliRunner

from tests.data.fixtures import FIXTURES
from umlbench import const as C
from umlbench.cli import cli
from umlbench.data.prepare import load_prepared, prepare_one
from umlbench.data.registry import DATASETS, SUITES

pytestmark = pytest.mark.slow

NAMES = SUITES["uml"]
# The literature's Recall@K per dataset (the official helpers.py lists; issue 13 item 10).
K_LISTS = {"sop": (1, 10, 100, 1000), "inshop": (1, 10, 20, 30)}
SETTINGS = [
    "backbone.pretrained=false",  # the real architecture, random weights (no download)
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_size=4",
    "data.num_workers=0",
    "data.pin_memory=false",
    "eval.batch_size=32",
]


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("uml-e2e")
    root, results = d / "data", d / "results"
    t0 = time.perf_counter()
    for name in NAMES:
        fx = FIXTURES[name](d / "fixtures" / name)
        # The fixtures are not the full datasets: check their own split counts instead.
        spec = dataclasses.replace(DATASETS.get(name), expected=fx.expected)
        prepare_one(spec, root, source=str(fx.source), workers=1, progress=lambda *a: None)
    prepared_s = time.perf_counter() - t0
    args = ["run", "--method", "puma", "--suite", "uml", "--device", "cpu", "--data-root",
            str(root), "--results-dir", str(results), "--work-dir", str(d / "work")]
    for s in SETTINGS:
        args += ["--set", s]
    t1 = time.perf_counter()
    res = CliRunner().invoke(cli, args)
    run_s = time.perf_counter() - t1
    assert res.exit_code == 0, res.output
    records = sorted(results.rglob("*.json"))
    assert len(records) == 1, records
    print(f"\numl e2e: prepare {prepared_s:.1f}s, run {run_s:.1f}s")
    return root, results, json.loads(records[0].read_text())


def test_eight_official_layouts_prepare_into_full_resolution_packs(suite_run):
    root, _, _ = suite_run
    for name in NAMES:
        p = load_prepared(root, name)
        assert p.image_source == C.PACKED and p.image_size is None, name


def test_puma_runs_on_the_real_architecture_and_scores_every_test_set(suite_run):
    _, _, rec = suite_run
    assert rec["status"] == "completed" and rec["suite"] == "uml"
    assert rec["config"]["backbone"]["name"].startswith("vit_small_patch16_224")
    assert rec["config"]["data"]["input_size"] == 224
    # ViT-S/16 + PUMA: 2,359,296 adapter + 76,800 prompt + 49,280 head parameters trained.
    assert rec["params"]["trainable"] == 2_485_376
    m = rec["metrics"]
    assert set(m["per_dataset"]) == set(NAMES)
    for name in NAMES:
        assert 0 <= m["per_dataset"][name]["recall@1"] <= 1, name
    assert 0 <= m["universal"]["recall@1"] <= 1
    assert rec["harmonic_mean"] == m["summary"][C.HARMONIC_MEAN]["recall@1"]


# Issue 13 item 10: the literature's Recall@K list of every dataset is in the record.
def test_record_holds_every_datasets_recall_at_k_list(suite_run):
    _, _, rec = suite_run
    for name in NAMES:
        ks = K_LISTS.get(name, (1, 2, 4, 8))
        got = rec["metrics"]["per_dataset"][name]
        assert {f"recall@{k}" for k in ks} <= set(got), (name, sorted(got))


def test_leaderboard_renders_the_uml_run(suite_run):
    _, results, rec = suite_run
    res = CliRunner().invoke(cli, ["leaderboard", "--suite", "uml", "--format", "markdown",
                                   "--results-dir", str(results)])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("| PUMA")]
    assert rows, res.output
    hm = rec["harmonic_mean"] * 100
    assert f"{hm:.2f}" in rows[0]
