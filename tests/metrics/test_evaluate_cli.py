"""`umlbench evaluate`: what a user sees for issue 15's input and output problems."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.metrics.reference import clustered_embeddings
from umlbench.cli import cli


def _npz(tmp_path, **arrays):
    path = tmp_path / "e.npz"
    np.savez(path, **arrays)
    return path


def _arrays(scale=1.0, dtype=np.float32, labels=None):
    rng = np.random.default_rng(0)
    emb, lab, datasets = clustered_embeddings(rng, 4, (3, 5), 6, spread=0.3, n_datasets=2)
    return {"embeddings": (emb.astype(np.float64) * scale).astype(dtype),
            "labels": lab if labels is None else labels(lab), "datasets": datasets}


def test_json_is_valid_with_null_for_a_scope_without_queries(tmp_path):
    # Dataset "a" has only singleton classes: every query is excluded. --json used to print a
    # bare NaN (invalid JSON); now null, next to the count that explains it.
    path = _npz(tmp_path, embeddings=np.array([[1, 0], [0, 1], [1, 1], [1, 0.5]], np.float32),
                labels=np.array([0, 1, 2, 2]), datasets=np.array(["a", "a", "b", "b"]))
    res = CliRunner().invoke(cli, ["evaluate", str(path), "--json", "--metrics",
                                   "recall@1,map@r"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)  # strict: NaN would not parse under allow_nan=False rules
    assert "NaN" not in res.output
    assert data["per_dataset"]["a"]["recall@1"] is None
    assert data["per_dataset"]["a"]["num_excluded_queries"] == 2
    assert data["per_dataset"]["b"]["recall@1"] == 1.0


def test_summary_line_names_the_metric(tmp_path):
    path = _npz(tmp_path, **_arrays())
    res = CliRunner().invoke(cli, ["evaluate", str(path), "--metrics", "map@r,r_precision"])
    assert res.exit_code == 0, res.output
    assert "harmonic mean of per-dataset r_precision" in res.output
    assert "R@1" not in res.output and "recall@1" not in res.output


@pytest.mark.parametrize("args, message", [
    (["--metrics", "recall@99999999999999999999"], "K must be between 1 and"),
    (["--metrics", "recall@0"], "'recall@0': K must be between 1 and"),
    (["--metrics", "recall@ten"], "unknown metric 'recall@ten'"),
    (["--backend", "cuda-magic"], "unknown search backend 'cuda-magic'"),
])
def test_bad_options_are_one_line(tmp_path, args, message):
    path = _npz(tmp_path, **_arrays())
    res = CliRunner().invoke(cli, ["evaluate", str(path), *args])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_float_labels_are_one_line_error(tmp_path):
    path = _npz(tmp_path, **_arrays(labels=lambda lab: lab + 0.2))
    res = CliRunner().invoke(cli, ["evaluate", str(path)])
    assert res.exit_code == 2
    assert res.output.strip().startswith(f"error: {path}: labels must be integers or strings")
    assert len(res.output.strip().splitlines()) == 1


def test_string_labels_and_huge_float64_values_score_like_the_plain_input(tmp_path):
    plain = CliRunner().invoke(cli, ["evaluate", str(_npz(tmp_path, **_arrays())), "--json"])
    big = _arrays(scale=1e39, dtype=np.float64,
                  labels=lambda lab: np.array(["x", "y", "z", "w"])[lab])
    (tmp_path / "big").mkdir()
    res = CliRunner().invoke(cli, ["evaluate", str(_npz(tmp_path / "big", **big)), "--json"])
    assert plain.exit_code == 0 and res.exit_code == 0, res.output
    a, b = json.loads(plain.output), json.loads(res.output)
    assert a["universal"] == b["universal"] and a["per_dataset"] == b["per_dataset"]
