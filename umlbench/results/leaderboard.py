"""Leaderboard tables: long results frame -> aggregated table (``Board``); the formats that
render a Board (markdown/latex/csv/html/json) are in :mod:`umlbench.results.formats`.

Rows are methods (``display_name``; reported reference rows are kept apart and marked), seeds
are aggregated as mean, sample standard deviation and count, only among runs of one config and
data identity, each seed once (the newest record; see :mod:`umlbench.results.grouping`, which
also labels rows that share a display name and writes ``Board.footnotes``). Columns
are the suite's datasets, ``universal``, ``harmonic_mean`` (of the per-dataset metric, per run,
then averaged) and the trainable parameters. For ooDML, columns are the shift levels plus the
normalised AUC, and each dataset's block opens with a "FID (<dataset>)" row (also given as a
note, for the terminal view): the train/test FID of every level as the split file gives it (for
imported published splits, the published value). Values in [0, 1] are shown in percent. The
best mean of each column is bold.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from umlbench.data.registry import SUITES
from umlbench.errors import UserError
from umlbench.results.grouping import DEFAULT_GROUP_BY, deduplicate, footnotes, row_labels

__all__ = ["Board", "build_board", "build_paper_board", "paper_recall_ks", "FORMATS",
           "COLUMN_TITLES", "PAPER_RECALL_KS"]

FORMATS = ("markdown", "latex", "csv", "html", "json")
COLUMN_TITLES = {
    "universal": "Universal", "harmonic_mean": "HM", "arithmetic_mean": "Mean",
    "trainable": "Trainable params", "auc": "AUC", "cub": "CUB", "cars": "Cars", "sop": "SOP",
    "inshop": "In-Shop", "nabirds": "NABirds", "dogs": "Dogs", "flowers": "Flowers",
    "aircraft": "Aircraft",
}
REPORTED_MARK = " (reported)"
# The Recall@K lists the literature reports per dataset (the PUMA paper's tables, like most DML
# papers): SOP and In-shop have their own, every other dataset R@1/2/4/8. mini-<x> follows <x>.
PAPER_RECALL_KS: dict[str, tuple[int, ...]] = {"sop": (1, 10, 100, 1000),
                                               "inshop": (1, 10, 20, 30)}
DEFAULT_RECALL_KS = (1, 2, 4, 8)
_SUMMARIES = ("universal", "harmonic_mean", "arithmetic_mean")


@dataclass
class Board:
    """Aggregated table: ``mean``/``std``/``n`` are DataFrames indexed by row label with one
    column per key in ``columns``; ``params`` holds trainable parameters per row."""

    metric: str
    columns: list[str]
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.Series
    params: pd.Series
    reported: pd.Series  # bool per row
    # Rows compared with each other (the dataset of an ooDML row); None = all rows.
    groups: pd.Series | None = None
    # What a reader must know that the cells cannot say (e.g. a Recall@K the records lack;
    # duplicates set aside, several code versions, unknown identity, pooling).
    notes: list[str] = field(default_factory=list)
    # Where the rows come from (duplicates set aside, several code versions, unknown data
    # identity, deliberate pooling): part of the table in every file format, unlike ``notes``.
    footnotes: list[str] = field(default_factory=list)
    # ooDML: group -> {column: train/test FID of that level}; None elsewhere.
    fids: dict[str, dict[str, float]] | None = None
    # Measured rows: row -> its run ids and its data identity (what --significance pairs).
    runs: dict[str, list[str]] = field(default_factory=dict)
    data_ids: dict[str, str] = field(default_factory=dict)
    # ooDML: every level is its own split, so runs and data identities are per cell:
    # row -> column -> run ids / data identity (measured rows only).
    cell_runs: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    cell_data: dict[str, dict[str, str]] = field(default_factory=dict)
    # --significance (results.significance.board_significance): each cell's interval (NaN
    # without per-query outcomes), per column the rows tied for the top, and how.
    low: pd.DataFrame | None = None
    high: pd.DataFrame | None = None
    tied: dict[str, set[str]] | None = None
    significance: str | None = None

    @property
    def rows(self) -> list[str]:
        return list(self.mean.index)


def _metric_short(metric: str) -> str:
    """``recall@10`` -> ``R@10``; other metrics unchanged."""
    return "R@" + metric.split("@", 1)[1] if metric.startswith("recall@") else metric


def _title(key: str) -> str:
    if "/" in key:  # paper view: "<scope>/<metric>"
        scope, metric = key.split("/", 1)
        return f"{_title(scope)} {_metric_short(metric)}"
    base = key.removeprefix("mini-")
    title = COLUMN_TITLES.get(base, COLUMN_TITLES.get(key, key))
    if key.startswith("mini-"):
        return f"mini-{title}"
    if key.startswith("level:"):
        return f"L{key.split(':')[1]}"
    return title


def _dataset_order(df: pd.DataFrame) -> list[str]:
    present = [s for s in df["scope"].dropna().unique()
               if s not in ("universal", "harmonic_mean", "arithmetic_mean", "extra")]
    order = [d for suite in SUITES.values() for d in suite if d in present]
    return order + sorted(set(present) - set(order))


def build_board(df: pd.DataFrame, metric: str = "recall@1", *, suite: str | None = None,
                protocol: str = "uml", methods: list[str] | None = None,
                sort: str | None = None, dataset: str | None = None,
                group_by: tuple[str, ...] = DEFAULT_GROUP_BY) -> Board:
    """Aggregate the long frame into a :class:`Board` (see module docstring); ``group_by``
    is :func:`umlbench.results.grouping.parse_group_by`'s tuple."""
    sel = df[(df["protocol"].fillna("uml") == protocol)]
    if suite:
        sel = sel[sel["suite"] == suite]
    if methods:
        sel = sel[sel["method"].isin(methods) | sel["display_name"].isin(methods)]
    sel = sel[sel["status"].isin(["completed", "reported"])]
    if protocol in ("oodml", "fewshot"):
        return _level_board(sel, metric, dataset, sort, group_by)
    all_scopes = set(sel["scope"].dropna())
    sel = sel[(sel["metric"] == metric) & sel["scope"].notna()]
    if sel.empty:
        raise UserError(f"no {protocol} results with metric {metric!r}"
                        + (f" for suite {suite!r}" if suite else "")
                        + "; run `umlbench run` first or change --metric/--suite/--protocol")
    sel, dropped = deduplicate(sel, group_by)
    sel = sel.assign(row=np.where(sel["source"] == "reported",
                                  sel["display_name"] + REPORTED_MARK,
                                  row_labels(sel, group_by)))
    columns = _dataset_order(sel) + [c for c in ("universal", "harmonic_mean")
                                     if c in set(sel["scope"])]
    per_run = sel.pivot_table(index=["row", "run_id"], columns="scope", values="value",
                              aggfunc="first")
    grouped = per_run.groupby(level="row")
    mean = grouped.mean().reindex(columns=columns)
    std = grouped.std(ddof=1).reindex(columns=columns)
    n = grouped.size()
    meta = sel.drop_duplicates("row").set_index("row")
    params = meta["trainable"].reindex(mean.index)
    reported = (meta["source"] == "reported").reindex(mean.index)
    absent = [d for d in _dataset_order(pd.DataFrame({"scope": sorted(all_scopes)}))
              if d not in columns]
    notes = [f"{metric} is not in the records of {', '.join(absent)}; `--view paper` shows "
             "each dataset's own Recall@K list"] if absent else []
    measured = sel[sel["source"] == "measured"]
    board = Board(metric, columns, mean, std, n, params, reported, notes=notes,
                  footnotes=footnotes(sel, sel["row"], dropped, group_by),
                  runs={str(r): list(dict.fromkeys(g["run_id"]))
                        for r, g in measured.groupby("row")},
                  data_ids={str(r): str(g["data_id"].iloc[0]) for r, g in measured.groupby("row")})
    return _sorted(board, sort or ("harmonic_mean" if "harmonic_mean" in columns else None))


def _level_board(sel: pd.DataFrame, metric: str, dataset: str | None, sort: str | None,
                 group_by: tuple[str, ...]) -> Board:
    """ooDML: rows = method x dataset, columns = levels + AUC of the universal-scope metric."""
    from umlbench.protocols.oodml_summary import normalised_auc

    sel = sel[(sel["metric"] == metric) & (sel["scope"] == "universal") & sel["level"].notna()]
    if dataset:
        sel = sel[sel["dataset"] == dataset]
    if sel.empty:
        raise UserError(f"no ooDML results with metric {metric!r}; run "
                        "`umlbench run --protocol oodml --level all` first")
    sel, dropped = deduplicate(sel, group_by)
    # Levels are the columns: a row is one config up to protocol.level, within its dataset.
    labels = row_labels(sel, group_by, partition=["dataset"], ignore=["protocol.level"])
    # Few-shot records of one run differ only in their support size: one row per size, never
    # an average over sizes.
    shots = pd.to_numeric(sel["shots"], errors="coerce")
    per_size = np.where(shots.notna(), " / " + shots.fillna(0).astype(int).astype(str) + "-shot",
                        "")
    sel = sel.assign(row=labels + " / " + sel["dataset"].astype(str) + per_size,
                     col="level:" + sel["level"].astype(int).astype(str))
    levels = sorted(sel["level"].dropna().astype(int).unique())
    columns = [f"level:{lv}" for lv in levels]
    per_seed = sel.pivot_table(index=["row", "seed"], columns="col", values="value",
                               aggfunc="mean").reindex(columns=columns)
    auc = per_seed.apply(lambda r: normalised_auc([lv for lv in levels], r.to_numpy()), axis=1)
    per_seed["auc"] = auc
    columns = columns + ["auc"]
    grouped = per_seed.groupby(level="row")
    mean, std, n = grouped.mean(), grouped.std(ddof=1), grouped.size()
    meta = sel.drop_duplicates("row").set_index("row")
    groups = meta["dataset"].astype(str).reindex(mean.index)
    fid = pd.to_numeric(sel["fid"], errors="coerce")
    fids = {}
    for d, part in sel.assign(fid=fid).groupby("dataset"):
        per_level = part.groupby("col")["fid"].mean()
        fids[str(d)] = {c: float(per_level[c]) for c in columns
                        if c in per_level and not math.isnan(per_level[c])}
    notes = [f"FID per level, {d}: " + " · ".join(f"{_title(c)} {v:.2f}" for c, v in f.items())
             for d, f in fids.items() if f]
    cell_runs: dict[str, dict[str, list[str]]] = {}
    cell_data: dict[str, dict[str, str]] = {}
    for (row, col), part in sel[sel["source"] == "measured"].groupby(["row", "col"]):
        cell_runs.setdefault(str(row), {})[str(col)] = list(dict.fromkeys(part["run_id"]))
        cell_data.setdefault(str(row), {})[str(col)] = str(part["data_id"].iloc[0])
    board = Board(metric, columns, mean, std, n, meta["trainable"].reindex(mean.index),
                  (meta["source"] == "reported").reindex(mean.index), groups,
                  notes=notes, fids=fids,
                  footnotes=footnotes(sel, sel["row"], dropped, group_by),
                  cell_runs=cell_runs, cell_data=cell_data)
    board = _sorted(board, sort or "auc")
    # Datasets in suite order, each a block of methods in the requested order: levels of
    # different datasets are different splits, so rows are compared only within a dataset.
    rank = {d: i for i, d in enumerate(_dataset_order(sel.assign(scope=sel["dataset"])))}
    return _reordered(board, sorted(board.rows, key=lambda r: rank[board.groups[r]]))


def _sorted(board: Board, key: str | None) -> Board:
    if key is None or key == "name":
        order = sorted(board.rows)
    elif key in ("trainable", "params"):
        order = list(board.params.sort_values(na_position="last", kind="stable").index)
    elif key in board.columns:
        order = list(board.mean[key].sort_values(ascending=False, na_position="last",
                                                 kind="stable").index)
    else:
        raise UserError(f"cannot sort by {key!r}; use one of: name, trainable, "
                        + ", ".join(board.columns))
    return _reordered(board, order)


def _reordered(board: Board, order: list[str]) -> Board:
    return dataclasses.replace(
        board, mean=board.mean.loc[order], std=board.std.loc[order], n=board.n.loc[order],
        params=board.params.loc[order], reported=board.reported.loc[order],
        groups=None if board.groups is None else board.groups.loc[order],
        low=None if board.low is None else board.low.loc[order],
        high=None if board.high is None else board.high.loc[order])


def paper_recall_ks(dataset: str) -> tuple[int, ...]:
    """The Recall@K list papers report for ``dataset`` (``mini-<x>`` follows ``<x>``)."""
    return PAPER_RECALL_KS.get(dataset.removeprefix("mini-"), DEFAULT_RECALL_KS)


def build_paper_board(df: pd.DataFrame, *, suite: str | None = None, protocol: str = "uml",
                      methods: list[str] | None = None, sort: str | None = None,
                      group_by: tuple[str, ...] = DEFAULT_GROUP_BY) -> Board:
    """The paper's table layout: each dataset with its own Recall@K list
    (:func:`paper_recall_ks`), then universal and harmonic mean at Recall@1.

    Columns are ``"<scope>/recall@K"``. A K missing from some or all records (records written
    before per-dataset K lists existed) is shown as "–" and named in ``notes``.
    """
    if protocol in ("oodml", "fewshot"):
        raise UserError("--view paper lays out the uml protocol's per-dataset table; ooDML "
                        "boards have one column per shift level")
    base = build_board(df, "recall@1", suite=suite, protocol=protocol, methods=methods,
                       group_by=group_by)
    rows = base.rows
    by_metric = {"recall@1": base}
    columns, means, stds = [], {}, {}
    missing: dict[str, list[str]] = {}
    measured = ~base.reported.astype(bool)
    for scope in base.columns:
        ks = (1,) if scope in _SUMMARIES else paper_recall_ks(scope)
        for k in ks:
            metric = f"recall@{k}"
            if metric not in by_metric:
                try:
                    by_metric[metric] = build_board(df, metric, suite=suite, protocol=protocol,
                                                    methods=methods, group_by=group_by)
                except UserError:
                    by_metric[metric] = None  # no record has this K at all
            src = by_metric[metric]
            key = f"{scope}/{metric}"
            columns.append(key)
            has = src is not None and scope in src.columns
            means[key] = src.mean[scope].reindex(rows) if has else pd.Series(math.nan, rows)
            stds[key] = src.std[scope].reindex(rows) if has else pd.Series(math.nan, rows)
            if means[key][measured].isna().any():
                missing.setdefault(scope, []).append(f"R@{k}")
    mean, std = pd.DataFrame(means, index=rows), pd.DataFrame(stds, index=rows)
    notes = [f"{scope}: {', '.join(ks)} missing from some or all runs (shown as –); records "
             "written before per-dataset Recall@K lists lack them, rerun to fill them"
             for scope, ks in missing.items()]
    board = dataclasses.replace(base, metric="paper", columns=columns, mean=mean, std=std,
                                notes=base.notes + notes)
    return _sorted(board, sort or ("harmonic_mean/recall@1" if "harmonic_mean/recall@1"
                                   in columns else None))
