"""The publication style shared by every figure: sizes, colours and markers, legends, panels."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from umlbench.data.registry import SUITES
from umlbench.errors import UserError
from umlbench.results.leaderboard import COLUMN_TITLES, REPORTED_MARK

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
