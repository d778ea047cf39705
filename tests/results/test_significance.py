"""`umlbench compare` and `leaderboard --significance` on synthetic records with per-query
sidecars: numbers checked against NumPy/scipy on the same outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from tests.results.test_record import data_block, make_record
from umlbench.cli import cli
from umlbench.metrics import paired
from umlbench.metrics.summary import harmonic_mean
from umlbench.results.perquery import PerQuery
from umlbench.results.record import write_record

N = {"mini-cub": 300, "mini-cars": 200}
# Per-query probability of a hit, shared by every method: hard queries are hard for all.
_P = {d: np.random.default_rng(i).uniform(0.2, 0.9, n) for i, (d, n) in enumerate(N.items())}


def _outcomes(skill: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + seed + int(skill * 1000))
    return {d: (rng.random(n) < np.clip(_P[d] + skill, 0, 1)).astype(float)
            for d, n in N.items()}


def _write(directory: Path, method: str, skill: float, seed: int = 0, *, display=None,
           sidecar=True, data="default") -> Path:
    """A record whose metrics are the means of its per-query outcomes, with its sidecar."""
    hits = _outcomes(skill, seed)
    ds = {d: np.full(len(h), d) for d, h in hits.items()}
    img = {d: np.array([f"img{i:04d}" for i in range(len(h))]) for d, h in hits.items()}
    ap = {d: np.clip(h * 0.8 + 0.1, 0, 1) for d, h in hits.items()}
    scopes = {d: (ds[d], img[d], {"recall@1": hits[d], "map@r": ap[d]}) for d in N}
    uni_hits = np.concatenate([hits[d] for d in N])
    scopes["universal"] = (np.concatenate([ds[d] for d in N]),
                           np.concatenate([img[d] for d in N]),
                           {"recall@1": uni_hits, "map@r": np.concatenate([ap[d] for d in N])})
    per_query = PerQuery.from_queries(scopes)
    rec = make_record(method=method, seed=seed, display=display or method,
                      r1=tuple(float(h.mean()) for h in hits.values()),
                      universal=float(uni_hits.mean()), data=data,
                      run_id=f"{method}-s{seed}")
    for d, h in hits.items():
        rec.metrics["per_dataset"][d].update({"recall@1": float(h.mean()), "num_queries": len(h),
                                              "map@r": float(ap[d].mean())})
    rec.metrics["universal"]["map@r"] = float(np.concatenate([ap[d] for d in N]).mean())
    return write_record(rec, directory, per_query=per_query if sidecar else None)


def _run(*args) -> tuple[int, str]:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res.exit_code, res.output


def test_compare_two_records_matches_numpy_and_scipy(tmp_path):
    a = _write(tmp_path, "base", 0.0)
    b = _write(tmp_path, "better", 0.06)
    code, text = _run("compare", a, b, "--format", "json", "--resamples", 500)
    assert code == 0, text
    out = json.loads(text)
    assert out["difference"] == "b - a" and out["correction"] == "holm"
    rows = {s["scope"]: s for s in out["scopes"]}
    assert list(rows) == ["mini-cub", "mini-cars", "universal", "harmonic_mean"]
    ha, hb = _outcomes(0.0, 0), _outcomes(0.06, 0)
    for d in N:
        assert rows[d]["diff"] == pytest.approx(100 * (hb[d].mean() - ha[d].mean()))
        assert rows[d]["low"] <= rows[d]["diff"] <= rows[d]["high"]
        only_a = int(((ha[d] == 1) & (hb[d] == 0)).sum())
        only_b = int(((hb[d] == 1) & (ha[d] == 0)).sum())
        assert (rows[d]["only_a"], rows[d]["only_b"]) == (only_a, only_b)
        assert rows[d]["mcnemar_p"] == stats.binomtest(only_b, only_a + only_b, 0.5).pvalue
    hm = 100 * (harmonic_mean([hb[d].mean() for d in N]) - harmonic_mean([ha[d].mean()
                                                                        for d in N]))
    assert rows["harmonic_mean"]["diff"] == pytest.approx(hm)
    assert rows["harmonic_mean"]["mcnemar_p"] is None
    ps = [rows[s]["p"] for s in rows]
    np.testing.assert_allclose([rows[s]["p_holm"] for s in rows], paired.holm(ps))
    assert "Holm-adjusted across the 4 scopes" in out["method"]
    # Fixed seed: identical output; another seed moves the interval.
    assert _run("compare", a, b, "--format", "json", "--resamples", 500)[1] == text
    assert _run("compare", a, b, "--format", "json", "--resamples", 500, "--seed", 1)[1] != text


def test_compare_rows_by_name_with_seeds(tmp_path):
    for s in range(3):
        _write(tmp_path, "base", 0.0, s, display="Base")
        _write(tmp_path, "better", 0.05, s, display="Better model")
    code, text = _run("compare", "--results-dir", tmp_path, "--suite", "mini", "Base",
                      "Better model", "--format", "markdown", "--resamples", 300)
    assert code == 0, text
    assert "3 seeds" in text and "two levels, seeds then queries" in text
    assert "McNemar needs one run per row" in text
    assert "| harmonic mean |" in text
    code, text = _run("compare", "--results-dir", tmp_path, "Base", "better", "--format", "csv",
                      "--resamples", 200, "--metric", "map@r")
    assert code == 0, text
    assert text.splitlines()[0].startswith("scope,queries,a,b,diff,low,high,p,p_holm")


def test_compare_terminal_table(tmp_path):
    a = _write(tmp_path, "base", 0.0)
    b = _write(tmp_path, "better", 0.1)
    code, text = _run("compare", a, b, "--resamples", 200)
    assert code == 0, text
    assert "harmonic mean" in text and "B − A" in text and "p Holm" in text


@pytest.mark.parametrize("problem", ["no-sidecar", "other-data", "unknown-row"])
def test_compare_mistakes_are_one_line_errors(tmp_path, problem):
    a = _write(tmp_path, "base", 0.0)
    if problem == "no-sidecar":
        args = [a, _write(tmp_path, "old", 0.0, sidecar=False)]
        expect = "no per-query outcomes"
    elif problem == "other-data":
        args = [a, _write(tmp_path, "other", 0.0, data=data_block(image_size=64))]
        expect = "different data"
    else:
        args = ["--results-dir", tmp_path, "base", "nobody"]
        expect = "'nobody' matches no row"
    code, text = _run("compare", *args, "--resamples", 100)
    assert code == 2
    assert text.startswith("error: ") and expect in text and text.count("\n") == 1


def test_leaderboard_significance_marks_the_tied_group(tmp_path):
    _write(tmp_path, "top", 0.08)
    _write(tmp_path, "close", 0.075)  # indistinguishable from the top on 500 queries
    _write(tmp_path, "far", -0.15)
    _write(tmp_path, "old", 0.0, sidecar=False)
    code, text = _run("leaderboard", "--results-dir", tmp_path, "--significance", "--format",
                      "json", "--resamples", 500)
    assert code == 0, text
    out = json.loads(text[text.index("{"):])
    cells = {r["method"]: r["values"] for r in out["rows"]}
    for col in ("mini-cub", "universal", "harmonic_mean"):
        assert cells["top"][col]["tied_for_top"] and cells["close"][col]["tied_for_top"]
        assert not cells["far"][col]["tied_for_top"]
        assert cells["old"][col]["low"] is None and not cells["old"][col]["tied_for_top"]
        top = cells["top"][col]
        assert top["low"] < top["mean"] < top["high"]
    assert "Holm" in out["significance"] and "500 resamples" in out["significance"]
    assert any("No per-query outcomes" in f and "old" in f for f in out["footnotes"])
    code, csv_text = _run("leaderboard", "--results-dir", tmp_path, "--significance",
                          "--format", "csv", "--resamples", 500)
    assert "universal_low,universal_high,universal_tied" in csv_text
    assert csv_text.rstrip().splitlines()[-1].startswith("# ")
    code, md = _run("leaderboard", "--results-dir", tmp_path, "--significance", "--format",
                    "markdown", "--resamples", 500)
    far_line = next(line for line in md.splitlines() if line.startswith("| far"))
    assert "**" not in far_line
    assert "Note: Bold: tied for the top" in md
    code, html = _run("leaderboard", "--results-dir", tmp_path, "--significance", "--format",
                      "html", "--resamples", 500)
    assert code == 0 and "tied for the top" in html and "[" in html
    code, term = _run("leaderboard", "--results-dir", tmp_path, "--significance",
                      "--resamples", 500)
    assert code == 0 and "note: Bold: tied for the top" in term


def test_leaderboard_significance_only_for_uml_metric_view(tmp_path):
    _write(tmp_path, "top", 0.08)
    code, text = _run("leaderboard", "--results-dir", tmp_path, "--significance", "--view",
                      "paper")
    assert code == 2 and "--significance applies to" in text


def test_plot_draws_the_intervals_as_error_bars(tmp_path):
    from matplotlib.container import BarContainer

    from umlbench.results.grouping import deduplicate
    from umlbench.results.plots import build_figure
    from umlbench.results.significance import plot_intervals
    from umlbench.results.store import load_store

    _write(tmp_path, "top", 0.08)
    _write(tmp_path, "old", 0.0, sidecar=False)
    df, _ = deduplicate(load_store(tmp_path))
    intervals, missing = plot_intervals(df, "recall@1", tmp_path, resamples=300)
    assert missing == ["old"]
    fig = build_figure(df, "datasets", intervals=intervals)
    bars = {b.get_label(): b for b in fig.axes[0].containers if isinstance(b, BarContainer)}
    iv = intervals[intervals["label"] == "top"].set_index("scope")
    segments = bars["top"].errorbar.lines[2][0].get_segments()
    for scope, seg in zip(["mini-cub", "mini-cars", "universal", "harmonic_mean"], segments):
        assert sorted(seg[:, 1]) == pytest.approx([iv.at[scope, "low"], iv.at[scope, "high"]])
    # No interval, no bar: matplotlib keeps no drawable segment for NaN errors.
    assert all(np.isnan(np.asarray(s, float)).all() or len(s) == 0
               for s in bars["old"].errorbar.lines[2][0].get_segments())
    code, text = _run("plot", "--kind", "params", "--results-dir", tmp_path, "--out",
                      tmp_path / "p.png", "--resamples", 200)
    assert code == 0, text
    assert "bootstrap intervals over queries" in text and "no interval, for old" in text
    assert (tmp_path / "p.png").stat().st_size > 0


def _fewshot(directory: Path, method: str, gain: float) -> Path:
    """A few-shot record: 6 episodes of 40 queries each (their own scopes)."""
    rng = np.random.default_rng(int(gain * 100) + 3)
    scopes, means = {}, []
    for e in range(6):
        hits = (rng.random(40) < 0.4 + gain + 0.05 * (e % 3)).astype(float)
        scopes[f"episode-{e}"] = (np.full(40, "mini-cub"),
                                  np.array([f"img{e}-{i:02d}" for i in range(40)]),
                                  {"recall@1": hits})
        means.append(hits.mean())
    rec = make_record(method=method, run_id=f"{method}-fs",
                      protocol={"name": "fewshot", "dataset": "mini-cub", "shots": 2})
    rec.metrics = {"per_dataset": {}, "universal": {"recall@1": float(np.mean(means))},
                   "summary": {}}
    write_record(rec, directory, per_query=PerQuery.from_queries(scopes, episodic=True))
    return directory / f"{method}-fs.json", np.array(means)


def test_compare_fewshot_records_episode_by_episode(tmp_path):
    (a, ma), (b, mb) = _fewshot(tmp_path, "zero", 0.0), _fewshot(tmp_path, "adapted", 0.15)
    code, text = _run("compare", a, b, "--format", "json")
    assert code == 0, text
    (scope,) = json.loads(text)["scopes"]
    d = mb - ma
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert scope["scope"] == "episodes" and scope["queries"] == 6
    assert (scope["diff"], scope["low"], scope["high"]) == pytest.approx(
        (100 * d.mean(), 100 * low, 100 * high))
    assert scope["p"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert "Student-t" in json.loads(text)["method"]


def _oodml(directory: Path, method: str, base: float, level: int, seed: int = 0) -> None:
    rng = np.random.default_rng(level * 10 + seed + int(base * 100))
    hits = (rng.random(250) < base - 0.06 * level).astype(float)
    per_query = PerQuery.from_queries({"universal": (
        np.full(250, "mini-cub"), np.array([f"img{i:03d}" for i in range(250)]),
        {"recall@1": hits})})
    rec = make_record(method=method, seed=seed, universal=float(hits.mean()),
                      run_id=f"{method}-l{level}-s{seed}",
                      protocol={"name": "oodml", "dataset": "mini-cub", "level": level,
                                "fid": 20.0 * level})
    rec.metrics = {"per_dataset": {}, "universal": {"recall@1": float(hits.mean())},
                   "summary": {}}
    write_record(rec, directory, per_query=per_query)


def test_shift_plot_bands_are_the_intervals(tmp_path):
    from matplotlib.collections import PolyCollection

    from umlbench.results.grouping import deduplicate
    from umlbench.results.plots import build_figure
    from umlbench.results.significance import plot_intervals
    from umlbench.results.store import load_store

    for lv in (1, 2, 3):
        _oodml(tmp_path, "strong", 0.8, lv)
        _oodml(tmp_path, "weak", 0.6, lv)
    df, _ = deduplicate(load_store(tmp_path))
    intervals, missing = plot_intervals(df, "recall@1", tmp_path, protocol="oodml",
                                        resamples=300)
    assert missing == [] and len(intervals) == 6
    fig = build_figure(df, "shift", intervals=intervals)
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    strong = intervals[intervals["label"] == "strong"].sort_values("level")
    ys = np.concatenate([p.vertices[:, 1] for p in bands[0].get_paths()])
    assert ys.min() == pytest.approx(strong["low"].min())
    assert ys.max() == pytest.approx(strong["high"].max())
    code, text = _run("plot", "--kind", "shift", "--results-dir", tmp_path, "--out",
                      tmp_path / "shift.png", "--resamples", 200)
    assert code == 0, text


def test_oodml_leaderboard_significance_per_level_and_auc(tmp_path):
    """ooDML boards: every level is its own split, bootstrapped on its own; rows are compared
    within their dataset; the AUC interval is the trapezoid of the per-level replicates."""
    from umlbench.protocols.oodml_summary import normalised_auc

    for lv in (1, 2, 3):
        _oodml(tmp_path, "strong", 0.8, lv)
        _oodml(tmp_path, "close", 0.79, lv)
        _oodml(tmp_path, "weak", 0.5, lv)
    _oodml(tmp_path, "partial", 0.9, 1)  # one level only: no AUC, no interval there
    code, text = _run("leaderboard", "--results-dir", tmp_path, "--protocol", "oodml",
                      "--significance", "--format", "json", "--resamples", 400)
    assert code == 0, text
    out = json.loads(text[text.index("{"):])
    cells = {r["method"].removesuffix(" / mini-cub"): r["values"] for r in out["rows"]}
    for lv in ("level:2", "level:3", "auc"):
        assert cells["strong"][lv]["tied_for_top"] and cells["close"][lv]["tied_for_top"], lv
        assert not cells["weak"][lv]["tied_for_top"], lv
        c = cells["strong"][lv]
        assert c["low"] < c["mean"] < c["high"], lv
    assert cells["partial"]["level:1"]["tied_for_top"]  # the best of level 1
    assert cells["partial"]["auc"]["low"] is None
    # The AUC interval: the trapezoid of each resample's per-level means (levels resampled
    # with seeds 0, 1, 2 here), against the per-level intervals it must lie between.
    weights = [normalised_auc([1, 2, 3], np.eye(3)[i]) for i in range(3)]
    assert sum(weights) == pytest.approx(1.0)
    strong = cells["strong"]
    lows = sum(w * strong[f"level:{k}"]["low"] for w, k in zip(weights, (1, 2, 3)))
    highs = sum(w * strong[f"level:{k}"]["high"] for w, k in zip(weights, (1, 2, 3)))
    assert lows < strong["auc"]["low"] < strong["auc"]["mean"] < strong["auc"]["high"] < highs
    assert "each level resampled on its own" in out["significance"]
    code, md = _run("leaderboard", "--results-dir", tmp_path, "--protocol", "oodml",
                    "--significance", "--format", "markdown", "--resamples", 400)
    assert code == 0 and "**" in md
    code, text = _run("leaderboard", "--results-dir", tmp_path, "--protocol", "fewshot",
                      "--significance")
    assert code == 2 and "--significance applies to" in text
