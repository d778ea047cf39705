"""UML figures: per-dataset bars (``datasets``) and accuracy against trainable parameters
(``params``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from umlbench.results.plots.style import (
    _DASHES,
    PAGE_WIDTH_IN,
    WIDTH_IN,
    _for,
    _legend,
    _legend_height,
    _new_figure,
    _one_suite,
    _scope_order,
    _scope_title,
    _select,
    _side_legend,
    _stats,
    _uml_styles,
    metric_label,
)


def _errors(stats: pd.DataFrame, intervals: pd.DataFrame | None) -> pd.DataFrame:
    """``stats`` (label, scope?, mean, std) with ``lo``/``hi``: the error bar below and above
    the mean, from ``intervals`` (percent) where given (NaN where a label has none), else the
    seed std on both sides."""
    if intervals is None:
        return stats.assign(lo=stats["std"].fillna(0.0), hi=stats["std"].fillna(0.0))
    keys = ["label", "scope"] if "scope" in stats.columns else ["label"]
    iv = intervals if keys == ["label", "scope"] else intervals[
        intervals["scope"] == "harmonic_mean"]
    merged = stats.merge(iv[keys + ["low", "high"]].astype({"low": float, "high": float}),
                         on=keys, how="left")
    # NaN where a label has no interval: matplotlib draws no bar (nor cap) there.
    return merged.assign(lo=(merged["mean"] - merged["low"]).clip(lower=0),
                         hi=(merged["high"] - merged["mean"]).clip(lower=0))


def datasets_figure(df: pd.DataFrame, metric: str = "recall@1", *, suite: str | None = None,
                    methods: list[str] | None = None,
                    intervals: pd.DataFrame | None = None) -> Figure:
    """Grouped bars: one group per dataset, then universal and harmonic mean; one bar per method,
    methods in order of harmonic mean (best first) with the legend in that order beside the
    axes, and the y-axis fitted to the bars (they need not start at 0).

    Raises:
        UserError: no completed UML rows with ``metric`` (after the filters).
    """
    sel = _select(df, ("uml",), suite, methods)
    # The arithmetic mean is left out: the figure shows datasets, universal and HM only.
    sel = sel[(sel["metric"] == metric) & sel["value"].notna()
              & ~sel["scope"].isin(["extra", "arithmetic_mean"]) & sel["scope"].notna()]
    _for(sel, "UML records", metric, suite,
         "run `umlbench run` first or change --metric/--suite/--method")
    _one_suite(sel, suite)
    stats = _errors(_stats(sel, ["label", "scope"]), intervals)
    groups = _scope_order(list(stats["scope"].unique()))
    styles = _uml_styles(df, metric, suite, methods)  # the same colours in every UML figure
    rank = stats[stats["scope"] == "harmonic_mean"].set_index("label")["mean"]
    labels = sorted(styles, key=lambda lab: (-rank.get(lab, -np.inf), lab))
    reported = set(sel.loc[sel["reported"], "label"])
    wide = len(labels) > 4
    fig = Figure(figsize=(PAGE_WIDTH_IN if wide else WIDTH_IN,
                          2.4 if wide else 2.3 + _legend_height(labels)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.84 / len(labels)
    x = np.arange(len(groups))
    lows, highs = [], []
    for i, lab in enumerate(labels):
        s = stats[stats["label"] == lab].set_index("scope").reindex(groups)
        is_rep = lab in reported
        err = None if is_rep else np.vstack([s["lo"], s["hi"]])
        ax.bar(x - 0.42 + (i + 0.5) * width, s["mean"], width, label=lab, yerr=err,
               color=styles[lab][0], hatch="////" if is_rep else None,
               edgecolor="white", linewidth=0.25 if not is_rep else 0,
               error_kw={"elinewidth": 0.5, "capsize": 0.8, "capthick": 0.5})
        # A bar without an interval (NaN) still needs room for itself.
        below = 0 if err is None else np.nan_to_num(err[0])
        above = 0 if err is None else np.nan_to_num(err[1])
        lows.append((s["mean"] - below).min())
        highs.append((s["mean"] + above).max())
    n_data = sum(g not in ("universal", "harmonic_mean") for g in groups)
    if 0 < n_data < len(groups):  # separate the per-dataset bars from the summaries
        ax.axvline(n_data - 0.5, color="0.6", lw=0.6, ls=":")
    ax.set_xticks(x, [_scope_title(g) for g in groups], rotation=30 if wide else 40, ha="right",
                  rotation_mode="anchor")
    ax.set_xlim(-0.55, len(groups) - 0.45)
    ax.set_ylim(*_fitted_range(np.nanmin(lows), np.nanmax(highs)))
    ax.set_ylabel(metric_label(metric))
    ax.yaxis.grid(True, lw=0.4, color="0.88")
    ax.set_axisbelow(True)
    if wide:
        _side_legend(fig, ax, None, "best HM first" if len(rank) else None)
    else:
        _legend(fig, ax)
    return fig


def _fitted_range(low: float, high: float) -> tuple[float, float]:
    """A y-range around [low, high] with a margin, its bottom on a multiple of 5 (never below
    0): differences between methods of a few points stay visible."""
    span = max(high - low, 1.0)
    bottom = max(0.0, np.floor((low - 0.08 * span) / 5) * 5)
    return bottom, high + 0.04 * span


def _count(v: float, _pos: object = None) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if v >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def params_figure(df: pd.DataFrame, metric: str = "recall@1", *, suite: str | None = None,
                  methods: list[str] | None = None,
                  intervals: pd.DataFrame | None = None) -> Figure:
    """Harmonic mean of ``metric`` against trainable parameters (log x), one point per method.

    Raises:
        UserError: no row has both a harmonic-mean value and a trainable-parameter count.
    """
    sel = _select(df, ("uml",), suite, methods)
    sel = sel[pd.to_numeric(sel["trainable"], errors="coerce") > 0].astype({"trainable": float})
    points = sel[(sel["metric"] == metric) & (sel["scope"] == "harmonic_mean")
                 & sel["value"].notna()]
    _for(points, "harmonic-mean results (with a trainable-parameter count)", metric, suite,
         "run `umlbench run` first or change --metric/--suite/--method")
    _one_suite(points, suite)
    # Reported rows without any accuracy carry a parameter count only: reference lines, taken
    # from the points' suite so that parameter scales of different backbones are not mixed.
    has_value = set(sel.loc[sel["value"].notna(), "label"])
    lines = (sel[sel["reported"] & ~sel["label"].isin(has_value)
                 & sel["suite"].isin(set(points["suite"]))]
             .groupby("label")["trainable"].first().sort_values())
    stats = _errors(_stats(points, ["label"]), intervals)
    stats["trainable"] = points.groupby("label")["trainable"].median().reindex(
        stats["label"]).to_numpy()
    stats = stats.sort_values("trainable")
    reported = set(points.loc[points["reported"], "label"])
    labels = list(stats["label"])
    styles = _uml_styles(df, metric, suite, methods)
    line_labels = [f"{lab}: {_count(x)}" for lab, x in lines.items()]
    wide = len(labels + line_labels) > 4
    if wide:  # legend beside the axes at full text width
        fig = Figure(figsize=(PAGE_WIDTH_IN, 2.8), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig, ax = _new_figure(2.4 + _legend_height(labels + line_labels))
    ax.set_xscale("log")
    for row in stats.itertuples():
        color, marker = styles[row.label]
        rep = row.label in reported
        ax.errorbar([row.trainable], [row.mean], yerr=None if rep else [[row.lo], [row.hi]],
                    ls="none",
                    marker=marker, ms=5, color=color, mfc="none" if rep else color, mew=1.0,
                    elinewidth=0.7, capsize=1.5, label=row.label)
    for i, (lab, x) in enumerate(zip(line_labels, lines)):
        ax.axvline(x, color="0.45", lw=0.8, ls=_DASHES[i % len(_DASHES)], zorder=0, label=lab)
    xs = np.concatenate([stats["trainable"].to_numpy(float), lines.to_numpy(float)])
    ax.set_xlim(xs.min() / 2.5, xs.max() * 2.5)
    ax.xaxis.set_major_formatter(FuncFormatter(_count))
    ax.set_xlabel("Trainable parameters (log scale)")
    ax.set_ylabel("Harmonic mean " + metric_label(metric))
    ax.grid(True, which="major", lw=0.4, color="0.88")
    ax.set_axisbelow(True)
    if wide:
        _side_legend(fig, ax, labels + line_labels, "fewest parameters first")
    else:
        _legend(fig, ax, labels + line_labels)
    return fig
