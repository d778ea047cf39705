"""Run records: schema round trip, atomic concurrent writes, corrupt files skipped, the JSON
Schema, upgrading schema-1 records."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
from pathlib import Path

import pytest

from umlbench.results.identity import config_identity, sha256_text
from umlbench.results.record import (SCHEMA_VERSION, RecordError, RunRecord, new_run_id,
                                     problems, read_record, schema, validate, write_record)
from umlbench.results.store import load_records


COMMITTED = Path(__file__).parents[2] / "results" / "mini"


def fake_hash(text: str) -> str:
    """A made-up but well-formed SHA-256 for identity fixtures."""
    return sha256_text(text)


def data_block(datasets=("mini-cub", "mini-cars"), kind="generated", image_size=32,
               manifest="m", split=None) -> dict:
    """identity.data of a record that used ``datasets`` (fixture values)."""
    return {d: {"manifest_sha256": fake_hash(f"{manifest}-file-{d}"),
                "rows_sha256": fake_hash(f"{manifest}-rows-{d}"),
                "images": {"kind": kind, "image_size": image_size,
                           "sha256": {"images.u8": fake_hash(f"{kind}{image_size}-{d}")}},
                "split_sha256": fake_hash(split) if split else None}
            for d in datasets}


CODE = {"umlbench_version": "0.1.0", "git_commit": "1" * 40, "dirty": False,
        "diff_sha256": None}


def make_record(method="puma", seed=0, r1=(0.5, 0.6), universal=0.55, run_id=None,
                display=None, suite="mini", protocol=None, trainable=1000, config=None,
                data="default", code=None, created="2026-01-01T00:00:00") -> RunRecord:
    per = {f"mini-{d}": {"recall@1": v, "map@r": v / 2, "num_queries": 10,
                         "num_excluded_queries": 0} for d, v in zip(("cub", "cars"), r1)}
    hm = len(r1) / sum(1 / v for v in r1)
    protocol = protocol or {"name": "uml"}
    cfg = {"method": method, "seed": seed, "suite": suite, "device": "cpu",
           "protocol": {k: v for k, v in protocol.items() if k in ("name", "dataset", "level")},
           **(config or {})}
    return RunRecord(
        run_id=run_id or new_run_id(f"{method}-s{seed}"), method=method,
        display_name=display or method, suite=suite, seed=seed, status="completed",
        protocol=protocol, config=cfg, backbone="vit",
        params={"trainable": trainable, "total": 5000, "proxies": 0},
        metrics={"per_dataset": per, "universal": {"recall@1": universal, "map@r": 0.2},
                 "summary": {"harmonic_mean": {"recall@1": hm, "map@r": hm / 2},
                             "arithmetic_mean": {"recall@1": sum(r1) / len(r1)}}},
        harmonic_mean=hm, timings={"total_s": 1.0}, hardware={}, packages={},
        created=created,
        identity={"config": config_identity(cfg),
                  "data": data_block() if data == "default" else data,
                  "code": code or CODE},
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
    with pytest.raises(RecordError, match=r"metrics.universal.recall@1: \"high\" is not number"):
        write_record(rec, tmp_path)
    rec = make_record()
    del rec.identity["data"]["mini-cub"]["rows_sha256"]
    with pytest.raises(RecordError, match=r"identity.data.mini-cub: missing field \['rows_sha"):
        write_record(rec, tmp_path)
    assert not list(tmp_path.iterdir())


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


def test_schema_lists_every_record_field():
    # A field added to RunRecord must be added to schemas/record.schema.json too (and the
    # other way round), or every record written would be rejected.
    fields = {f.name for f in dataclasses.fields(RunRecord)} - {"upgraded_from", "path"}
    assert set(schema()["properties"]) == fields
    assert schema()["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_edited_config_no_longer_matches_its_hash(tmp_path):
    data = make_record().to_dict()
    data["config"]["train"] = {"lr": 1.0}
    found = problems(data, "edited.json")
    assert len(found) == 1 and "identity.config.sha256" in found[0]
    data = make_record().to_dict()
    data["config"]["device"] = "cuda"  # result-neutral: the hash does not cover it
    assert problems(data) == []


def _schema_1(**changes) -> dict:
    """A record as umlbench wrote it before identity existed (schema 1)."""
    data = make_record().to_dict()
    del data["identity"]
    data.update({"schema_version": 1, "git_commit": "a" * 40 + "-dirty", **changes})
    data["packages"] = {"umlbench": "0.1.0"}
    return data


def test_schema_1_records_upgrade_with_unknowns_as_null(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_schema_1()))
    rec = read_record(path)
    assert rec.schema_version == SCHEMA_VERSION and rec.upgraded_from == 1
    assert rec.identity["data"] is None  # never recorded: unknown, not guessed
    assert rec.identity["code"] == {"umlbench_version": "0.1.0", "git_commit": "a" * 40,
                                    "dirty": True, "diff_sha256": None}
    # The config identity is computed from the recorded config, as for a new record.
    assert rec.identity["config"] == make_record().identity["config"]
    clean = _schema_1(git_commit="b" * 40)
    assert validate(clean).identity["code"]["dirty"] is False


def test_committed_records_load_through_the_upgrade():
    files = sorted(COMMITTED.glob("*.json"))
    assert len(files) > 100
    for path in files:
        rec = read_record(path)
        assert rec.identity["config"]["sha256"]
        if rec.upgraded_from == 1:
            assert rec.identity["data"] is None
        else:  # committed runs come from a clean commit, with their data identity
            assert rec.identity["code"]["dirty"] is False, path
            assert rec.identity["data"], path
