"""Per-query outcome sidecars: round trip, size budget, pairing, validation of missing / corrupt /
tampered sidecars, records without one, and a mini run that writes one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.results.test_record import make_record
from umlbench.cli import cli
from umlbench.errors import UserError
from umlbench.metrics import retrieval
from umlbench.results import perquery
from umlbench.results.perquery import (TOLERANCE, PerQuery, ScopeOutcomes, load_for_record,
                                       load_sidecar, pair, scope_problems, write_sidecar)
from umlbench.results.record import RecordError, read_record, write_record
from umlbench.results.store import load_records
from umlbench.results.validate import validate_paths

COMMITTED = Path(__file__).parents[2] / "results" / "mini"

# The real uml suite's queries per dataset (test split; In-shop: query and gallery rows, so
# that the total is the 146,665 images of the universal pool) and typical class sizes.
UML = {"cub": (5924, 59), "cars": (8131, 83), "sop": (60502, 5), "inshop": (26830, 3),
       "nabirds": (25653, 92), "dogs": (9929, 165), "flowers": (4696, 92), "aircraft": (5000, 100)}
MINI = {"mini-cub": (583, 6), "mini-cars": (806, 8), "mini-sop": (2138, 4),
        "mini-inshop": (720, 3), "mini-nabirds": (1241, 12), "mini-dogs": (411, 10),
        "mini-flowers": (374, 7), "mini-aircraft": (200, 20)}
LITERATURE_KS = {"sop": (10, 100, 1000), "inshop": (10, 20, 30)}


def _terms(rng, n, r_mean, ks, extra=None):
    """Per-query terms of ``n`` queries computed by the engine's metric functions from
    simulated ranked lists: each query has ~``r_mean`` relevant items whose ranks spread with a
    per-query difficulty; ``extra`` (n,) pushes some queries' items down (foreign datasets in
    the universal scope). Returns ({metric: (n,)}, (owner, pos, j, r))."""
    r = np.maximum(1, rng.poisson(r_mean, n))
    scale = np.exp(rng.normal(np.log(r_mean) + 0.5, 1.2, n))
    owner = np.repeat(np.arange(n), r)
    gap = np.sort(rng.exponential(1.0, len(owner)) * scale[owner])
    gap = gap[np.lexsort((gap, owner))]
    j = np.arange(len(owner)) - np.repeat(np.cumsum(r) - r, r) + 1
    return owner, np.floor(gap).astype(np.int64) + j, j, r


def _values(owner, pos, j, r, ks):
    n = len(r)
    first = retrieval.first_rank(owner, pos, n)
    out = {f"recall@{k}": retrieval.recall_at_k(first, k) for k in ks}
    out["precision@1"] = retrieval.precision_at_1(first)
    out["r_precision"] = retrieval.r_precision(owner, pos, r)
    out["map@r"] = retrieval.map_at_r(owner, pos, j, r)
    out["map@1000"] = retrieval.map_at_1000(owner, pos, j, r + 1)
    return out


def synthetic_outcomes(shape: dict, seed: int = 0, differ: float = 0.2) -> PerQuery:
    """Outcomes shaped like a real record of the suite ``shape`` (dataset -> (queries, class
    size)): every retrieval metric, the literature's Recall@K lists per dataset, and a universal
    scope where ``differ`` of the queries rank lower than in their dataset's scope."""
    rng = np.random.default_rng(seed)
    scopes, uni = {}, []
    for ds, (n, r_mean) in shape.items():
        ks = sorted({1, 2, 4, 8, *LITERATURE_KS.get(ds.removeprefix("mini-"), ())})
        owner, pos, j, r = _terms(rng, n, r_mean, ks)
        ids = np.array([f"{ds}-img-{i:06d}" for i in rng.permutation(n)])
        names = np.full(n, ds)
        scopes[ds] = (names, ids, _values(owner, pos, j, r, ks))
        push = np.where(rng.random(n) < differ, rng.geometric(0.3, n), 0)
        uni.append((names, ids, _values(owner, pos + push[owner], j, r, (1, 2, 4, 8))))
    scopes["universal"] = (np.concatenate([u[0] for u in uni]),
                           np.concatenate([u[1] for u in uni]),
                           {m: np.concatenate([u[2][m] for u in uni]) for m in uni[0][2]})
    return PerQuery.from_queries(scopes)


def _assert_same(a: PerQuery, b: PerQuery) -> None:
    assert set(a.scopes) == set(b.scopes) and a.datasets == b.datasets
    assert a.episodic == b.episodic
    for scope, x in a.scopes.items():
        y = b.scopes[scope]
        assert np.array_equal(x.ids, y.ids) and x.sources == y.sources
        assert set(x.values) == set(y.values)
        for m, v in x.values.items():
            if m.startswith("recall@") or m == "precision@1":
                assert np.array_equal(v, y.values[m]), (scope, m)
            else:
                assert np.abs(v - y.values[m]).max(initial=0) <= TOLERANCE, (scope, m)


# --- the format ----------------------------------------------------------------------------


def test_round_trip_keeps_ids_hits_exactly_and_terms_within_the_tolerance(tmp_path):
    pq = synthetic_outcomes(MINI)
    name, digest = write_sidecar(tmp_path / "a.perquery.npz", pq)
    assert name == "a.perquery.npz" and digest == perquery.sha256_file(tmp_path / name)
    back = load_sidecar(tmp_path / name)
    _assert_same(pq, back)
    # Same outcomes, same bytes: a rerun that scores identically has the same SHA-256.
    assert write_sidecar(tmp_path / "b.perquery.npz", back)[1] == digest
    u = back.scopes["universal"]
    assert len(u) == sum(n for n, _ in MINI.values())
    assert set(back.scopes["mini-sop"].values) >= {"recall@1000", "map@1000", "r_precision"}
    assert u.sources == {d: back.datasets[d].sha256 for d in MINI}


def test_ids_name_each_query_by_its_image_in_the_datasets_sorted_list():
    images = np.array(["z.jpg", "a.jpg", "m.jpg"])
    pq = PerQuery.from_queries({"d": (["d"] * 3, images, {"recall@1": [1.0, 0.0, 1.0]})})
    out = pq.scopes["d"]
    assert out.ids.tolist() == ["d/0", "d/1", "d/2"]  # a.jpg, m.jpg, z.jpg
    assert out.values["recall@1"].tolist() == [0.0, 1.0, 1.0]
    assert pq.datasets["d"].n == 3
    assert pq.datasets["d"].sha256 == perquery.hashlib.sha256(b"a.jpg\nm.jpg\nz.jpg").hexdigest()


def test_outcomes_built_by_hand_keep_their_own_ids(tmp_path):
    rng = np.random.default_rng(1)
    ids = np.array([f"q{i}" for i in rng.permutation(50)])
    scope = ScopeOutcomes(ids, {"recall@1": rng.integers(0, 2, 50).astype(float),
                                "map@r": rng.random(50)})
    pq = PerQuery({"universal": scope, "part": ScopeOutcomes(ids[:20], {
        "recall@1": scope.values["recall@1"][:20]})})
    write_sidecar(tmp_path / "h.perquery.npz", pq)
    back = load_sidecar(tmp_path / "h.perquery.npz")
    for name, out in pq.scopes.items():
        got = back.scopes[name]
        x, y = pair(out, got, "recall@1")  # aligned by id, whatever the order given
        assert np.array_equal(x, y) and sorted(got.ids) == sorted(out.ids)
    x, y = pair(scope, back.scopes["universal"], "map@r")
    assert np.abs(x - y).max() <= TOLERANCE


def test_uml_sized_outcomes_fit_in_one_megabyte(tmp_path):
    # Pessimistic: half of the universal scope's queries rank differently from their dataset's
    # scope (each such query costs its terms a second time). 0.72 MB when written.
    pq = synthetic_outcomes(UML, differ=0.5)
    assert len(pq.scopes["universal"]) == 146_665
    write_sidecar(tmp_path / "uml.perquery.npz", pq)
    size = (tmp_path / "uml.perquery.npz").stat().st_size
    assert size <= 1_000_000, size
    _assert_same(pq, load_sidecar(tmp_path / "uml.perquery.npz"))


def test_mini_sized_outcomes_fit_in_100_kilobytes(tmp_path):
    # As pessimistic (0.055 MB when written; a real off-the-shelf run on the whole mini suite,
    # every retrieval metric: 0.059 MB).
    write_sidecar(tmp_path / "mini.perquery.npz", synthetic_outcomes(MINI, differ=0.5))
    assert (tmp_path / "mini.perquery.npz").stat().st_size <= 100_000


def test_values_that_cannot_be_terms_are_refused(tmp_path):
    def one(values):
        return PerQuery.from_queries({"d": (["d", "d"], ["a", "b"], values)})

    for values, message in (({"recall@1": [0.5, 1.0]}, "hits must be 0 or 1"),
                            ({"map@r": [1.5, 0.0]}, r"must lie in \[0, 1\]"),
                            ({"map@r": [np.nan, 0.0]}, "must be finite")):
        with pytest.raises(ValueError, match=message):
            write_sidecar(tmp_path / "x.perquery.npz", one(values))
    with pytest.raises(ValueError, match="appears twice"):
        PerQuery.from_queries({"d": (["d", "d"], ["a", "a"], {"recall@1": [1.0, 0.0]})})
    assert not list(tmp_path.iterdir())  # nothing half-written


# --- pairing ---------------------------------------------------------------------------------


def test_pair_aligns_two_runs_query_by_query():
    images = np.array(["c", "a", "b"])
    a = PerQuery.from_queries({"d": (["d"] * 3, images, {"recall@1": [1.0, 0.0, 0.0]})})
    b = PerQuery.from_queries({"d": (["d"] * 3, images[::-1], {"recall@1": [1.0, 1.0, 0.0]})})
    x, y = pair(a.scopes["d"], b.scopes["d"], "recall@1")
    # In image order a, b, c: the first run's hits 0, 0, 1; the second's (given as b, a, c)
    # 1, 1, 0.
    assert x.tolist() == [0.0, 0.0, 1.0] and y.tolist() == [1.0, 1.0, 0.0]


def test_pair_refuses_other_queries_or_a_missing_metric():
    a = PerQuery.from_queries({"d": (["d"] * 2, ["a", "b"], {"recall@1": [1.0, 0.0]})})
    other = PerQuery.from_queries({"d": (["d"] * 2, ["a", "c"], {"recall@1": [1.0, 0.0]})})
    with pytest.raises(UserError, match="different d query images"):
        pair(a.scopes["d"], other.scopes["d"], "recall@1")
    fewer = ScopeOutcomes.build(["d/0"], {"recall@1": [1.0]})
    with pytest.raises(UserError, match="1 only in the first"):
        pair(a.scopes["d"], fewer, "recall@1")
    with pytest.raises(UserError, match="no per-query map@r"):
        pair(a.scopes["d"], a.scopes["d"], "map@r")


# --- against a record ------------------------------------------------------------------------


def outcomes_for(rec) -> PerQuery:
    """Per-query outcomes whose means are the metrics of a make_record() record: the first
    round(mean * n) queries hit, AP-type terms equal to the mean."""
    scopes, names, images = {}, [], []
    for ds, agg in rec.metrics["per_dataset"].items():
        n = agg["num_queries"]
        names += [ds] * n
        images += [f"{ds}-{i}" for i in range(n)]
        scopes[ds] = ([ds] * n, images[-n:], _matching(agg, n))
    scopes["universal"] = (names, images, _matching(rec.metrics["universal"], len(names)))
    return PerQuery.from_queries(scopes)


def _matching(agg, n):
    out = {}
    for m, v in agg.items():
        if m.startswith("recall@"):
            out[m] = (np.arange(n) < round(v * n)).astype(float)
        elif m in ("map@r", "r_precision", "map@1000"):
            out[m] = np.full(n, v)
    return out


@pytest.fixture()
def with_sidecar(tmp_path) -> Path:
    rec = make_record(run_id="with-sidecar")
    return write_record(rec, tmp_path / "mini", per_query=outcomes_for(rec))


def test_write_record_writes_the_sidecar_it_names(with_sidecar):
    data = json.loads(with_sidecar.read_text())
    ref = data["per_query"]
    assert data["schema_version"] == 3
    assert ref == {"file": "with-sidecar.perquery.npz", "format": 1,
                   "sha256": perquery.sha256_file(with_sidecar.parent / ref["file"])}
    rec = read_record(with_sidecar)
    outcomes = load_for_record(with_sidecar, rec)
    assert scope_problems(outcomes, rec.metrics) == []
    # Records read from a results dir know their file, and so where their sidecar is.
    [loaded] = load_records([with_sidecar.parent])
    assert loaded.path == with_sidecar and "path" not in loaded.to_dict()
    assert load_for_record(loaded.path, loaded).scopes.keys() == outcomes.scopes.keys()
    assert validate_paths([with_sidecar.parent]).problems == []
    assert validate_paths([with_sidecar.parent]).notes == []


def test_a_record_that_cannot_be_written_leaves_no_sidecar(tmp_path):
    rec = make_record(run_id="bad")
    rec.status = "no such status"
    with pytest.raises(RecordError):
        write_record(rec, tmp_path, per_query=outcomes_for(make_record()))
    assert list(tmp_path.iterdir()) == [] and rec.per_query is None


def _validate_one_line(path: Path) -> str:
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 1, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    return lines[0]


def test_validate_names_a_missing_sidecar(with_sidecar):
    (with_sidecar.parent / "with-sidecar.perquery.npz").unlink()
    line = _validate_one_line(with_sidecar)
    assert line.startswith(str(with_sidecar)) and "with-sidecar.perquery.npz is missing" in line
    # The record still loads everywhere else; its outcomes are simply unavailable.
    assert load_for_record(with_sidecar) is None
    assert [r.run_id for r in load_records([with_sidecar.parent])] == ["with-sidecar"]


def test_validate_names_a_tampered_sidecar(with_sidecar):
    sidecar = with_sidecar.parent / "with-sidecar.perquery.npz"
    rec = read_record(with_sidecar)
    other = outcomes_for(make_record(r1=(0.1, 0.6)))  # another run's outcomes
    write_sidecar(sidecar, other)
    line = _validate_one_line(with_sidecar)
    assert line.startswith(str(sidecar)) and "does not match the record's" in line
    # Its hash copied into the record as well: the outcomes no longer average to the metrics.
    data = json.loads(with_sidecar.read_text())
    data["per_query"]["sha256"] = perquery.sha256_file(sidecar)
    with_sidecar.write_text(json.dumps(data))
    line = _validate_one_line(with_sidecar)
    assert "does not match its record: scope mini-cub: mean per-query map@r 0.050061 " \
           "differs from the record's 0.250000 (and 1 more)" in line  # recall@1: 0.1 vs 0.5
    assert rec.per_query["sha256"] != data["per_query"]["sha256"]


def test_validate_names_a_corrupt_sidecar(with_sidecar):
    sidecar = with_sidecar.parent / "with-sidecar.perquery.npz"
    sidecar.write_bytes(sidecar.read_bytes()[:200])  # truncated
    data = json.loads(with_sidecar.read_text())
    data["per_query"]["sha256"] = perquery.sha256_file(sidecar)
    with_sidecar.write_text(json.dumps(data))
    line = _validate_one_line(with_sidecar)
    assert line.startswith(str(sidecar)) and "not a readable per-query sidecar" in line


def test_older_records_load_and_validate_with_a_note(tmp_path):
    """A schema-2 record as an earlier commit wrote it (an ooDML record of 8cbfe31, kept as a
    fixture since every committed record now has its sidecar)."""
    path = tmp_path / "off-the-shelf-mini-oodml-mini-cub-l1-s0-20261130-150308-d9b9cc.json"
    shutil.copy(Path(__file__).parent / "data" / path.name, path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2
    rec = read_record(path)
    assert rec.per_query is None and rec.upgraded_from == data["schema_version"]
    assert load_for_record(path, rec) is None and load_for_record(path) is None
    report = validate_paths([path])
    assert report.problems == []
    assert report.notes == [f"{path}: no per-query outcomes (schema {rec.upgraded_from} record)"]
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 0 and "no per-query outcomes" in res.stderr


def test_episodes_are_checked_as_the_mean_of_episode_means():
    # Two episodes of different sizes: the record's value is the mean of the two means (0.5),
    # not the pooled mean (0.6).
    ep0 = (["d"] * 4, ["a", "b", "c", "e"], {"recall@1": [1.0, 1.0, 1.0, 1.0]})
    ep1 = (["d"] * 1, ["f"], {"recall@1": [0.0]})
    pq = PerQuery.from_queries({"episode-0": ep0, "episode-1": ep1}, episodic=True)
    ok = {"per_dataset": {"d": {"recall@1": 0.5}}, "universal": {"recall@1": 0.5}}
    assert scope_problems(pq, ok) == []
    pooled = {"per_dataset": {"d": {"recall@1": 0.8}}}
    [line] = scope_problems(pq, pooled)
    assert "mean over 2 episodes" in line and "recall@1 0.500000" in line


# --- a real run ------------------------------------------------------------------------------


def test_mini_run_writes_a_sidecar_that_validates(env_root):
    from tests.conftest import FAST
    from umlbench.runner import build_config, run

    metrics = "eval.metrics=[recall@1,recall@2,precision@1,r_precision,map@r,map@1000]"
    cfg = build_config("off-the-shelf", "mini", overrides=[*FAST[:-1], metrics])
    [(rec, path)] = run(cfg, results_dir=env_root / "results", work_dir=env_root / "w")
    sidecar = path.parent / rec.per_query["file"]
    assert sidecar.name == path.stem + ".perquery.npz"
    assert sidecar.stat().st_size <= 100_000
    report = validate_paths([path.parent])
    assert report.problems == [] and report.notes == []
    outcomes = load_for_record(path, rec)
    assert set(outcomes.scopes) == {"mini-cub", "mini-flowers", "mini-aircraft", "universal"}
    for scope, out in outcomes.scopes.items():
        agg = rec.metrics["universal" if scope == "universal" else "per_dataset"]
        agg = agg if scope == "universal" else agg[scope]
        assert len(out) == agg["num_queries"] - agg["num_excluded_queries"]
        for m, v in out.values.items():
            assert abs(v.mean() - agg[m]) <= TOLERANCE
    # The universal scope's queries are the datasets' queries, under the same ids.
    assert set(outcomes.scopes["universal"].ids) == set().union(
        *(set(outcomes.scopes[d].ids) for d in ("mini-cub", "mini-flowers", "mini-aircraft")))
