"""Run records: schema round trip, atomic concurrent writes, corrupt files skipped."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from umlbench.results.record import (SCHEMA_VERSION, RecordError, RunRecord, new_run_id,
                                     read_record, validate, write_record)
from umlbench.results.store import load_records


def make_record(method="puma", seed=0, r1=(0.5, 0.6), universal=0.55, run_id=None,
                display=None, suite="mini", protocol=None, trainable=1000) -> RunRecord:
    per = {f"mini-{d}": {"recall@1": v, "map@r": v / 2, "num_queries": 10,
                         "num_excluded_queries": 0} for d, v in zip(("cub", "cars"), r1)}
    hm = len(r1) / sum(1 / v for v in r1)
    return RunRecord(
        run_id=run_id or new_run_id(f"{method}-s{seed}"), method=method,
        display_name=display or method, suite=suite, seed=seed, status="completed",
        protocol=protocol or {"name": "uml"}, config={"seed": seed}, backbone="vit",
        params={"trainable": trainable, "total": 5000, "proxies": 0},
        metrics={"per_dataset": per, "universal": {"recall@1": universal, "map@r": 0.2},
                 "summary": {"harmonic_mean": {"recall@1": hm, "map@r": hm / 2},
                             "arithmetic_mean": {"recall@1": sum(r1) / len(r1)}}},
        harmonic_mean=hm, timings={"total_s": 1.0}, hardware={}, packages={},
        git_commit=None, created="2026-01-01T00:00:00",
    )


def test_round_trip(tmp_path):
    rec = make_record()
    path = write_record(rec, tmp_path)
    back = read_record(path)
    assert back == rec
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_never_overwrites(tmp_path):
    rec = make_record(run_id="fixed")
    write_record(rec, tmp_path)
    with pytest.raises(RecordError, match="not overwriting"):
        write_record(rec, tmp_path)


def test_invalid_records_are_rejected_on_write(tmp_path):
    rec = make_record()
    rec.status = "weird"
    with pytest.raises(RecordError, match="status"):
        write_record(rec, tmp_path)
    rec = make_record()
    rec.metrics["universal"]["recall@1"] = "high"
    with pytest.raises(RecordError, match="not a number"):
        write_record(rec, tmp_path)


def test_nan_is_written_as_null(tmp_path):
    rec = make_record()
    rec.metrics["universal"]["recall@1"] = float("nan")
    path = write_record(rec, tmp_path)
    assert json.loads(path.read_text())["metrics"]["universal"]["recall@1"] is None


def _writer(args):
    directory, i = args
    write_record(make_record(seed=i), Path(directory))
    return i


def test_concurrent_writers_all_succeed(tmp_path):
    with mp.get_context("spawn").Pool(8) as pool:
        done = pool.map(_writer, [(str(tmp_path), i) for i in range(16)])
    assert sorted(done) == list(range(16))
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 16
    assert sorted(read_record(f).seed for f in files) == list(range(16))
    assert not list(tmp_path.glob(".*.part"))


def test_bad_files_are_skipped_with_a_warning(tmp_path):
    write_record(make_record(), tmp_path)
    (tmp_path / "truncated.json").write_text('{"schema_version": 1, "run_id": ')
    (tmp_path / "future.json").write_text(json.dumps({"schema_version": 99}))
    (tmp_path / "other.json").write_text(json.dumps({"schema_version": 1, "x": 1}))
    warnings = []
    recs = load_records([tmp_path], warnings.append)
    assert len(recs) == 1
    assert len(warnings) == 3
    assert any("truncated.json" in w and "not valid JSON" in w for w in warnings)
    assert any("future.json" in w and "newer" in w for w in warnings)
    assert all("\n" not in w for w in warnings)


def test_validate_requires_fields():
    with pytest.raises(RecordError, match="missing fields"):
        validate({"schema_version": 1, "run_id": "x"})
