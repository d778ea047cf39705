"""`umlbench reproduce`: a rerun of a record gives exactly its metrics; other data, an old
record or a failed run is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import FAST
from umlbench.cli import cli
from umlbench.data.prepare import prepare
from umlbench.runner import build_config, run

COMMITTED = Path(__file__).parents[1] / "results" / "mini"


def _sets(items):
    return [a for s in items for a in ("--set", s)]


@pytest.fixture()
def fresh_record(env_root) -> Path:
    """A short PUMA run (training included) recorded by a separate process."""
    args = [sys.executable, "-m", "umlbench", "run", "--method", "puma", "--seed", "1",
            *_sets(FAST + ["train.max_steps_per_epoch=4"]), "--results-dir",
            str(env_root / "original")]
    subprocess.run(args, check=True, capture_output=True, env=dict(os.environ))
    [path] = (env_root / "original" / "mini").glob("*.json")
    return path


@pytest.mark.slow
def test_reproduced_record_equals_the_original_exactly(env_root, fresh_record):
    res = CliRunner().invoke(cli, ["reproduce", str(fresh_record)])
    assert res.exit_code == 0, res.output
    assert "identical: all" in res.stdout
    original = json.loads(fresh_record.read_text())
    [again] = (env_root / "results" / "mini").glob("*.json")  # default results dir
    again = json.loads(again.read_text())
    assert again["metrics"] == original["metrics"]
    assert again["harmonic_mean"] == original["harmonic_mean"]
    assert again["identity"]["config"] == original["identity"]["config"]
    assert again["identity"]["data"] == original["identity"]["data"]
    assert again["seed"] == original["seed"] == 1
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in original["history"]]


def _one_error(res, *parts):
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for p in parts:
        assert p in lines[0]
    return lines[0]


def test_other_prepared_data_is_refused_naming_dataset_and_hashes(env_root, tmp_path):
    cfg = build_config("off-the-shelf", "mini", overrides=FAST)
    [(_, record)] = run(cfg, results_dir=tmp_path / "original", work_dir=tmp_path / "w")
    other = tmp_path / "other-data"
    prepare(["mini-cub", "mini-flowers", "mini-aircraft"], other, seed=1)
    res = CliRunner().invoke(cli, ["reproduce", str(record), "--data-root", str(other)])
    recorded = json.loads(record.read_text())["identity"]["data"]["mini-aircraft"]
    # mini-aircraft's manifest does not depend on the generator seed (100 images per class),
    # its pixels do: the line names the cache file and both of its hashes.
    line = _one_error(res, "mini-aircraft", "images.sha256.images.u8",
                      recorded["images"]["sha256"]["images.u8"])
    assert line.count("(record)") == 1 and line.count("(prepared)") == 1
    assert not (env_root / "results").exists()  # nothing ran


def test_records_without_identity_or_metrics_are_refused(env_root, tmp_path):
    from tests.results.test_record import _schema_1

    old = tmp_path / "old.json"  # as umlbench wrote records before identity existed
    old.write_text(json.dumps(_schema_1()))
    _one_error(CliRunner().invoke(cli, ["reproduce", str(old)]),
               str(old), "written before records had a data identity (schema 1)")
    from tests.results.test_record import make_record
    from umlbench.results.record import write_record

    rec = make_record(run_id="crashed")
    rec.status, rec.metrics = "failed", {}
    path = write_record(rec, tmp_path)
    _one_error(CliRunner().invoke(cli, ["reproduce", str(path)]), "a failed run has no metrics")
    _one_error(CliRunner().invoke(cli, ["reproduce", str(tmp_path / "nope.json")]))


@pytest.mark.slow
def test_committed_off_the_shelf_record_reproduces_exactly(env_root):
    """After the committed records are regenerated with identity (schema 2): the frozen
    backbone's record reproduces bit for bit on a freshly prepared mini suite."""
    for path in sorted(COMMITTED.glob("off-the-shelf-mini-uml-s0-*.json")):
        if json.loads(path.read_text())["schema_version"] >= 2:
            break
    else:
        pytest.skip("the committed mini records predate identity (schema 1); regenerate them")
    res = CliRunner().invoke(cli, ["reproduce", str(path)])
    assert res.exit_code == 0, res.output
    assert "identical: all" in res.stdout


def test_cpu_rerun_uses_the_records_thread_count():
    """Float sums depend on how many threads split them: the rerun takes the record's count."""
    from types import SimpleNamespace

    from umlbench.reproduce import record_threads

    rec = SimpleNamespace(hardware={"torch_threads": 1, "device": "cpu"})
    assert record_threads(rec, None) == 1
    assert record_threads(rec, "cuda") is None
    assert record_threads(SimpleNamespace(hardware={"device": "cpu"}), None) is None


def test_per_query_outcomes_are_compared_query_by_query(tmp_path):
    """reproduce's per-query comparison: equal sidecars are identical (by SHA-256), a changed
    query is named by scope and metric with its count, a schema-2 original has none."""
    from tests.results.test_perquery import outcomes_for
    from tests.results.test_record import make_record
    from umlbench.reproduce import per_query_differences
    from umlbench.results.perquery import PerQuery
    from umlbench.results.record import write_record

    def written(run_id, outcomes):
        rec = make_record(run_id=run_id)
        return rec, write_record(rec, tmp_path, per_query=outcomes)

    base = outcomes_for(make_record())
    a, pa = written("a", base)
    b, pb = written("b", base)
    assert per_query_differences(pa, a, pb, b) == []
    flipped = {s: o for s, o in base.scopes.items()}
    hits = flipped["mini-cub"].values["recall@1"].copy()
    hits[[0, -1]] = 1 - hits[[0, -1]]  # two queries change places: the mean is the same
    flipped["mini-cub"] = type(base.scopes["mini-cub"])(
        flipped["mini-cub"].ids, {**flipped["mini-cub"].values, "recall@1": hits},
        flipped["mini-cub"].sources)
    c, pc = written("c", PerQuery(flipped, base.datasets))
    assert per_query_differences(pa, a, pc, c) == [("per_query.mini-cub.recall@1", 2, 10)]
    old = make_record(run_id="old")
    assert per_query_differences(write_record(old, tmp_path), old, pa, a) is None
