"""Plots: each kind draws the expected artists, writes PNG/SVG, and refuses to draw nothing."""

from __future__ import annotations

import struct
from pathlib import Path

import matplotlib.colors
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer

from tests.results.test_record import make_record
from umlbench.errors import UserError
from umlbench.results.plots import (
    build_figure,
    datasets_figure,
    fewshot_figure,
    metric_label,
    params_figure,
    plot_kind,
    shift_figure,
)
from umlbench.results.record import RunRecord
from umlbench.results.store import load_reference, records_frame

SHIPPED_REFERENCE = Path(__file__).parents[2] / "results" / "reference"
# display name -> (method id, trainable params, base Recall@1)
METHODS = {"PUMA": ("puma", 24_576, 0.60), "Full FT": ("full-ft", 1_234_567, 0.55),
           "Linear probe": ("linear", 8_320, 0.40)}
SEEDS = (0, 1, 2)


def _uml(suite: str = "mini") -> list[RunRecord]:
    return [make_record(method=m, display=name, seed=s, r1=(base + s / 100, base - 0.05),
                        universal=base - 0.02 + s / 100, trainable=tr, suite=suite,
                        run_id=f"{m}-{suite}-s{s}")
            for name, (m, tr, base) in METHODS.items() for s in SEEDS]


def _oodml(datasets=("mini-cub",), levels=(1, 2, 3, 4)) -> list[RunRecord]:
    return [make_record(method=m, display=name, seed=s, universal=base - 0.05 * lv + s / 100,
                        trainable=tr, run_id=f"{m}-{d}-l{lv}-s{s}",
                        protocol={"name": "oodml", "dataset": d, "level": lv, "fid": 30.0 * lv})
            for name, (m, tr, base) in METHODS.items() for d in datasets for lv in levels
            for s in SEEDS]


def _fewshot(shots=(2, 5)) -> list[RunRecord]:
    out = []
    for name, (m, tr, base) in METHODS.items():
        for k in shots:
            for s in SEEDS:
                rec = make_record(method=m, display=name, seed=s, trainable=tr,
                                  run_id=f"{m}-k{k}-s{s}",
                                  protocol={"name": "fewshot", "dataset": "mini-cub", "shots": k})
                rec.metrics["extra"] = {"zero_shot@recall@1": base - 0.1,
                                        "few_shot@recall@1": base - 0.1 + 0.02 * k}
                out.append(rec)
    return out


# Test fixture with made-up numbers (not a published result), to exercise reported rows.
REPORTED = pd.DataFrame([
    {"run_id": "reported:fixture:paper", "method": "paper", "display_name": "Paper method",
     "suite": "mini", "protocol": "uml", "seed": None, "status": "reported", "scope": scope,
     "metric": "recall@1", "value": value, "trainable": 2_000_000, "total": None,
     "source": "reported", "citation": "test fixture"}
    for scope, value in [("mini-cub", 0.5), ("mini-cars", 0.45), ("universal", 0.44),
                         ("harmonic_mean", 0.47)]])


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.concat([records_frame(_uml() + _oodml() + _fewshot()), REPORTED],
                     ignore_index=True)


def _bars(ax) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_metric_labels_have_units():
    assert metric_label("recall@1") == "Recall@1 (%)"
    assert metric_label("map@r") == "MAP@R (%)"
    assert metric_label("r_precision") == "R-Precision (%)"


def test_datasets_bars_per_method_and_group(frame):
    fig = build_figure(frame, "datasets")
    ax = fig.axes[0]
    bars = _bars(ax)
    assert len(bars) == 4  # 3 measured methods + 1 reported
    assert sum(len(b) for b in bars) == 4 * 4  # groups: CUB, Cars, universal, HM
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mini-CUB", "mini-Cars",
                                                            "Universal", "HM"]
    assert ax.get_ylabel() == "Recall@1 (%)"
    assert "Paper method (reported)" in _legend_texts(fig)
    puma = next(b for b in bars if b.get_label() == "PUMA")
    assert puma[0].get_height() == pytest.approx(61.0)  # mean of 60, 61, 62 (percent)
    assert puma.errorbar is not None  # seed std
    assert all(fig.get_size_inches() >= (3.4, 2.0)) and fig.get_size_inches()[0] <= 3.6


def test_datasets_method_filter(frame):
    ax = datasets_figure(frame, methods=["puma", "Linear probe"]).axes[0]
    assert sorted(b.get_label() for b in _bars(ax)) == ["Linear probe", "PUMA"]


def test_params_log_axis_points_and_reference_lines(frame):
    fig = params_figure(frame)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "Trainable parameters (log scale)"
    assert ax.get_ylabel() == "Harmonic mean Recall@1 (%)"
    points = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(points) == 4
    hollow = [c for c in points if c.lines[0].get_markerfacecolor() == "none"]
    assert [c.get_label() for c in hollow] == ["Paper method (reported)"]


def test_params_reported_counts_are_lines_not_points():
    # The shipped PUMA-paper rows have parameter counts only (no accuracy): they must be
    # vertical reference lines, never points.
    ref = load_reference(SHIPPED_REFERENCE, warn=pytest.fail)
    df = pd.concat([records_frame(_uml(suite="uml")), ref], ignore_index=True)
    fig = build_figure(df, "params")
    ax = fig.axes[0]
    assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 3
    vlines = [line for line in ax.lines if list(line.get_xdata()) == [line.get_xdata()[0]] * 2]
    assert sorted(line.get_xdata()[0] for line in vlines) == [2_485_376, 21_714_944,
                                                             173_719_552]
    labels = _legend_texts(fig)
    assert any("(reported)" in t and "2.49M" in t for t in labels)
    assert any("174M" in t for t in labels)
    # A different suite's parameter scale is not mixed in.
    mini = params_figure(pd.concat([records_frame(_uml()), ref], ignore_index=True))
    assert not any("reported" in t for t in _legend_texts(mini))


def test_params_without_accuracy_is_a_user_error():
    ref = load_reference(SHIPPED_REFERENCE, warn=pytest.fail)
    with pytest.raises(UserError, match="harmonic-mean"):
        params_figure(ref)


def test_shift_lines_per_method_and_dataset(frame):
    fig = shift_figure(frame)
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 3  # std bands
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["L1\n30", "L2\n60", "L3\n90", "L4\n120"]  # FID shown for one dataset
    assert "FID" in ax.get_xlabel() and ax.get_ylabel() == "Universal Recall@1 (%)"
    two = records_frame(_oodml(datasets=("mini-cub", "mini-cars"), levels=(1, 2)))
    fig2 = shift_figure(two)  # one panel per dataset, in suite order, each with its own FIDs
    assert [ax.get_title() for ax in fig2.axes] == ["mini-CUB", "mini-Cars"]
    assert [len(ax.lines) for ax in fig2.axes] == [3, 3]
    assert [t.get_text() for t in fig2.axes[1].get_xticklabels()] == ["L1\n30", "L2\n60"]
    assert len(fig2.legends[0].get_texts()) == 3  # one shared legend entry per method
    assert len(shift_figure(two, dataset="mini-cars").axes) == 1


def test_fewshot_lines_per_method(frame):
    fig = fewshot_figure(frame)
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    assert list(ax.lines[0].get_xdata()) == [0, 2, 5]  # zero-shot drawn at 0 shots
    assert ax.get_ylabel() == "Recall@1 (%)" and "shots" in ax.get_xlabel()
    puma = next(line for line in ax.lines if line.get_label() == "PUMA")
    assert list(puma.get_ydata()) == pytest.approx([50.0, 54.0, 60.0])


def test_fewshot_levels_get_one_line_each_and_datasets_a_panel():
    recs = []
    for d in ("mini-cub", "mini-cars"):
        for lv in (1, 2, 3):
            rec = make_record(method="puma", display="PUMA", seed=0, run_id=f"fs-{d}-{lv}",
                              protocol={"name": "fewshot", "dataset": d, "level": lv, "shots": 2})
            rec.metrics["extra"] = {"zero_shot@recall@1": 0.6 - 0.1 * lv,
                                    "few_shot@recall@1": 0.7 - 0.1 * lv}
            recs.append(rec)
    fig = fewshot_figure(records_frame(recs))
    assert [ax.get_title() for ax in fig.axes] == ["mini-CUB", "mini-Cars"]
    lines = fig.axes[0].lines
    assert [line.get_label() for line in lines] == ["L1", "L2", "L3"]
    assert list(lines[2].get_ydata()) == pytest.approx([30.0, 40.0])
    assert len({line.get_color() for line in lines}) == 3  # easy-to-hard colour ramp


def test_fewshot_bands_are_the_stored_cis_and_zero_shot_comes_from_fewest_shots():
    recs = []
    for lv in range(1, 9):
        for k in (2, 5, 10):
            rec = make_record(method="puma", display="PUMA", seed=0, run_id=f"fs-{lv}-{k}",
                              protocol={"name": "fewshot", "dataset": "mini-cars", "level": lv,
                                        "shots": k})
            rec.metrics["extra"] = {
                "zero_shot@recall@1": 0.6 + 0.001 * k, "zero_shot@recall@1_ci95": 0.002 * k,
                "few_shot@recall@1": 0.6 + 0.01 * k, "few_shot@recall@1_ci95": 0.01 + lv / 1000}
            recs.append(rec)
    fig = fewshot_figure(records_frame(recs))
    ax = fig.axes[0]
    assert len({line.get_color() for line in ax.lines}) == 8  # eight distinguishable levels
    assert len({line.get_marker() for line in ax.lines}) == 8
    l3 = next(line for line in ax.lines if line.get_label() == "L3")
    # Zero-shot at 0 shots from the 2-shot record (60.2 +- 0.4), few-shot points +- 1.3.
    assert list(l3.get_ydata()) == pytest.approx([60.2, 62.0, 65.0, 70.0])
    band = ax.collections[2].get_paths()[0].vertices  # L3's band: (x, y) around the line
    lo = {x: y for x, y in band[1:5]}
    assert lo[0.0] == pytest.approx(60.2 - 0.4) and lo[5.0] == pytest.approx(65.0 - 1.3)


def _png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_plot_kind_writes_png_and_svg(frame, tmp_path):
    written = plot_kind(frame, "datasets", tmp_path / "figs" / "bars")
    assert written == [tmp_path / "figs" / "bars.png", tmp_path / "figs" / "bars.svg"]
    width, _ = _png_size(written[0])
    assert width == pytest.approx(3.5 * 300, abs=2)  # single column at 300 dpi
    svg = written[1].read_text()
    assert svg.lstrip().startswith("<?xml") and "Recall@1 (%)" in svg  # text kept as text
    assert plot_kind(frame, "shift", tmp_path / "shift.svg") == [tmp_path / "shift.svg"]
    assert not (tmp_path / "shift.png").exists()


@pytest.mark.parametrize("kind,match", [
    ("datasets", "no UML records"),
    ("params", "no harmonic-mean results"),
    ("shift", "no ooDML records with metric recall@1.*--protocol oodml --level all"),
    ("fewshot", "no few-shot records"),
])
def test_missing_data_is_a_user_error(kind, match, tmp_path):
    only_other = records_frame({"datasets": _oodml, "params": _oodml, "shift": _fewshot,
                                "fewshot": _oodml}[kind]())
    with pytest.raises(UserError, match=match):
        plot_kind(only_other, kind, tmp_path / "x")
    assert not list(tmp_path.iterdir())  # never an empty figure


def test_other_user_errors(frame, tmp_path):
    with pytest.raises(UserError, match="unknown plot kind"):
        plot_kind(frame, "pie", tmp_path / "x")
    with pytest.raises(UserError, match=r"\.png or \.svg"):
        plot_kind(frame, "datasets", tmp_path / "x.pdf")
    with pytest.raises(UserError, match="metric nmi"):
        build_figure(frame, "datasets", metric="nmi")
    both = pd.concat([frame, records_frame(_uml(suite="uml"))], ignore_index=True)
    with pytest.raises(UserError, match="several suites.*--suite"):
        build_figure(both, "datasets")
    assert len(_bars(build_figure(both, "datasets", suite="uml").axes[0])) == 3


# ---- the datasets figure with many methods (issue 16) -----------------------------------------

def _many(n_main: int = 8) -> pd.DataFrame:
    """``n_main`` main methods, plus two PUMA ablations, 2 seeds each, high Recall@1 (60-80)."""
    recs = []
    names = [(f"m{i}", f"Method {i}") for i in range(n_main - 1)] + [("puma", "PUMA")]
    names += [("puma", "PUMA (adapters only)"), ("puma", "PUMA (prompt pool only)")]
    for j, (m, name) in enumerate(names):
        for s in (0, 1):
            v = 0.60 + 0.02 * j + 0.005 * s
            recs.append(make_record(method=m, display=name, seed=s, r1=(v, v + 0.1),
                                    universal=v, trainable=1000 * (j + 1),
                                    run_id=f"{m}-{j}-s{s}"))
    return records_frame(recs)


def test_ablations_hidden_unless_asked_for_or_named():
    df = _many()
    labels = lambda fig: {b.get_label() for b in _bars(fig.axes[0])}  # noqa: E731
    main = labels(build_figure(df, "datasets"))
    assert "PUMA" in main and not any("(" in lab for lab in main) and len(main) == 8
    assert len(labels(build_figure(df, "datasets", ablations=True))) == 10
    named = labels(build_figure(df, "datasets", methods=["PUMA", "PUMA (adapters only)"]))
    assert named == {"PUMA", "PUMA (adapters only)"}
    # A loss or setting in parentheses is a main method when no bare row of that name exists.
    ft = records_frame([make_record(method="finetune", display="Fine-tuning, unified (ArcFace)",
                                    run_id="ft")])
    assert {b.get_label() for b in _bars(build_figure(ft, "datasets").axes[0])} == {
        "Fine-tuning, unified (ArcFace)"}


def test_many_methods_fitted_range_side_legend_and_distinct_neighbours():
    fig = build_figure(_many(), "datasets")
    ax = fig.axes[0]
    bars = _bars(ax)
    heights = [r.get_height() for b in bars for r in b]
    bottom, top = ax.get_ylim()
    assert 0 < bottom <= min(heights) - 1 and top >= max(heights)  # fitted, not from 0
    assert bottom % 5 == 0
    # Best harmonic mean first; every bar of a group a different colour, neighbours included.
    hm = [b[-1].get_height() for b in bars]
    assert hm == sorted(hm, reverse=True)
    colors = [tuple(b[0].get_facecolor()) for b in bars]
    assert len(set(colors)) == len(colors)
    # The legend sits beside the axes, not on them, and lists the bars in their order.
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1
    assert _legend_texts(fig) == [b.get_label() for b in bars]
    assert fig.get_size_inches()[0] == pytest.approx(7.0)  # full text width


def test_a_method_has_the_same_colour_in_the_datasets_and_params_figures():
    df = _many()
    bars = {b.get_label(): tuple(b[0].get_facecolor())
            for b in _bars(build_figure(df, "datasets").axes[0])}
    points = {c.get_label(): tuple(matplotlib.colors.to_rgba(c.lines[0].get_color()))
              for c in build_figure(df, "params").axes[0].containers
              if isinstance(c, ErrorbarContainer)}
    assert points and all(bars[k] == v for k, v in points.items())


def test_fewshot_protocol_keeps_adaptation_and_few_shot_training_apart():
    """A folder holding ooDML few-shot records and PUMA's fewshot-train records: --protocol
    draws one of them, with its own x-axis, and is refused for other kinds."""
    train = [make_record(method="puma", display="PUMA (adapters only)", seed=0, trainable=10,
                         universal=0.4 + 0.02 * k, run_id=f"puma-train-k{k}",
                         protocol={"name": "fewshot-train", "shots": k})
             for k in (1, 2, 4, 8, 16)]
    df = records_frame(_fewshot() + _uml() + train)
    fig = build_figure(df, "fewshot", protocol="fewshot-train")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Training images per class (K)"
    # The ablation-looking label is kept: it is alone in its protocol. No uml run shares its
    # name and none is off-the-shelf here, so no reference line.
    [line] = ax.lines
    assert list(line.get_xdata()) == [1, 2, 4, 8, 16]
    assert list(line.get_ydata()) == pytest.approx([42.0, 44.0, 48.0, 56.0, 72.0])
    # With uml runs of the same method and of the frozen backbone: two dotted reference lines
    # at their mean universal value over seeds.
    train = [make_record(method="puma", display="PUMA", seed=0, trainable=10,
                         universal=0.4 + 0.02 * k, run_id=f"puma-train-k{k}",
                         protocol={"name": "fewshot-train", "shots": k}) for k in (1, 4, 16)]
    frozen = [make_record(method="off-the-shelf", display="Off-the-shelf", seed=s,
                          universal=0.5, run_id=f"ots-s{s}") for s in SEEDS]
    same = [make_record(method="puma", display="PUMA", seed=s, universal=0.6 + s / 100,
                        run_id=f"puma-s{s}") for s in SEEDS]
    fig = build_figure(records_frame(train + frozen + same), "fewshot", protocol="fewshot-train")
    refs = {ln.get_label(): ln.get_ydata()[0] for ln in fig.axes[0].lines
            if ln.get_linestyle() == ":"}
    assert refs == pytest.approx({"PUMA, all training images": 61.0,
                                  "Off-the-shelf (frozen backbone)": 50.0})
    fig = build_figure(df, "fewshot", protocol="fewshot")
    assert "shots" in fig.axes[0].get_xlabel() and len(fig.axes[0].lines) == 3
    with pytest.raises(UserError, match="--kind fewshot"):
        build_figure(df, "shift", protocol="fewshot")
