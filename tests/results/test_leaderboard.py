"""Leaderboard: golden markdown/latex/csv tables, self-contained HTML, JSON, filters, bad files.

The golden files under ``tests/results/golden/`` were generated from the fixed records below and
checked by eye (bold best per column, mean ± std, seed counts, booktabs rules). To regenerate
them after an intended change of the output format, run
``UMLBENCH_UPDATE_GOLDEN=1 python -m pytest tests/results/test_leaderboard.py`` and review the
diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.results.test_record import make_record
from umlbench.errors import UserError
from umlbench.results.formats import render
from umlbench.results.leaderboard import build_board
from umlbench.results.record import RunRecord, write_record
from umlbench.results.store import load_reference, load_store, records_frame

GOLDEN = Path(__file__).parent / "golden"
SHIPPED_REFERENCE = Path(__file__).parents[2] / "results" / "reference"

# Per method: display name, trainable params, per seed (mini-cub R@1, mini-cars R@1, universal).
# Hand-made so that a different method wins each column: Full FT on CUB, Linear on Cars,
# PUMA on universal and the harmonic mean.
METHODS = {
    "puma": ("PUMA", 24_576, [(0.62, 0.56, 0.60), (0.64, 0.57, 0.61), (0.63, 0.58, 0.59)]),
    "full-ft": ("Full FT", 1_234_567, [(0.66, 0.50, 0.58), (0.65, 0.52, 0.57),
                                       (0.67, 0.51, 0.59)]),
    "linear": ("Linear probe", 8_320, [(0.40, 0.58, 0.45), (0.42, 0.60, 0.46),
                                       (0.41, 0.59, 0.44)]),
}

# A test fixture, not a published result: the numbers are made up to exercise reported rows.
REFERENCE_YAML = """\
rows:
  - method: paper-method
    display_name: Paper method
    suite: mini
    metric: recall@1
    values: {mini-cub: 0.50, mini-cars: 0.48, universal: 0.47, harmonic_mean: 0.49}
    trainable: 2000000
    citation: "test fixture (made-up numbers)"
"""


def _records() -> list[RunRecord]:
    out = []
    for method, (display, trainable, seeds) in METHODS.items():
        for seed, (cub, cars, universal) in enumerate(seeds):
            out.append(make_record(method=method, display=display, seed=seed, r1=(cub, cars),
                                   universal=universal, trainable=trainable,
                                   run_id=f"{method}-s{seed}"))
    failed = make_record(method="crashy", display="Crashy", run_id="crashy-s0")
    failed.status, failed.metrics, failed.error = "failed", {}, "RuntimeError: boom"
    oodml = make_record(method="puma", display="PUMA", run_id="puma-oodml-l1",
                        protocol={"name": "oodml", "dataset": "mini-cub", "level": 1, "fid": 20.0})
    return out + [failed, oodml]


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    for rec in _records():
        write_record(rec, tmp_path)
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "fixture.yaml").write_text(REFERENCE_YAML)
    return tmp_path


def _board(results_dir: Path, include_reference: bool = True, **kwargs):
    warnings: list[str] = []
    df = load_store(results_dir, include_reference=include_reference, warn=warnings.append)
    return build_board(df, "recall@1", **kwargs), warnings


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UMLBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from the golden file"


@pytest.mark.parametrize("fmt,name", [("markdown", "board.md"), ("latex", "board.tex"),
                                      ("csv", "board.csv")])
def test_golden_tables(results_dir, fmt, name):
    board, warnings = _board(results_dir)
    assert warnings == []
    _check_golden(name, render(board, fmt))


def test_board_contents(results_dir):
    board, _ = _board(results_dir)
    # Sorted by harmonic mean; failed runs and other protocols are left out.
    assert board.rows == ["PUMA", "Full FT", "Paper method (reported)", "Linear probe"]
    assert board.columns == ["mini-cub", "mini-cars", "universal", "harmonic_mean"]
    assert board.n.to_dict() == {"PUMA": 3, "Full FT": 3, "Linear probe": 3,
                                 "Paper method (reported)": 1}
    assert board.mean.at["PUMA", "mini-cub"] == pytest.approx(0.63)
    assert board.std.at["PUMA", "mini-cub"] == pytest.approx(0.01)
    assert board.reported.to_dict() == {"PUMA": False, "Full FT": False,
                                        "Linear probe": False, "Paper method (reported)": True}
    md = render(board, "markdown")
    assert "| PUMA | 3 | 63.00 ± 1.00 | 57.00 ± 1.00 | **60.00 ± 1.00** |" in md
    assert "**66.00 ± 1.00**" in md and "**59.00 ± 1.00**" in md  # CUB and Cars winners
    assert "| Paper method (reported) | – | 50.00 | 48.00 | 47.00 | 49.00 | 2.00M |" in md


def test_reference_rows_hidden_without_reference_frame(results_dir):
    board, _ = _board(results_dir, include_reference=False)
    assert board.rows == ["PUMA", "Full FT", "Linear probe"]
    for fmt in ("markdown", "latex", "csv", "html", "json"):
        assert "reported)" not in render(board, fmt).replace("reported elsewhere", "")


def _latex_body(tex: str) -> list[str]:
    lines = tex.splitlines()
    return lines[lines.index("\\midrule") + 1: lines.index("\\bottomrule")]


def test_latex_structure_or_compiles(results_dir, tmp_path):
    board, _ = _board(results_dir)
    tex = render(board, "latex")
    lines = tex.splitlines()
    assert lines.index("\\toprule") < lines.index("\\midrule") < lines.index("\\bottomrule")
    unescaped = re.sub(r"\\[{}]", "", tex)
    assert unescaped.count("{") == unescaped.count("}")
    body = _latex_body(tex)
    assert len(body) == len(board.rows)
    header = lines[lines.index("\\toprule") + 1]
    n_cells = header.count("&")
    assert all(row.count("&") == n_cells and row.endswith("\\\\") for row in body)
    assert [row.split(" & ")[0] for row in body] == board.rows
    assert "\\textbf{66.00 $\\pm$ 1.00}" in tex
    engine = shutil.which("pdflatex")
    if engine is None:
        return
    doc = tmp_path / "board_doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   + tex + "\\end{document}\n")
    proc = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_html_is_self_contained_and_sortable(results_dir):
    board, _ = _board(results_dir)
    page = render(board, "html")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)\s*=|https?://|@import|<link", page)
    assert "<script>" in page and "addEventListener" in page and "<style>" in page
    assert page.count("<tr") == len(board.rows) + 1  # header + one per row
    assert page.count('<tr class="reported">') == 1
    # The best mean bold, its std smaller and bound to it by no-break spaces.
    assert '<b>66.00</b><span class="sd">&nbsp;±&nbsp;1.00</span>' in page
    assert "td{white-space:nowrap}" in page


def test_json_round_trips(results_dir):
    board, _ = _board(results_dir)
    data = json.loads(render(board, "json"))
    assert data["metric"] == "recall@1" and data["columns"] == board.columns
    assert [r["method"] for r in data["rows"]] == board.rows
    for row in data["rows"]:
        expected_seeds = None if board.reported[row["method"]] else board.n[row["method"]]
        assert row["seeds"] == expected_seeds
        assert row["reported"] == bool(board.reported[row["method"]])
        assert row["trainable_params"] == board.params[row["method"]]
        for col, cell in row["values"].items():
            assert cell["mean"] == pytest.approx(board.mean.at[row["method"], col])
    assert data["rows"][2]["values"]["mini-cub"]["std"] is None  # one value: no std


def test_method_filter(results_dir):
    assert _board(results_dir, methods=["puma"])[0].rows == ["PUMA"]
    assert _board(results_dir, methods=["Linear probe", "full-ft"])[0].rows == [
        "Full FT", "Linear probe"]


def test_suite_filter(results_dir):
    write_record(make_record(method="puma", display="PUMA", suite="uml", run_id="puma-uml"),
                 results_dir)
    board, _ = _board(results_dir, suite="uml")
    assert board.rows == ["PUMA"] and board.n["PUMA"] == 1
    assert _board(results_dir, suite="mini")[0].n["PUMA"] == 3
    with pytest.raises(UserError, match="suite 'nope'"):
        _board(results_dir, suite="nope")


def test_protocol_filter(results_dir):
    board, _ = _board(results_dir, protocol="oodml")
    assert board.rows == ["PUMA / mini-cub"]
    assert board.columns == ["level:1", "auc"]
    assert "L1" in render(board, "markdown")
    with pytest.raises(UserError, match="no fewshot|no ooDML"):
        _board(results_dir, protocol="fewshot")


@pytest.mark.parametrize("key,order", [
    ("mini-cars", ["Linear probe", "PUMA", "Full FT", "Paper method (reported)"]),
    ("mini-cub", ["Full FT", "PUMA", "Paper method (reported)", "Linear probe"]),
    ("name", ["Full FT", "Linear probe", "PUMA", "Paper method (reported)"]),
    ("trainable", ["Linear probe", "PUMA", "Full FT", "Paper method (reported)"]),
])
def test_sort(results_dir, key, order):
    assert _board(results_dir, sort=key)[0].rows == order


def test_bad_sort_key_is_a_user_error(results_dir):
    with pytest.raises(UserError, match="cannot sort by 'bogus'"):
        _board(results_dir, sort="bogus")


def test_malformed_record_is_skipped_with_a_warning(results_dir):
    (results_dir / "truncated.json").write_text('{"schema_version": 1, "run_id": ')
    (results_dir / "incomplete.json").write_text(json.dumps({"schema_version": 1, "run_id": "x"}))
    board, warnings = _board(results_dir)
    assert len(warnings) == 2
    assert any("truncated.json" in w for w in warnings)
    assert any("incomplete.json" in w and "missing fields" in w for w in warnings)
    _check_golden("board.md", render(board, "markdown"))


def test_cli_leaderboard_filters(results_dir):
    from click.testing import CliRunner

    from umlbench.cli import cli

    (results_dir / "truncated.json").write_text("{")
    result = CliRunner().invoke(cli, [
        "leaderboard", "--results-dir", str(results_dir), "--format", "markdown",
        "--method", "puma", "--method", "linear", "--sort", "mini-cars", "--no-reference"])
    assert result.exit_code == 0, result.output
    rows = [line.split(" | ")[0].lstrip("| ") for line in result.stdout.splitlines()[2:]]
    assert rows == ["Linear probe", "PUMA"]
    assert "truncated.json" in result.stderr


def test_shipped_reference_has_parameter_counts_only():
    df = load_reference(SHIPPED_REFERENCE, warn=pytest.fail)
    rows = df[df["run_id"].str.startswith("reported:puma_paper:")].set_index("method")
    assert rows["trainable"].to_dict() == {"puma": 2_485_376,
                                           "full-finetune-vits16": 21_714_944,
                                           "dataset-specific-x8-vits16": 173_719_552}
    assert rows["value"].isna().all() and rows["scope"].isna().all()  # no accuracy numbers
    assert (rows["suite"] == "uml").all()
    assert rows["citation"].str.contains("2309.08944").all()
    assert 173_719_552 / 2_485_376 == pytest.approx(69.9, abs=0.05)  # the paper's "69 times"


def test_reference_rows_without_values_add_no_board_rows(results_dir):
    shutil.copy(SHIPPED_REFERENCE / "puma_paper.yaml", results_dir / "reference")
    board, warnings = _board(results_dir)
    assert warnings == []
    assert board.rows == ["PUMA", "Full FT", "Paper method (reported)", "Linear probe"]


def test_oodml_rows_grouped_by_dataset_and_bold_within_each(tmp_path):
    recs = []
    # mini-cars is listed first in the records; the board still puts mini-cub (suite order) first.
    for d, scores in (("mini-cars", {"puma": 0.30, "linear": 0.40}),
                      ("mini-cub", {"puma": 0.80, "linear": 0.70})):
        for m, v in scores.items():
            for lv in (1, 2):
                recs.append(make_record(method=m, display=m.upper(), universal=v - 0.1 * lv,
                                        run_id=f"{m}-{d}-{lv}",
                                        protocol={"name": "oodml", "dataset": d, "level": lv,
                                                  "fid": 10.0 * lv}))
    board = build_board(records_frame(recs), protocol="oodml")
    assert board.rows == ["PUMA / mini-cub", "LINEAR / mini-cub",
                          "LINEAR / mini-cars", "PUMA / mini-cars"]
    md = render(board, "markdown").splitlines()[2:]
    # Each dataset's block opens with its levels' FIDs; best per column within each dataset:
    # PUMA on mini-cub, LINEAR on mini-cars, never across.
    assert md[0] == "| FID (mini-cub) | – | 10.00 | 20.00 | – | – |"
    assert md[3].startswith("| FID (mini-cars) |")
    assert [line.count("**") // 2 for line in md] == [0, 3, 0, 0, 3, 0]
    assert json.loads(render(board, "json"))["fids"]["mini-cub"] == {"level:1": 10.0,
                                                                     "level:2": 20.0}
    assert "<td data-v=\"FID (mini-cub)\">FID (mini-cub)</td>" in render(board, "html")
    assert board.notes == ["FID per level, mini-cars: L1 10.00 · L2 20.00",
                           "FID per level, mini-cub: L1 10.00 · L2 20.00"]


# ---- the literature's Recall@K (issue 13 item 10): --metric recall@K and the paper view --------

# Recall@K per dataset as the records carry them (metrics.per_dataset[ds]["recall@K"]): each
# dataset's literature K list; made-up values, K-th entry = base + K / 10000.
PAPER_KS = {"mini-cub": (1, 2, 4, 8), "mini-sop": (1, 10, 100, 1000),
            "mini-inshop": (1, 10, 20, 30)}


def _paper_records(with_lists: bool = True) -> list[RunRecord]:
    out = []
    for method, base in (("puma", 0.6), ("linear", 0.5)):
        for seed in (0, 1):
            rec = make_record(method=method, display=method.upper(), seed=seed,
                              run_id=f"{method}-paper-s{seed}")
            per = {}
            for d, ks in PAPER_KS.items():
                ks = ks if with_lists else (1, 2, 4, 8)
                per[d] = {f"recall@{k}": base + seed / 100 + k / 10000 for k in ks}
            rec.metrics["per_dataset"] = per
            rec.metrics["summary"] = {"harmonic_mean": {"recall@1": base + seed / 100}}
            out.append(rec)
    return out


def test_paper_view_shows_each_datasets_own_k_list():
    from umlbench.results.leaderboard import build_paper_board, paper_recall_ks

    assert paper_recall_ks("sop") == paper_recall_ks("mini-sop") == (1, 10, 100, 1000)
    assert paper_recall_ks("inshop") == (1, 10, 20, 30)
    assert paper_recall_ks("mini-cub") == paper_recall_ks("aircraft") == (1, 2, 4, 8)
    board = build_paper_board(records_frame(_paper_records()))
    assert board.columns == (
        [f"mini-cub/recall@{k}" for k in (1, 2, 4, 8)]
        + [f"mini-sop/recall@{k}" for k in (1, 10, 100, 1000)]
        + [f"mini-inshop/recall@{k}" for k in (1, 10, 20, 30)]
        + ["universal/recall@1", "harmonic_mean/recall@1"])
    assert board.rows == ["PUMA", "LINEAR"] and board.notes == []
    # PUMA's SOP R@1000: mean over seeds 0.6 + {0, 0.01} + 0.1.
    assert board.mean.at["PUMA", "mini-sop/recall@1000"] == pytest.approx(0.705)
    md = render(board, "markdown").splitlines()
    assert md[0].startswith("| Method | Seeds | mini-CUB R@1 | mini-CUB R@2 |")
    assert "mini-SOP R@1000" in md[0] and "mini-In-Shop R@30" in md[0] and "HM R@1" in md[0]
    assert "| PUMA | 2 |" in md[2] and "70.50 ± 0.71" in md[2]


def test_paper_view_degrades_to_dashes_and_a_note_without_the_k_lists():
    from umlbench.results.leaderboard import build_paper_board

    board = build_paper_board(records_frame(_paper_records(with_lists=False)))
    assert board.mean["mini-sop/recall@10"].isna().all()
    assert board.mean.at["PUMA", "mini-sop/recall@1"] == pytest.approx(0.6051)
    assert len(board.notes) == 2
    assert board.notes[0].startswith("mini-sop: R@10, R@100, R@1000 missing")
    assert board.notes[1].startswith("mini-inshop: R@10, R@20, R@30 missing")
    md = render(board, "markdown")
    assert md.splitlines()[2].count("| – ") == 6
    for fmt in ("latex", "csv", "html", "json"):
        render(board, fmt)  # every format copes with the empty columns


def test_metric_recall_at_10_with_a_note_for_datasets_without_it():
    board = build_board(records_frame(_paper_records()), "recall@10")
    assert board.columns == ["mini-sop", "mini-inshop"]
    assert board.mean.at["LINEAR", "mini-inshop"] == pytest.approx(0.506)
    assert board.notes == ["recall@10 is not in the records of mini-cub; `--view paper` shows "
                           "each dataset's own Recall@K list"]


def test_cli_paper_view_prints_notes_on_stderr(tmp_path):
    from click.testing import CliRunner

    from umlbench.cli import cli

    for rec in _paper_records(with_lists=False):
        write_record(rec, tmp_path / "mini")
    res = CliRunner().invoke(cli, ["leaderboard", "--results-dir", str(tmp_path), "--view",
                                   "paper", "--format", "markdown"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("| Method | Seeds | mini-CUB R@1 |")
    assert res.stderr.count("note: ") == 2 and "mini-sop: R@10, R@100, R@1000" in res.stderr


def test_fewshot_board_has_one_row_per_support_size():
    """One few-shot run writes a record per (level, shots): the board never averages shots."""
    recs = [make_record(method="puma", display="PUMA", universal=0.5 + 0.01 * k + 0.1 * lv,
                        run_id=f"puma-l{lv}-k{k}",
                        protocol={"name": "fewshot", "dataset": "mini-cub", "level": lv,
                                  "shots": k, "fid": 10.0 * lv})
            for lv in (1, 2) for k in (2, 5, 10)]
    board = build_board(records_frame(recs), protocol="fewshot")
    assert sorted(board.rows) == ["PUMA / mini-cub / 10-shot", "PUMA / mini-cub / 2-shot",
                                  "PUMA / mini-cub / 5-shot"]
    assert board.mean.loc["PUMA / mini-cub / 5-shot", "level:2"] == pytest.approx(0.75)
    assert (board.n == 1).all()
