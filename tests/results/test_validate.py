"""`umlbench validate`: every committed record and reference row passes; each broken file of a
list gives exactly one line naming it and what is wrong, and the exit status is nonzero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.results.test_record import make_record
from umlbench.cli import cli
from umlbench.results.validate import validate_paths

REPO = Path(__file__).parents[2]


def test_committed_records_and_reference_rows_are_valid():
    report = validate_paths([REPO / "results"])
    assert report.problems == []
    assert report.files == len(list((REPO / "results").rglob("*.json"))) + len(
        list((REPO / "results" / "reference").glob("*.yaml")))


def _good() -> dict:
    return make_record(run_id="case").to_dict()


def _edit(fn):
    data = _good()
    fn(data)
    return json.dumps(data)


def _set(path: str, value):
    def fn(data):
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    return fn


def _del(path: str):
    def fn(data):
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        del node[last]
    return fn


def _schema_1_without_status(data):
    del data["identity"], data["status"]
    data.update(schema_version=1, git_commit=None)


REF = ("rows:\n  - method: m\n    suite: mini\n    values: {{cub: {value}}}\n"
       "    citation: \"x\"\n{extra}")

# (file name, content, what the one line must say)
BROKEN = [
    ("case.json", '{"schema_version": 2, "run_id": ', "not valid JSON"),
    ("case.json", "[1, 2]", "not a JSON object"),
    ("case.json", _edit(_del("schema_version")), "missing schema_version"),
    ("case.json", _edit(_set("schema_version", 99)), "schema_version 99 is newer"),
    ("case.json", _edit(_del("metrics")), "missing field ['metrics']"),
    ("case.json", _edit(_set("notes", "x")), "unknown field ['notes']"),
    ("case.json", _edit(_set("seed", "0")), 'seed: "0" is not integer'),
    ("case.json", _edit(_set("seed", -1)), "seed: -1 is less than the minimum of 0"),
    ("case.json", _edit(_set("status", "done")), 'status: "done" is not one of'),
    ("case.json", _edit(_set("metrics", {"universal": {}})),
     "metrics: missing field ['per_dataset']"),
    ("case.json", _edit(_set("metrics.universal.recall@1", "0.5")),
     'metrics.universal.recall@1: "0.5" is not number or null'),
    ("case.json", _edit(_set("identity.config.sha256", "abc")), "identity.config.sha256"),
    ("case.json", _edit(_set("config.train", {"lr": 0.1})), "does not match the config"),
    ("case.json", _edit(lambda d: d.update(seed=1)), "seed 1 differs from config.seed 0"),
    ("other-name.json", json.dumps(_good()), "file name does not match run_id 'case'"),
    ("case.json", _edit(_del("identity.data.mini-cub.images")),
     "identity.data.mini-cub: missing field ['images']"),
    ("case.json", _edit(_set("identity.code.git_commit", "abc1234-dirty")),
     "identity.code.git_commit"),
    ("case.json", _edit(_set("created", "yesterday")), "created"),
    ("case.json", _edit(_schema_1_without_status), "missing field ['status']"),
    ("ref.yaml", REF.format(value=0.5, extra="    trainable: many\n"),
     "row 1 (m): trainable: \"many\" is not integer or null"),
    ("ref.yaml", REF.format(value=63.2, extra=""), "row 1 (m): values.cub: 63.2 is greater"),
    ("ref.yaml", REF.format(value=0.5, extra="    notes: typo\n"),
     "row 1 (m): unknown field ['notes']"),
    ("ref.yaml", "rows:\n  - method: m\n    suite: mini\n",
     "row 1 (m): missing field ['citation']"),
    ("ref.yaml", "rows: [method: {\n", "invalid YAML"),
    ("ref.csv", "method,suite,citation,scope\nm,mini,x,cub\n",
     "line 2: needs both scope and value"),
    ("ref.csv", "method,suite,citation,scope,value\nm,mini,x,cub,high\n",
     'row 1 (m): values.cub: "high" is not number'),
]


@pytest.mark.parametrize("name,content,message", BROKEN,
                         ids=[f"{i}-{c[2][:30]}" for i, c in enumerate(BROKEN)])
def test_each_broken_file_gives_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    report = validate_paths([tmp_path])
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"{path}: ")
    assert message in report.problems[0]
    assert "\n" not in report.problems[0]


def test_a_run_id_in_two_files_is_one_problem(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "case.json").write_text(json.dumps(_good()))
    report = validate_paths([tmp_path / "a", tmp_path / "b"])
    first, second = tmp_path / "a" / "case.json", tmp_path / "b" / "case.json"
    assert report.problems == [f"{second}: run_id 'case' is also in {first}"]


def test_cli_prints_one_line_per_problem_and_exits_nonzero(tmp_path):
    for i, (name, content, _) in enumerate(BROKEN):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / name).write_text(content)
    res = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert res.exit_code == 1
    assert len(res.stdout.splitlines()) == len(BROKEN)
    assert f"{len(BROKEN)} file(s) checked, {len(BROKEN)} problem(s)" in res.stderr
    # A path that does not exist is a usage error (one line, status 2), not a finding.
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "missing")])
    assert res.exit_code == 2 and res.stderr.startswith("error: ")
    good = tmp_path / "good"
    good.mkdir()
    (good / "case.json").write_text(json.dumps(_good()))
    res = CliRunner().invoke(cli, ["validate", str(good), str(REPO / "results" / "reference")])
    assert res.exit_code == 0 and res.stdout == ""


def test_store_skips_invalid_files_with_one_warning_each(tmp_path):
    from umlbench.results.store import load_records, load_reference

    for i, (name, content, _) in enumerate(BROKEN):
        if name.endswith(".json"):
            (tmp_path / f"{i}-{name}").write_text(content)
    (tmp_path / "case.json").write_text(json.dumps(_good()))
    warnings: list[str] = []
    # Store reading checks each file on its own (the file-name check is validate's, so the
    # copy named other-name.json loads).
    assert [r.run_id for r in load_records([tmp_path], warnings.append)] == ["case", "case"]
    assert len(warnings) == sum(n == "case.json" for n, _, _ in BROKEN)
    ref = tmp_path / "reference"
    ref.mkdir()
    for i, (name, content, _) in enumerate(BROKEN):
        if not name.endswith(".json"):
            (ref / f"{i}-{name}").write_text(content)
    warnings.clear()
    assert load_reference(ref, warnings.append).empty
    assert len(warnings) == sum(not n.endswith(".json") for n, _, _ in BROKEN)
    assert all("\n" not in w for w in warnings)



def test_a_record_missing_many_fields_is_one_line_per_distinct_problem(tmp_path):
    """15 missing fields are one problem (the schema reports the group once per field)."""
    data = _good()
    dropped = [k for k in data if k != "schema_version"][:15]
    for k in dropped:
        del data[k]
    path = tmp_path / "gutted.json"
    path.write_text(json.dumps(data))
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    assert len(lines) == len(set(lines)) == 1, res.stdout
    assert "missing fields" in lines[0] and all(repr(k) in lines[0] for k in dropped
                                               if k in ("run_id", "method", "config"))
    assert "1 file(s) checked, 1 problem(s)" in res.stderr
