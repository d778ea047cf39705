"""`umlbench sweep`: the grid, local execution, skipping finished jobs, submitit submission."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAST
from umlbench.errors import UserError
from umlbench.results.store import load_records
from umlbench.sweep import Job, _done, parse_grid, sweep


def test_grid_parsing():
    jobs = parse_grid(["puma", "finetune:loss.name=arcface:method.setting=specific"], [0, 1],
                      ["train.epochs=1"])
    assert [j.label for j in jobs] == [
        "puma:train.epochs=1 seed 0", "puma:train.epochs=1 seed 1",
        "finetune:train.epochs=1:loss.name=arcface:method.setting=specific seed 0",
        "finetune:train.epochs=1:loss.name=arcface:method.setting=specific seed 1"]
    with pytest.raises(UserError):
        parse_grid([":x=1"], [0], [])


def _jobs(env_root, methods=("off-the-shelf",), seeds=(0, 1)):
    return parse_grid(list(methods), list(seeds), FAST, results_dir=str(env_root / "results"),
                      work_dir=str(env_root / "work"))


def test_local_sweep_runs_and_skips_done(env_root):
    out = sweep(_jobs(env_root), "local", echo=lambda m: None)
    assert len(out) == 2
    recs = load_records([env_root / "results"])
    assert sorted(r.seed for r in recs) == [0, 1]
    messages = []
    assert sweep(_jobs(env_root), "local", echo=messages.append) == []
    assert all(m.startswith("skip (done)") for m in messages)


def test_done_means_same_config_and_data_identity(env_root):
    """Another config under the same display name is not done; neither is a record whose data
    identity is not what is prepared now."""
    [job] = _jobs(env_root, seeds=(0,))
    sweep([job], "local", echo=lambda m: None)
    assert _done(job)
    [changed] = parse_grid(["off-the-shelf"], [0], FAST + ["eval.batch_size=64"],
                           results_dir=str(env_root / "results"))
    assert not _done(changed)
    # Pretend the record was made from other data: it no longer counts.
    [path] = (env_root / "results").rglob("*.json")
    data = json.loads(path.read_text())
    for entry in data["identity"]["data"].values():
        entry["rows_sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    assert not _done(job)


@pytest.mark.slow
def test_submitit_local_executor(env_root):
    pytest.importorskip("submitit")
    jobs = sweep(_jobs(env_root, seeds=(3,)), "submitit-local", folder=env_root / "sub",
                 echo=lambda m: None)
    assert len(jobs) == 1
    paths = jobs[0].result()
    assert len(paths) == 1 and paths[0].endswith(".json")
    assert [r.seed for r in load_records([env_root / "results"])] == [3]


def test_unknown_executor(env_root):
    with pytest.raises(UserError, match="unknown executor"):
        sweep([Job("off-the-shelf", 0)], "kubernetes", echo=lambda m: None)
