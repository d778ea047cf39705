"""Publication figures from the long results frame (see :mod:`umlbench.results.store`).

Four kinds, each a pure ``<kind>_figure(df, ...) -> Figure`` that reads only the frame:

- ``datasets``: grouped bars, one group per dataset plus universal and harmonic mean, one bar per
  method (mean over seeds, sample-std error bars), methods ordered by harmonic mean, the y-range
  fitted to the data and the legend beside the axes; UML protocol only.
- ``params``: harmonic mean against trainable parameters on a log axis (the PUMA paper's
  efficiency figure). Measured methods are filled markers with seed-std error bars, reported rows
  with a value are hollow markers, and reported rows that carry only a parameter count are
  dashed vertical reference lines (never points with a made-up accuracy).
- ``shift``: universal metric against ooDML shift level (level and FID in the tick labels), one
  line per method, mean ± std band over seeds; one panel per dataset when several are shown.
- ``fewshot``: metric against support shots per class, one line per method (zero-shot values
  stored as ``zero_shot@<metric>`` are drawn at 0 shots); several ooDML levels get one line
  each, in distinct colours and markers from easy to hard; one panel per dataset; bands are
  each point's stored 95% CI over episodes.

:func:`plot_kind` builds one of them and writes PNG (300 dpi) and/or SVG. Figures are sized for
a single column (3.5 in), small multiples and many-method bar charts for the full text width
(7 in), and built on the Agg canvas without pyplot, so nothing global changes.

Ablations (a row labelled ``Name (variant)`` beside a ``Name`` row of the same method, e.g.
"PUMA (adapters only)" beside "PUMA") are left out unless asked for (``ablations=True``) or
named in ``methods``: the main comparison stays readable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from umlbench.data.registry import SUITES
from umlbench.errors import UserError
from umlbench.results.leaderboard import COLUMN_TITLES, REPORTED_MARK
from umlbench.results.selection import ablation_labels, main_methods

__all__ = ["KINDS", "ablation_labels", "build_figure", "check_target", "datasets_figure",
           "fewshot_figure", "metric_label", "params_figure", "plot_kind", "shift_figure"]

WIDTH_IN = 3.5  # single-column width of two-column papers (CVPR/WACV, IEEE)
PAGE_WIDTH_IN = 7.0  # full text width, for small multiples (one panel per dataset)
_RC = {
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
    "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "svg.fonttype": "none",  # keep text as text so captions stay editable and searchable
    "svg.hashsalt": "umlbench",  # stable element ids: same data, same SVG bytes
    "hatch.linewidth": 0.5,
}
_MARKERS, _LINESTYLES = "osD^vP*Xh<>p", ["-", "--", "-.", ":"]
_DASHES = ["--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2))]
_NAMES = {"recall": "Recall", "map": "MAP", "r_precision": "R-Precision",
          "precision": "Precision", "nmi": "NMI", "f1": "F1"}


def metric_label(metric: str) -> str:
    """Axis label with unit: ``recall@1`` -> ``Recall@1 (%)``, ``map@r`` -> ``MAP@R (%)``."""
    base, _, k = metric.partition("@")
    name = _NAMES.get(base, base.replace("_", " ").title())
    return f"{name}@{k.upper() if k.isalpha() else k} (%)" if k else f"{name} (%)"


def _select(df: pd.DataFrame, protocols: tuple[str, ...], suite: str | None,
            methods: list[str] | None) -> pd.DataFrame:
    """Usable rows (completed or reported) of the given protocols, suite and methods."""
    sel = df[df["protocol"].fillna("uml").isin(protocols)
             & df["status"].isin(["completed", "reported"])]
    if suite:
        sel = sel[sel["suite"] == suite]
    if methods:
        sel = sel[sel["method"].isin(methods) | sel["display_name"].isin(methods)]
    reported = sel["source"] == "reported"
    return sel.assign(label=np.where(reported, sel["display_name"] + REPORTED_MARK,
                                     sel["display_name"]),
                      reported=reported, value=pd.to_numeric(sel["value"], errors="coerce"))


def _one_suite(sel: pd.DataFrame, suite: str | None) -> None:
    # Accuracies on different suites are not comparable; make the user choose.
    suites = sorted(sel["suite"].dropna().unique())
    if suite is None and len(suites) > 1:
        raise UserError(f"results from several suites ({', '.join(suites)}); pass --suite")


def _for(sel: pd.DataFrame, what: str, metric: str, suite: str | None, hint: str,
         dataset: str | None = None) -> None:
    if sel.empty:
        where = (f" for suite {suite!r}" if suite else "") + (
            f" on dataset {dataset!r}" if dataset else "")
        raise UserError(f"no {what} with metric {metric}{where}; {hint}")


def _stats(sel: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, sample std (0 for one seed) and count over runs for each ``keys`` group."""
    per_run = sel.groupby(keys + ["run_id"], dropna=False)["value"].mean() * 100
    out = per_run.groupby(level=keys, dropna=False).agg(["mean", "std", "count"])
    return out.assign(std=out["std"].fillna(0.0)).reset_index()


def _styles(labels: list[str]) -> dict[str, tuple[str, str]]:
    """Colour and marker per label, in label order, so a method looks the same everywhere.

    Up to 10 labels get tab10's ten distinct hues; beyond that tab20's dark tones, then its
    light ones, so no colour repeats and neighbours in the order always differ in hue."""
    colors = matplotlib.colormaps["tab10"].colors
    if len(labels) > len(colors):
        pairs = matplotlib.colormaps["tab20"].colors
        colors = pairs[0::2] + pairs[1::2]
    return {lab: (colors[i % len(colors)], _MARKERS[i % len(_MARKERS)])
            for i, lab in enumerate(labels)}


def _new_figure(height: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _ncols(labels: list[str]) -> int:
    # Two columns fit the 3.5 in width only while the labels are short.
    return 2 if len(labels) > 1 and max(map(len, labels)) <= 24 else 1


def _legend(fig: Figure, ax, order: list[str] | None = None) -> None:
    # Above the axes, outside the data area, so it never hides a bar or a point.
    handles, labels = ax.get_legend_handles_labels()
    if order is not None:
        pos = {lab: i for i, lab in enumerate(labels)}
        handles, labels = [handles[pos[lab]] for lab in order], order
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=_ncols(labels),
                   handlelength=1.8, columnspacing=1.0)


def _side_legend(fig: Figure, ax, order: list[str] | None, title: str | None) -> None:
    """One column beside the axes (right), outside the data area, in ``order``."""
    handles, labels = ax.get_legend_handles_labels()
    if order is not None:
        pos = {lab: i for i, lab in enumerate(labels)}
        handles, labels = [handles[pos[lab]] for lab in order], order
    if handles:
        fig.legend(handles, labels, loc="outside right upper", handlelength=1.2, title=title,
                   title_fontsize=7, alignment="left")


def _uml_styles(df: pd.DataFrame, metric: str, suite: str | None,
                methods: list[str] | None) -> dict[str, tuple[str, str]]:
    """Styles over every UML row label with a ``metric`` value, so that the datasets and
    params figures of one results folder colour each method alike."""
    sel = _select(df, ("uml",), suite, methods)
    return _styles(sorted(sel.loc[(sel["metric"] == metric) & sel["value"].notna(),
                                  "label"].unique()))


def _legend_height(labels: list[str]) -> float:
    return 0.16 * -(-len(labels) // _ncols(labels))


def _scope_order(scopes: list[str]) -> list[str]:
    known = [d for datasets in SUITES.values() for d in datasets if d in scopes]
    rest = sorted(set(scopes) - set(known) - {"universal", "harmonic_mean"})
    return known + rest + [s for s in ("universal", "harmonic_mean") if s in scopes]


def _scope_title(scope: str) -> str:
    base = scope.removeprefix("mini-")
    return scope[: len(scope) - len(base)] + COLUMN_TITLES.get(base, base)  # keeps "mini-"


def datasets_figure(df: pd.DataFrame, metric: str = "recall@1", *, suite: str | None = None,
                    methods: list[str] | None = None) -> Figure:
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
    stats = _stats(sel, ["label", "scope"])
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
        err = None if is_rep else s["std"].fillna(0.0)
        ax.bar(x - 0.42 + (i + 0.5) * width, s["mean"], width, label=lab, yerr=err,
               color=styles[lab][0], hatch="////" if is_rep else None,
               edgecolor="white", linewidth=0.25 if not is_rep else 0,
               error_kw={"elinewidth": 0.5, "capsize": 0.8, "capthick": 0.5})
        lows.append((s["mean"] - (0 if err is None else err)).min())
        highs.append((s["mean"] + (0 if err is None else err)).max())
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
                  methods: list[str] | None = None) -> Figure:
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
    stats = _stats(points, ["label"])
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
        ax.errorbar([row.trainable], [row.mean], yerr=None if rep else [row.std], ls="none",
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


def _draw_lines(ax, stats: pd.DataFrame, xcol: str, styles: dict[str, tuple[str, str]],
                colors: dict[str, object] | None = None) -> None:
    """One line per (label, variant): colour and marker by method, dash by variant; with
    ``colors`` (variant -> colour) the colour follows the variant and the dash the method."""
    variants = sorted(stats["variant"].unique())
    labels = sorted(stats["label"].unique())
    for (label, variant), s in stats.groupby(["label", "variant"], sort=True):
        s = s.sort_values(xcol)
        color, marker = styles[label]
        ls = _LINESTYLES[variants.index(variant) % len(_LINESTYLES)]
        if colors is not None:
            color = colors.get(variant, "0.4")
            ls = _LINESTYLES[labels.index(label) % len(_LINESTYLES)]
        x, m, sd = s[xcol].to_numpy(float), s["mean"].to_numpy(), s["std"].to_numpy()
        name = (label + variant) if colors is None or len(labels) > 1 else variant.strip(" /")
        ax.plot(x, m, color=color, marker=marker, ls=ls, label=name)
        if (sd > 0).any():
            ax.fill_between(x, m - sd, m + sd, color=color, alpha=0.18, lw=0)
    ax.grid(True, lw=0.4, color="0.88")


def _panels(n: int, legend_labels: list[str]) -> tuple[Figure, list]:
    """One axes, or a grid of small multiples (one per dataset) at full page width."""
    if n == 1:
        fig, ax = _new_figure(2.3 + _legend_height(legend_labels))
        return fig, [ax]
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(PAGE_WIDTH_IN, 1.7 * nrows + 0.16 * -(-len(legend_labels) // 4) + 0.3),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _shared_legend(fig: Figure, axes: list) -> None:
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        ncols = _ncols(list(seen)) if len(axes) == 1 else min(4, len(seen))
        fig.legend(list(seen.values()), list(seen), loc="outside upper center", ncols=ncols,
                   handlelength=1.8, columnspacing=1.0)


def _finish_panels(fig: Figure, axes: list, xlabel: str, ylabel: str) -> None:
    """Axis labels (once for the whole grid of small multiples) and one shared legend."""
    if len(axes) == 1:
        axes[0].set_xlabel(xlabel)
        axes[0].set_ylabel(ylabel)
    else:
        fig.supxlabel(xlabel, fontsize=8)
        fig.supylabel(ylabel, fontsize=8)
    _shared_legend(fig, axes)


def _per_dataset(sel: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    if sel["dataset"].nunique(dropna=False) <= 1:
        return [(None, sel)]
    order = _scope_order([str(d) for d in sel["dataset"].dropna().unique()])
    return [(d, sel[sel["dataset"] == d]) for d in order]


def shift_figure(df: pd.DataFrame, metric: str = "recall@1", *, suite: str | None = None,
                 dataset: str | None = None, methods: list[str] | None = None) -> Figure:
    """Universal ``metric`` against ooDML level, one line per method, mean ± std band over
    seeds; one panel per dataset when several are shown (FID in each panel's tick labels).

    Raises:
        UserError: no completed ooDML rows with a level and ``metric``.
    """
    sel = _select(df, ("oodml",), suite, methods)
    sel = sel[(sel["metric"] == metric) & (sel["scope"] == "universal") & sel["value"].notna()
              & pd.to_numeric(sel["level"], errors="coerce").notna()]
    if dataset:
        sel = sel[sel["dataset"] == dataset]
    _for(sel, "ooDML records", metric, suite,
         "run `umlbench run --protocol oodml --level all` first", dataset)
    sel = sel.assign(level=pd.to_numeric(sel["level"]).astype(int),
                     fid=pd.to_numeric(sel["fid"], errors="coerce"), variant="")
    labels = sorted(sel["label"].unique())
    styles = _styles(labels)
    groups = _per_dataset(sel)
    fig, axes = _panels(len(groups), labels)
    for ax, (name, part) in zip(axes, groups):
        stats = _stats(part, ["label", "variant", "level"])
        levels = sorted(stats["level"].unique())
        fids = part.groupby("level")["fid"].mean()
        if fids.notna().all():
            ax.set_xticks(levels, [f"L{lv}\n{fids[lv]:.0f}" for lv in levels])
        else:
            ax.set_xticks(levels, [f"L{lv}" for lv in levels])
        if name is not None:
            ax.set_title(_scope_title(name))
            ax.tick_params(axis="x", labelsize=5.5)  # 8 two-line ticks in a 1.7 in panel
        _draw_lines(ax, stats, "level", styles)
    _finish_panels(fig, axes, "ooDML shift level / train-test FID",
                   "Universal " + metric_label(metric))
    return fig


# Level colours, easy (cool) to hard (warm): distinct hues that stay dark enough on white.
_LEVEL_COLORS = ("#1f3b73", "#2f6fbf", "#2aa1b3", "#3a9e4a", "#8f8f14", "#e08a1e", "#d1402a",
                 "#7a1f3d")


def _level_colors(levels: list[int]) -> dict[int, object]:
    n = len(levels)
    if n <= len(_LEVEL_COLORS):
        picks = np.round(np.linspace(0, len(_LEVEL_COLORS) - 1, n)).astype(int)
        return {lv: _LEVEL_COLORS[i] for lv, i in zip(levels, picks)}
    cmap = matplotlib.colormaps["turbo"]
    return {lv: cmap(0.05 + 0.9 * i / (n - 1)) for i, lv in enumerate(levels)}


def _fewshot_points(sel: pd.DataFrame, metric: str, dataset: str | None) -> pd.DataFrame:
    """(run, shots, value, ci) rows: ``few_shot@``/``zero_shot@`` extras (with their stored
    ``_ci95``) when a run has them, otherwise the run's main value (the dataset's scope if
    given, else universal, else HM; no CI). The zero-shot point of a base model (method,
    dataset, level, seed) is taken from its record with the fewest shots (the largest query
    set); the other records score the same model on sub-sets of it."""
    extra = sel[sel["scope"] == "extra"]
    ci = extra.set_index(["run_id", "metric"])["value"]

    def with_ci(rows: pd.DataFrame) -> pd.DataFrame:
        keys = list(zip(rows["run_id"], rows["metric"] + "_ci95"))
        return rows.assign(ci=[ci.get(k, np.nan) for k in keys])

    few = with_ci(extra[extra["metric"] == f"few_shot@{metric}"])
    zero = with_ci(extra[extra["metric"] == f"zero_shot@{metric}"])
    zero = zero.assign(src=pd.to_numeric(zero["shots"], errors="coerce"), shots=0)
    base = ["label", "dataset", "level", "seed"]
    if len(zero):
        first = zero.groupby(base, dropna=False)["src"].transform("min")
        zero = zero[zero["src"] == first].drop(columns="src")
    main = sel[(sel["metric"] == metric) & sel["protocol"].isin(["fewshot", "fewshot-train"])
               & ~sel["run_id"].isin(set(few["run_id"]))]
    for scope in ([dataset] if dataset else []) + ["universal", "harmonic_mean"]:
        if (main["scope"] == scope).any():
            main = main[main["scope"] == scope]
            break
    else:
        main = main.iloc[0:0]
    out = pd.concat([few, zero, main.assign(ci=np.nan)])
    out = out.assign(shots=pd.to_numeric(out["shots"], errors="coerce"))
    return out[out["shots"].notna() & out["value"].notna()]


def _fewshot_stats(part: pd.DataFrame) -> pd.DataFrame:
    """Per (label, level, shots): mean over runs and the band half-width in percent: the
    stored 95% CI over episodes (mean over seeds), else the seed std (0 for one seed)."""
    keys = ["label", "level", "shots"]
    part = part.assign(level=pd.to_numeric(part["level"], errors="coerce").fillna(-1))
    g = part.groupby(keys, dropna=False)
    out = g["value"].agg(["mean", "std", "count"]).reset_index()
    out["ci"] = g["ci"].mean().to_numpy()
    out["band"] = np.where(out["ci"].notna(), out["ci"], out["std"].fillna(0.0)) * 100
    out["mean"] *= 100
    return out


def _fewshot_lines(ax, stats: pd.DataFrame, styles: dict[str, tuple[str, str]],
                   colors: dict[int, object] | None) -> None:
    """One line per method (one level), or per level (colour and marker by level; the dash
    tells methods apart), each with its band."""
    labels = sorted(stats["label"].unique())
    for (label, level), s in stats.groupby(["label", "level"], sort=True):
        s = s.sort_values("shots")
        color, marker = styles[label]
        ls, name = "-", label
        if colors is not None and int(level) in colors:
            i = sorted(colors).index(int(level))
            color, marker = colors[int(level)], _MARKERS[i % len(_MARKERS)]
            ls = _LINESTYLES[labels.index(label) % len(_LINESTYLES)]
            name = f"L{int(level)}" if len(labels) == 1 else f"{label} / L{int(level)}"
        x, m, band = s["shots"].to_numpy(float), s["mean"].to_numpy(), s["band"].to_numpy()
        ax.plot(x, m, color=color, marker=marker, ls=ls, label=name)
        if (band > 0).any():
            ax.fill_between(x, m - band, m + band, color=color, alpha=0.15, lw=0)
    ax.grid(True, lw=0.4, color="0.88")


def fewshot_figure(df: pd.DataFrame, metric: str = "recall@1", *, suite: str | None = None,
                   dataset: str | None = None, methods: list[str] | None = None) -> Figure:
    """``metric`` against support images per class, one line per method; with several ooDML
    levels one line per level (distinct colours and markers, easy to hard), one panel per
    dataset. Bands are each point's stored 95% CI over episodes (few-shot records), or the std
    over seeds where no CI is stored (fewshot-train).

    Raises:
        UserError: no few-shot rows with ``metric``.
    """
    sel = _select(df, ("fewshot", "fewshot-train", "uml", "oodml"), suite, methods)
    if dataset:
        sel = sel[(sel["dataset"] == dataset) | (sel["scope"] == dataset)]
    pts = _fewshot_points(sel, metric, dataset)
    _for(pts, "few-shot records", metric, suite,
         "run `umlbench run --protocol fewshot --shots K` first", dataset)
    labels = sorted(pts["label"].unique())
    styles = _styles(labels)
    levels = sorted(pd.to_numeric(pts["level"], errors="coerce").dropna().astype(int).unique())
    colors = _level_colors(levels) if len(levels) > 1 else None
    groups = _per_dataset(pts)
    legend = [f"L{lv}" for lv in levels] if colors else labels
    fig, axes = _panels(len(groups), legend)
    for ax, (name, part) in zip(axes, groups):
        stats = _fewshot_stats(part)
        shots = sorted(stats["shots"].unique())
        ax.set_xticks(shots, [f"{s:g}" for s in shots])
        if name is not None:
            ax.set_title(_scope_title(name))
        _fewshot_lines(ax, stats, styles, colors)
    xlabel = ("Training images per class (K)" if (pts["protocol"] == "fewshot-train").all()
              else "Support images per class (shots; 0 = zero-shot)")
    _finish_panels(fig, axes, xlabel, metric_label(metric))
    return fig


KINDS: dict[str, Callable[..., Figure]] = {"datasets": datasets_figure, "params": params_figure,
                                           "shift": shift_figure, "fewshot": fewshot_figure}


def check_target(out: Path) -> list[Path]:
    """The files ``out`` stands for: itself (.png or .svg), or both when it has no suffix.

    Raises:
        UserError: any other suffix.
    """
    suffix = out.suffix.lower()
    if suffix in (".png", ".svg"):
        return [out]
    if suffix:
        raise UserError(f"cannot write {out.name}: use a .png or .svg suffix, or none for both")
    return [out.with_name(out.name + ".png"), out.with_name(out.name + ".svg")]


_targets = check_target


def build_figure(df: pd.DataFrame, kind: str, *, metric: str = "recall@1",
                 suite: str | None = None, dataset: str | None = None,
                 methods: list[str] | None = None, ablations: bool = False) -> Figure:
    """The Figure for ``kind`` (see :data:`KINDS`), built with the publication style; ablation
    rows only with ``ablations`` or when named in ``methods``."""
    if kind not in KINDS:
        raise UserError(f"unknown plot kind {kind!r}; known: {', '.join(KINDS)}")
    if not ablations:
        df = main_methods(df, methods)
    kwargs = {"suite": suite, "methods": methods} | (
        {"dataset": dataset} if kind in ("shift", "fewshot") else {})
    with matplotlib.rc_context(_RC):
        return KINDS[kind](df, metric, **kwargs)


def plot_kind(df: pd.DataFrame, kind: str, out: Path, *, metric: str = "recall@1",
              suite: str | None = None, dataset: str | None = None,
              methods: list[str] | None = None, ablations: bool = False) -> list[Path]:
    """Draw ``kind`` from ``df`` and write it to ``out``; returns the written paths.

    ``out`` with suffix ``.png`` (300 dpi) or ``.svg`` writes that file; without a suffix both
    ``out.png`` and ``out.svg`` are written, each atomically (temporary file, then rename).

    Raises:
        UserError: unknown kind, unsupported suffix, or no rows for the kind.
    """
    out = Path(out)
    targets = check_target(out)
    fig = build_figure(df, kind, metric=metric, suite=suite, dataset=dataset, methods=methods,
                       ablations=ablations)
    out.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(_RC):
        for path in targets:
            meta = {"Date": None} if path.suffix.lower() == ".svg" else {}
            part = path.with_name(f".{path.name}.part")
            fig.savefig(part, dpi=300, metadata=meta, format=path.suffix.lower().lstrip("."))
            part.replace(path)
    return targets
