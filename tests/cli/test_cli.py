"""The CLI through click's runner and through the installed console script."""

from __future__ import annotations

import json
import re
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


def test_checkpoints_are_deleted_after_a_completed_run_unless_kept(env_root):
    work = env_root / "runs"
    res = invoke("run", "--method", "linear", *_sets(FAST))
    assert res.exit_code == 0, res.output
    assert list((env_root / "results" / "mini").glob("*.json"))
    assert not list(work.rglob("*.pt")), "a completed run left its checkpoints"
    res = invoke("run", "--method", "linear", "--keep-checkpoints", "--seed", "1", *_sets(FAST))
    assert res.exit_code == 0, res.output
    (kept,) = [p.parent for p in work.rglob("last.pt")]
    res = invoke("info", "--suite", "mini")
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "checkpoints: 1 run folder," in text and kept.name in text.replace(" ", "")


def test_help_and_behaviour_agree_on_where_records_and_checkpoints_go(env_root, tmp_path,
                                                                    monkeypatch):
    from umlbench import paths

    res = invoke("run", "--help")
    text = "".join(res.output.split())  # click wraps long paths (at hyphens, too)
    assert "RecordsgotoDIR/<suite>/<runid>.json" in text
    assert f"(defaultDIR:{paths.default_results_dir()})" in text  # absolute under env_root
    assert f"now{paths.default_work_dir()})" in text and "<dataroot>/runs" in text
    # --results-dir R writes R/<suite>/<run id>.json, as the help says.
    out = tmp_path / "mine"
    res = invoke("run", "--method", "off-the-shelf", "--results-dir", str(out), *_sets(FAST))
    assert res.exit_code == 0, res.output
    (path,) = (out / "mini").glob("*.json")
    assert json.loads(path.read_text())["run_id"] == path.stem
    # Without --work-dir (and $UMLBENCH_WORK) checkpoints live under the run's own data root.
    monkeypatch.delenv("UMLBENCH_WORK")
    assert paths.default_work_dir(tmp_path / "d") == tmp_path / "d" / "runs"


@pytest.mark.parametrize("width", [80, 120])
def test_list_and_info_tell_the_truth_at_80_and_120_columns(env_root, monkeypatch, width):
    import io

    from rich.console import Console

    import umlbench.cli.data as cli_module
    from umlbench import paths
    from umlbench.data.prepare import read_ready
    from umlbench.data.registry import suite_datasets

    def render(*args):
        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        monkeypatch.setattr(cli_module, "out", console)
        res = invoke(*args)
        assert res.exit_code == 0, res.output
        text = console.export_text()
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width
        assert "…" not in text
        return text

    listed = render("list")
    rows = {line.split()[0]: line.split() for line in listed.splitlines() if line.strip()}
    # Each mini dataset with its own class counts (mini-cub is 20/20, not CUB's 100/100).
    assert rows["mini-cub"][1:3] == ["mini", "20/20"]
    assert rows["mini-sop"][1:3] == ["mini", "500/500"]
    assert rows["cub"][1:4] == ["uml", "100/100", "5,864/5,924"]
    assert "100/100" not in " ".join(rows["mini-cub"])
    for word in ("puma", "curricularface", "fewshot-train", "map@1000"):
        assert word in rows
    info = render("info", "--suite", "mini")
    root = paths.data_root()
    for name in suite_datasets("mini"):
        train = read_ready(root, name)["counts"]["train"]
        (line,) = [li for li in info.splitlines() if re.search(rf"\b{name}\b", li)]
        assert " yes " in line and f"{train['images']:,}/{train['classes']:,}" in line
    assert "checkpoints: 0 run folders" in info
