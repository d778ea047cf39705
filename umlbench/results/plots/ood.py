"""Figures over distribution shift: metric against ooDML level (``shift``) and against
support shots (``fewshot``)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from umlbench.results.plots.style import (
    _LINESTYLES,
    _MARKERS,
    _finish_panels,
    _for,
    _panels,
    _per_dataset,
    _scope_title,
    _select,
    _stats,
    _styles,
    metric_label,
)


def _draw_lines(ax, stats: pd.DataFrame, xcol: str, styles: dict[str, tuple[str, str]]) -> None:
    """One line per (label, variant): colour and marker by method, dash by variant, with a
    band: the interval where ``stats`` has ``low``/``high`` columns, else ± std where the seeds
    differ."""
    variants = sorted(stats["variant"].unique())
    for (label, variant), s in stats.groupby(["label", "variant"], sort=True):
        s = s.sort_values(xcol)
        color, marker = styles[label]
        ls = _LINESTYLES[variants.index(variant) % len(_LINESTYLES)]
        x, m, sd = s[xcol].to_numpy(float), s["mean"].to_numpy(), s["std"].to_numpy()
        ax.plot(x, m, color=color, marker=marker, ls=ls, label=label + variant)
        if "low" in s.columns:  # intervals given: the band is the interval (none where NaN)
            ax.fill_between(x, s["low"].to_numpy(float), s["high"].to_numpy(float),
                            color=color, alpha=0.18, lw=0)
        elif (sd > 0).any():
            ax.fill_between(x, m - sd, m + sd, color=color, alpha=0.18, lw=0)
    ax.grid(True, lw=0.4, color="0.88")


def shift_figure(df: pd.DataFrame, metric: str = "recall@1", *, suite: str | None = None,
                 dataset: str | None = None, methods: list[str] | None = None,
                 intervals: pd.DataFrame | None = None) -> Figure:
    """Universal ``metric`` against ooDML level, one line per method, mean and a band: the
    interval from ``intervals`` (columns ``label, dataset, level, low, high`` in percent, see
    ``results.significance.plot_intervals``) when given, else ± std over seeds; one panel per
    dataset when several are shown (FID in each panel's tick labels).

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
        if intervals is not None:
            iv = intervals[intervals["dataset"].astype(str) == str(part["dataset"].iloc[0])]
            stats = stats.merge(iv[["label", "level", "low", "high"]].astype(
                {"level": int, "low": float, "high": float}),
                                on=["label", "level"], how="left")
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


def _reference_lines(ax, sel: pd.DataFrame, metric: str, scope: str | None, labels: list[str],
                     styles: dict[str, tuple[str, str]]) -> None:
    """PUMA's few-shot training: dotted lines at the mean over seeds of the same methods trained
    on every image (uml runs of the same display name) and of the frozen backbone, on the scope
    the panel draws (universal unless a dataset is asked for)."""
    uml = sel[(sel["protocol"].fillna("uml") == "uml") & (sel["metric"] == metric)
              & (sel["scope"] == (scope or "universal"))]
    frozen = [lb for lb in uml.loc[uml["method"] == "off-the-shelf", "label"].unique()
              if lb not in labels]
    refs = [(lb, f"{lb}, all training images", styles[lb][0]) for lb in labels] + \
        [(lb, f"{lb} (frozen backbone)", "0.35") for lb in frozen]
    for label, text, color in refs:
        values = uml.loc[uml["label"] == label, "value"]
        if values.empty:
            continue
        y = 100 * float(values.mean())
        ax.axhline(y, ls=":", lw=1.2, color=color, label=text)  # named in the legend


def fewshot_figure(df: pd.DataFrame, metric: str = "recall@1", *, suite: str | None = None,
                   dataset: str | None = None, methods: list[str] | None = None) -> Figure:
    """``metric`` against support images per class, one line per method; with several ooDML
    levels one line per level (distinct colours and markers, easy to hard), one panel per
    dataset. Bands are each point's stored 95% CI over episodes (few-shot records), or the std
    over seeds where no CI is stored (fewshot-train). Few-shot training also draws, dotted, the
    same methods trained on every image and the frozen backbone (uml runs, mean over seeds).

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
        if (pts["protocol"] == "fewshot-train").all():
            _reference_lines(ax, sel, metric, name, labels, styles)
    xlabel = ("Training images per class (K)" if (pts["protocol"] == "fewshot-train").all()
              else "Support images per class (shots; 0 = zero-shot)")
    _finish_panels(fig, axes, xlabel, metric_label(metric))
    return fig
