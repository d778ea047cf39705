"""Publication figures from the long results frame (see :mod:`umlbench.results.store`).

Four kinds, each a pure ``<kind>_figure(df, ...) -> Figure`` that reads only the frame
(``uml.py``: datasets, params; ``ood.py``: shift, fewshot; ``style.py``: what they share):

- ``datasets``: grouped bars, one group per dataset plus universal and harmonic mean, one bar per
  method (mean over seeds; error bars: the paired-bootstrap interval when given, else the
  sample std over seeds), methods ordered by harmonic mean, the y-range
  fitted to the data and the legend beside the axes; UML protocol only.
- ``params``: harmonic mean against trainable parameters on a log axis (the PUMA paper's
  efficiency figure). Measured methods are filled markers with error bars (interval or seed std,
  as for ``datasets``), reported rows
  with a value are hollow markers, and reported rows that carry only a parameter count are
  dashed vertical reference lines (never points with a made-up accuracy).
- ``shift``: universal metric against ooDML shift level (level and FID in the tick labels), one
  line per method, mean with a band (the interval when given, else ± std over seeds); one panel per dataset when several are shown.
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
import pandas as pd
from matplotlib.figure import Figure

from umlbench.errors import UserError
from umlbench.results.plots.ood import fewshot_figure, shift_figure
from umlbench.results.plots.style import _RC, metric_label
from umlbench.results.plots.uml import datasets_figure, params_figure
from umlbench.results.selection import ablation_labels, main_methods

__all__ = ["KINDS", "ablation_labels", "build_figure", "check_target", "datasets_figure",
           "fewshot_figure", "metric_label", "params_figure", "plot_kind", "shift_figure"]


FEWSHOT_PROTOCOLS = ("fewshot", "fewshot-train")
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


def build_figure(df: pd.DataFrame, kind: str, *, metric: str = "recall@1",
                 suite: str | None = None, dataset: str | None = None,
                 methods: list[str] | None = None, ablations: bool = False,
                 protocol: str | None = None, intervals: pd.DataFrame | None = None) -> Figure:
    """The Figure for ``kind`` (see :data:`KINDS`), built with the publication style; ablation
    rows only with ``ablations`` or when named in ``methods``. ``protocol`` (kind ``fewshot``
    only: "fewshot" or "fewshot-train") draws that protocol's records alone, so that ooDML
    few-shot adaptation and PUMA's few-shot training, whose x-axes mean different things, are
    never mixed in one figure. ``intervals`` (kinds datasets, params and shift; in percent, from
    :func:`umlbench.results.significance.plot_intervals`) replaces the seed-std error bars (bands
    for shift) by those intervals; labels it lacks get none."""
    if kind not in KINDS:
        raise UserError(f"unknown plot kind {kind!r}; known: {', '.join(KINDS)}")
    if protocol is not None:
        if kind != "fewshot" or protocol not in FEWSHOT_PROTOCOLS:
            raise UserError(f"--protocol applies to --kind fewshot, as one of "
                            f"{', '.join(FEWSHOT_PROTOCOLS)}")
        # PUMA's few-shot training keeps the uml runs apart: the same methods trained on every
        # image, and the frozen backbone, are its reference lines (matched by display name, so
        # they take no part in deciding what is an ablation).
        refs = df[df["protocol"].fillna("uml") == "uml"] if protocol == "fewshot-train" \
            else df.iloc[0:0]
        df = df[df["protocol"] == protocol]
    else:
        refs = df.iloc[0:0]
    if not ablations:
        df = main_methods(df, methods)
    if len(refs):
        df = pd.concat([df, refs])
    kwargs = {"suite": suite, "methods": methods} | (
        {"dataset": dataset} if kind in ("shift", "fewshot") else {}) | (
        {"intervals": intervals} if kind in ("datasets", "params", "shift") else {})
    with matplotlib.rc_context(_RC):
        return KINDS[kind](df, metric, **kwargs)


def plot_kind(df: pd.DataFrame, kind: str, out: Path, *, metric: str = "recall@1",
              suite: str | None = None, dataset: str | None = None,
              methods: list[str] | None = None, ablations: bool = False,
              protocol: str | None = None, intervals: pd.DataFrame | None = None) -> list[Path]:
    """Draw ``kind`` from ``df`` and write it to ``out``; returns the written paths.

    ``out`` with suffix ``.png`` (300 dpi) or ``.svg`` writes that file; without a suffix both
    ``out.png`` and ``out.svg`` are written, each atomically (temporary file, then rename).

    Raises:
        UserError: unknown kind, unsupported suffix, or no rows for the kind.
    """
    out = Path(out)
    targets = check_target(out)
    fig = build_figure(df, kind, metric=metric, suite=suite, dataset=dataset, methods=methods,
                       ablations=ablations, protocol=protocol, intervals=intervals)
    out.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(_RC):
        for path in targets:
            meta = {"Date": None} if path.suffix.lower() == ".svg" else {}
            part = path.with_name(f".{path.name}.part")
            fig.savefig(part, dpi=300, metadata=meta, format=path.suffix.lower().lstrip("."))
            part.replace(path)
    return targets
