"""The CLI through click's runner and through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import FAST
from tests.results.test_record import make_record
from umlbench.cli import cli
from umlbench.results.record import write_record


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def test_list_shows_every_kind():
    res = invoke("list")
    assert res.exit_code == 0
    for word in ("mini-sop", "puma", "off-the-shelf", "uml", "curricularface", "map@r"):
        assert word in res.output


def test_prepare_data_then_info(tmp_path):
    res = invoke("prepare-data", "--dataset", "mini-aircraft", "--data-root", str(tmp_path))
    assert res.exit_code == 0, res.output
    res = invoke("info", "--data-root", str(tmp_path), "--suite", "mini")
    assert res.exit_code == 0
    assert "mini-aircraft" in res.output and "200/10" in res.output


def test_run_off_the_shelf_writes_a_record(env_root):
    res = invoke("run", "--method", "off-the-shelf", *_sets(FAST))
    assert res.exit_code == 0, res.output
    files = list((env_root / "results" / "mini").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["status"] == "completed" and rec["params"]["trainable"] == 0
    assert set(rec["metrics"]["per_dataset"]) == {"mini-cub", "mini-flowers", "mini-aircraft"}
    assert 0 < rec["metrics"]["universal"]["recall@1"] < 1
    code = rec["identity"]["code"]
    assert code["git_commit"] is None or len(code["git_commit"]) == 40
    assert set(rec["identity"]["data"]) == {"mini-cub", "mini-flowers", "mini-aircraft"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--method", "nope"], "unknown method 'nope'"),
        (["run", "--method", "puma", "--set", "train.epoch=1"], "unknown config key"),
        (["run", "--method", "puma", "--set", "oops"], "must look like key=value"),
        (["prepare-data", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["leaderboard", "--metric", "recall@1", "--suite", "nosuch"], "no uml results"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(env_root, args, message):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    err = res.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_dataset_not_prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("UMLBENCH_DATA", str(tmp_path / "empty"))
    res = CliRunner().invoke(cli, ["run", "--method", "off-the-shelf"])
    assert res.exit_code == 2
    assert "is not prepared" in res.output and "umlbench prepare-data" in res.output


def test_leaderboard_markdown_from_records(tmp_path):
    for seed, (a, b) in enumerate([(0.5, 0.6), (0.52, 0.62), (0.54, 0.58)]):
        write_record(make_record("puma", seed, (a, b), 0.55), tmp_path / "mini")
        write_record(make_record("linear", seed, (a - 0.1, b - 0.1), 0.45), tmp_path / "mini")
    res = invoke("leaderboard", "--format", "markdown", "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("| Method | Seeds |")
    assert lines[2].startswith("| puma | 3 |") and "**52.00 ± 2.00**" in lines[2]
    assert lines[3].startswith("| linear | 3 |")


def test_evaluate_npz(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 4)
    emb = rng.normal(size=(10, 8))[labels] + 0.3 * rng.normal(size=(40, 8))
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=emb.astype(np.float32), labels=labels,
             datasets=np.array(["a"] * 20 + ["b"] * 20))
    res = invoke("evaluate", str(path), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data["per_dataset"]) == {"a", "b"}
    for key in ("recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision",
                "map@r", "map@1000", "nmi", "f1"):
        assert key in data["universal"]
    assert data["harmonic_mean"] > 0.5


@pytest.mark.parametrize("arrays, message", [
    ({"embeddings": np.full((4, 2), np.nan, np.float32), "labels": np.array([0, 0, 1, 1]),
      "datasets": np.array(["a"] * 4)}, "NaN"),
    ({"embeddings": np.ones((4, 2), np.float32), "labels": np.array([0, 0, 1]),
      "datasets": np.array(["a"] * 4)}, "shape"),
    ({"embeddings": np.ones((4, 2), np.float32), "labels": np.array([0, 0, 1, 1])}, "missing"),
    ({"embeddings": np.eye(3, dtype=np.float32), "labels": np.array([0, 0, 1]),
      "datasets": np.array(["a", "a", "b"])}, "fewer than two"),
])
def test_evaluate_bad_input(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    res = CliRunner().invoke(cli, ["evaluate", str(path)])
    assert res.exit_code == 2
    assert res.output.startswith(f"error: {path}") and message in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_console_script_reports_errors_without_traceback(env_root):
    exe = shutil.which("umlbench")
    assert exe, "the umlbench console script is not installed"
    proc = subprocess.run([exe, "run", "--method", "definitely-not-a-method"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: unknown method")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "prepare-data" in proc.stdout
