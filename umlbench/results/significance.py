"""Which differences are real: paired comparisons of runs from their per-query outcomes.

The statistics are :mod:`umlbench.metrics.paired`'s; this module finds the outcomes of the runs
a comparison names (sidecars next to the records, :mod:`umlbench.results.perquery`), lines them
up query by query and builds:

- :func:`compare`: two rows (each one or more seeds of one config on one data identity), per
  dataset, universal and harmonic mean: the paired difference ``B - A`` with its interval and
  bootstrap p-value, Holm-adjusted across the tested scopes, and, for hit metrics of two
  single runs, the exact McNemar p-value (also Holm-adjusted).
- :func:`board_significance`: a leaderboard's cell intervals and, per column, the rows
  statistically tied for the top (not significantly worse than the best, Holm across the rows
  compared with it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from umlbench.data.registry import SUITES
from umlbench.errors import UserError
from umlbench.metrics import paired
from umlbench.results.perquery import PerQuery, is_binary, load_for_record, pair
from umlbench.results.record import RecordError, read_json
from umlbench.results.store import find_record_files

__all__ = ["BoardIntervals", "Comparison", "ScopeDifference", "board_significance",
           "cell_intervals", "compare", "comparison_records", "comparison_rich", "load_outcomes",
           "plot_intervals", "record_paths", "render_comparison", "replace_board",
           "resolve_rows"]

HM = paired.HM
_EPISODE = "episode-"  # perquery.episode_scope: few-shot records have one scope per episode
EPISODES = "episodes"  # the scope of a few-shot comparison: the mean over episodes


def record_paths(results_dir: Path) -> dict[str, Path]:
    """run id -> record file, for every JSON record under ``results_dir``."""
    out: dict[str, Path] = {}
    for path in find_record_files([Path(results_dir)]):
        try:
            data = read_json(path)
        except RecordError:
            continue  # load_store already warned about it
        if isinstance(data, dict) and isinstance(data.get("run_id"), str):
            out[data["run_id"]] = path
    return out


def load_outcomes(run_ids: Iterable[str], paths: Mapping[str, Path]) -> dict[str, PerQuery | None]:
    """run id -> its per-query outcomes, None when the record has no sidecar (older schema or a
    missing file). A sidecar that does not match its record's hash is a UserError."""
    out: dict[str, PerQuery | None] = {}
    for run_id in run_ids:
        path = paths.get(run_id)
        try:
            out[run_id] = None if path is None else load_for_record(path)
        except RecordError as exc:
            raise UserError(str(exc)) from None
    return out


def _matrices(rows: Sequence[Sequence[PerQuery]], scopes: Sequence[str], metric: str
              ) -> dict[str, list[np.ndarray]]:
    """scope -> per row an (m_r, n) array of ``metric``'s per-query values, every row and seed
    aligned on the first run's query order (UserError when the queries differ)."""
    out: dict[str, list[np.ndarray]] = {}
    for scope in scopes:
        ref = rows[0][0].scopes[scope]
        out[scope] = [np.stack([pair(ref, run.scopes[scope], metric)[1] for run in runs])
                      for runs in rows]
    return out


def _common_scopes(runs: Iterable[PerQuery], metric: str) -> list[str]:
    """Scopes every run has ``metric`` for: datasets in suite order, then universal."""
    runs = list(runs)
    names = {s for s in runs[0].scopes if not s.startswith(_EPISODE)
             and all(s in r.scopes and metric in r.scopes[s].values for r in runs)}
    known = [d for suite in SUITES.values() for d in suite if d in names]  # suite order
    rest = sorted(names - set(known) - {"universal"})
    return list(dict.fromkeys(known)) + rest + (["universal"] if "universal" in names else [])


@dataclass(frozen=True)
class ScopeDifference:
    """One scope of a comparison (metric units, fractions for Recall@K): the two rows' means,
    the difference ``B - A`` with its interval and p-values (``mcnemar*`` None unless both rows
    are one run each and the metric is a hit metric)."""

    scope: str
    n_queries: int | None
    a: float
    b: float
    diff: paired.Interval
    p_holm: float
    mcnemar: float | None = None
    mcnemar_holm: float | None = None
    only_a: int | None = None
    only_b: int | None = None


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`: one :class:`ScopeDifference` per scope (datasets in suite
    order, universal, harmonic mean; or the mean over episodes) and how it was computed."""

    metric: str
    a_name: str
    b_name: str
    a_seeds: int
    b_seeds: int
    scopes: list[ScopeDifference]
    resamples: int
    level: float
    seed: int
    episodic: bool = False

    def method_note(self) -> str:
        """How the numbers were computed, for every output format."""
        if self.episodic:
            return (f"Difference = B - A over {self.scopes[0].n_queries} few-shot episodes "
                    f"(each row's seeds averaged per episode): {self.level:.0%} Student-t "
                    "interval of the per-episode differences and the paired t-test "
                    "(scipy ttest_1samp); no correction (one test)")
        test = (f"Holm-adjusted across the {len(self.scopes)} scopes tested "
                "(bootstrap p-values; McNemar p-values separately)" if any(
                    s.mcnemar is not None for s in self.scopes)
                else f"Holm-adjusted across the {len(self.scopes)} scopes tested")
        text = paired.describe(self.resamples, self.level, self.seed, correction=test,
                               seeds_resampled=max(self.a_seeds, self.b_seeds) > 1)
        text = "Difference = B - A. " + text
        if any(s.mcnemar is not None for s in self.scopes):
            text += "; exact McNemar test on the discordant queries (scipy binomtest)"
        elif is_binary(self.metric):
            text += "; McNemar needs one run per row (n/a with several seeds)"
        return text


def compare(a: Sequence[PerQuery], b: Sequence[PerQuery], *, metric: str = "recall@1",
            a_name: str = "A", b_name: str = "B", resamples: int = paired.DEFAULT_RESAMPLES,
            level: float = paired.DEFAULT_LEVEL, seed: int = paired.DEFAULT_SEED) -> Comparison:
    """Paired comparison of two rows given as their runs' per-query outcomes (one per seed);
    see the module docstring. UserError when the runs share no scope with ``metric`` or were
    scored on different queries. Few-shot records (one scope per episode) are compared
    episode by episode: :func:`_compare_episodes`."""
    episodic = {bool(r.episodic) for r in [*a, *b]}
    if episodic == {True}:
        return _compare_episodes(a, b, metric, a_name, b_name, level, seed)
    if len(episodic) > 1:
        raise UserError("one row is a few-shot record (scored per episode) and the other is "
                        "not; compare records of the same protocol")
    scopes = _common_scopes([*a, *b], metric)
    if not scopes:
        raise UserError(f"the runs share no scope with per-query {metric}")
    mats = _matrices([a, b], scopes, metric)
    reps = paired.bootstrap(mats, resamples=resamples, seed=seed)
    order = scopes + ([HM] if HM in reps.draws else [])
    diffs = {s: paired.difference(reps, s, 0, 1, level) for s in order}
    p_holm = paired.holm([diffs[s].p_value for s in order])
    mcnemar: dict[str, tuple[float, int, int]] = {}
    if is_binary(metric) and len(a) == 1 and len(b) == 1:
        mcnemar = {s: paired.mcnemar_exact(mats[s][0][0], mats[s][1][0]) for s in scopes}
    m_holm = dict(zip(mcnemar, paired.holm([v[0] for v in mcnemar.values()])))
    out = []
    for i, s in enumerate(order):
        mc = mcnemar.get(s)
        out.append(ScopeDifference(
            s, mats[s][0].shape[1] if s in mats else None, float(reps.estimate[s][0]),
            float(reps.estimate[s][1]), diffs[s], float(p_holm[i]),
            mc[0] if mc else None, float(m_holm[s]) if mc else None,
            mc[1] if mc else None, mc[2] if mc else None))
    return Comparison(metric, a_name, b_name, len(a), len(b), out, resamples, level, seed)


def _compare_episodes(a: Sequence[PerQuery], b: Sequence[PerQuery], metric: str, a_name: str,
                      b_name: str, level: float, seed: int) -> Comparison:
    """Few-shot records: the score is the mean over episodes of each episode's mean, and
    episodes are independent draws, so the difference is the Student-t interval of the
    per-episode differences (each row's seeds averaged per episode) with the paired t-test,
    the same definition as the protocol's stored gain CI (metrics.paired.t_difference)."""
    episodes = sorted({s for r in [*a, *b] for s in r.scopes},
                      key=lambda s: int(s.removeprefix(_EPISODE)))
    means = []
    for runs in (a, b):
        per_episode = []
        for e in episodes:
            ref = next(r for r in [*a, *b] if e in r.scopes).scopes[e]
            if any(e not in r.scopes for r in runs):
                raise UserError(f"the runs do not share episode {e}; compare runs of the same "
                                "few-shot split and support size")
            per_episode.append(np.mean([pair(ref, r.scopes[e], metric)[1].mean() for r in runs]))
        means.append(np.array(per_episode))
    diff = paired.t_difference(means[1] - means[0], level)
    scope = ScopeDifference(EPISODES, len(episodes), float(means[0].mean()),
                            float(means[1].mean()), diff, diff.p_value)
    return Comparison(metric, a_name, b_name, len(a), len(b), [scope], 0, level, seed,
                      episodic=True)


# --- leaderboard -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardIntervals:
    """Per leaderboard row and column: the interval of the row's mean (``low``/``high``, NaN
    where the row has no per-query outcomes), and per column the rows tied for the top."""

    low: pd.DataFrame
    high: pd.DataFrame
    tied: dict[str, set[str]]
    note: str
    footnotes: list[str]


def cell_intervals(rows: Mapping[str, Sequence[str]], data_ids: Mapping[str, str],
                   outcomes: Mapping[str, PerQuery | None], metric: str, *,
                   resamples: int = paired.DEFAULT_RESAMPLES, level: float = paired.DEFAULT_LEVEL,
                   seed: int = paired.DEFAULT_SEED
                   ) -> tuple[dict[str, paired.Replicates], dict[str, list[str]], list[str]]:
    """Joint replicates of the rows that have outcomes, one bootstrap per data identity.

    Args:
        rows: row label -> its run ids (one per seed).
        data_ids: row label -> data identity (rows on different data are never paired).
        outcomes: run id -> per-query outcomes or None.

    Returns:
        (data id -> Replicates, data id -> the row labels in the Replicates' row order, the rows
        left without an interval).
    """
    usable = {r: ids for r, ids in rows.items()
              if ids and all(outcomes.get(i) is not None for i in ids)}
    missing = [r for r in rows if r not in usable]
    by_data: dict[str, list[str]] = {}
    for r in usable:
        by_data.setdefault(data_ids[r], []).append(r)
    reps, order = {}, {}
    for data_id, labels in by_data.items():
        runs = [[outcomes[i] for i in usable[r]] for r in labels]
        scopes = _common_scopes([q for rr in runs for q in rr], metric)
        if not scopes:
            missing += labels
            continue
        try:
            mats = _matrices(runs, scopes, metric)
        except UserError:  # same data identity, different queries: cannot be paired
            missing += labels
            continue
        reps[data_id] = paired.bootstrap(mats, resamples=resamples, seed=seed)
        order[data_id] = labels
    return reps, order, missing


def board_significance(mean: pd.DataFrame, columns: Sequence[str],
                       rows: Mapping[str, Sequence[str]],
                       data_ids: Mapping[str, str], outcomes: Mapping[str, PerQuery | None],
                       metric: str, *, resamples: int = paired.DEFAULT_RESAMPLES,
                       level: float = paired.DEFAULT_LEVEL, seed: int = paired.DEFAULT_SEED
                       ) -> BoardIntervals:
    """Cell intervals and tied-for-the-top rows of a leaderboard.

    ``mean``: the board's means (rows x ``columns``); ``rows``: the measured rows' run ids.
    Per column the best is the highest mean among the measured rows; every row with outcomes on
    the best's data is compared with it (difference best - row), Holm across those rows; a row
    is tied when its adjusted p-value is at least ``1 - level``. A column whose best row has no
    outcomes marks nothing (said in the footnotes)."""
    reps, order, missing = cell_intervals(rows, data_ids, outcomes, metric,
                                          resamples=resamples, level=level, seed=seed)
    low = pd.DataFrame(math.nan, index=mean.index, columns=list(columns))
    high = low.copy()
    where: dict[str, tuple[str, int]] = {}
    for data_id, labels in order.items():
        for i, r in enumerate(labels):
            where[r] = (data_id, i)
            for c in columns:
                if c in reps[data_id].draws:
                    iv = paired.interval(reps[data_id], c, i, level)
                    low.at[r, c], high.at[r, c] = iv.low, iv.high
    tied: dict[str, set[str]] = {}
    unmarked, other_data = [], set()
    alpha = 1.0 - level
    for c in columns:
        col = mean.loc[[r for r in rows if r in mean.index], c].dropna()
        if col.empty:
            tied[c] = set()
            continue
        best = col.idxmax()
        if best not in where or c not in reps[where[best][0]].draws:
            tied[c] = set()
            unmarked.append(c)
            continue
        data_id, bi = where[best]
        others = [r for r in col.index if r != best and r in where and where[r][0] == data_id]
        other_data |= {r for r in col.index if r in where and where[r][0] != data_id}
        p = [paired.difference(reps[data_id], c, where[r][1], bi, level).p_value
             for r in others]
        adj = paired.holm(p)
        tied[c] = {best} | {r for r, q in zip(others, adj) if q >= alpha}
    note = ("Bold: tied for the top, i.e. not significantly worse than the column's best "
            f"(paired bootstrap difference, Holm-adjusted across the rows compared, p ≥ "
            f"{alpha:.2g}); " + paired.describe(resamples, level, seed,
                                               seeds_resampled=any(len(v) > 1 for v in
                                                                   rows.values())))
    notes = []
    if missing and len(missing) == len(rows):
        notes.append("No record has per-query outcomes (records written before schema 3, or "
                     "missing sidecars): no intervals, nothing marked; rerun the runs to get "
                     "them")
        unmarked = []
    elif missing:
        notes.append("No per-query outcomes (records without a sidecar, or with different "
                      "queries): no interval and never marked for " + ", ".join(sorted(missing)))
    if unmarked:
        notes.append("Nothing marked in " + ", ".join(unmarked) + ": the best row there has "
                     "no per-query outcomes")
    if other_data:
        notes.append("Not tested against the best (different data): "
                     + ", ".join(sorted(other_data)))
    return BoardIntervals(low, high, tied, note, notes)


def level_board_significance(board, outcomes: Mapping[str, PerQuery | None], *,
                             resamples: int = paired.DEFAULT_RESAMPLES,
                             level: float = paired.DEFAULT_LEVEL,
                             seed: int = paired.DEFAULT_SEED) -> BoardIntervals:
    """Cell intervals and tied-for-the-top rows of an ooDML board (``leaderboard._level_board``):
    rows are compared only within their dataset (``board.groups``), level by level.

    Every level is its own split: its cells come from a paired bootstrap over that level's
    queries (universal scope; seeds then queries for rows with several seeds), one per level
    with seed ``seed + k`` so that levels resample independently. The AUC column is the
    trapezoid of each replicate's per-level means (``normalised_auc`` is linear in them), for the
    rows with outcomes at every level, paired where their levels are. Per cell the best mean of
    a dataset's rows is compared with every other row of that dataset on the same data, Holm
    across those rows; a row is tied when its adjusted p-value is at least ``1 - level``."""
    from umlbench.protocols.oodml_summary import normalised_auc

    metric = board.metric
    level_cols = [c for c in board.columns if c.startswith("level:")]
    low = pd.DataFrame(math.nan, index=board.mean.index, columns=list(board.columns))
    high = low.copy()
    tied: dict[str, set[str]] = {c: set() for c in board.columns}
    draws: dict[tuple[str, str], np.ndarray] = {}  # (row, level column) -> (B,) replicates
    data_of: dict[tuple[str, str], str] = {}
    missing: set[str] = set()
    unmarked: set[str] = set()
    alpha = 1.0 - level
    groups = board.groups if board.groups is not None else pd.Series("", board.mean.index)

    def mark(col: str, rows: list[str], diff) -> None:
        """Tied rows of one dataset's block in ``col``: ``diff(best, row)`` -> p or None."""
        means = board.mean.loc[rows, col].dropna()
        if means.empty:
            return
        best = str(means.idxmax())
        p = {r: diff(best, r) for r in means.index if r != best}
        if diff(best, best) is None:
            unmarked.add(col)
            return
        tested = [r for r, v in p.items() if v is not None]
        adj = paired.holm([p[r] for r in tested])
        tied[col] |= {best} | {r for r, q in zip(tested, adj) if q >= alpha}

    for k, col in enumerate(level_cols):
        rows = {r: cells[col] for r, cells in board.cell_runs.items()
                if col in cells and r in board.mean.index}
        data_ids = {r: board.cell_data[r][col] for r in rows}
        reps, order, miss = cell_intervals(rows, data_ids, outcomes, metric,
                                           resamples=resamples, level=level, seed=seed + k)
        missing |= set(miss)
        where = {}
        for data_id, labels in order.items():
            if "universal" not in reps[data_id].draws:
                missing |= set(labels)
                continue
            for i, r in enumerate(labels):
                where[r] = (data_id, i)
                iv = paired.interval(reps[data_id], "universal", i, level)
                low.at[r, col], high.at[r, col] = iv.low, iv.high
                draws[(r, col)] = reps[data_id].draws["universal"][:, i]
                data_of[(r, col)] = data_id

        def diff(best, r, col=col, where=where, reps=reps):
            if best not in where or r not in where or where[r][0] != where[best][0]:
                return None
            d_id = where[best][0]
            return paired.difference(reps[d_id], "universal", where[r][1], where[best][1],
                                     level).p_value

        for g in groups.unique():
            mark(col, [r for r in board.mean.index if groups[r] == g and r in rows], diff)

    levels = [int(c.split(":")[1]) for c in level_cols]
    weights = np.array([normalised_auc(levels, np.eye(len(levels))[i])
                        for i in range(len(levels))])
    auc: dict[str, np.ndarray] = {}
    for r in board.mean.index:
        if level_cols and all((r, c) in draws for c in level_cols):
            auc[r] = sum(w * draws[(r, c)] for w, c in zip(weights, level_cols))
            q = np.quantile(auc[r], [alpha / 2, 1 - alpha / 2])
            low.at[r, "auc"], high.at[r, "auc"] = float(q[0]), float(q[1])

    def diff_auc(best, r):
        if best not in auc or r not in auc or any(
                data_of[(best, c)] != data_of[(r, c)] for c in level_cols):
            return None
        return paired.bootstrap_p(auc[best] - auc[r])

    if "auc" in board.columns:
        for g in groups.unique():
            mark("auc", [r for r in board.mean.index if groups[r] == g
                         and r in board.cell_runs], diff_auc)
    note = ("Bold: tied for the top of its dataset's rows, i.e. not significantly worse than "
            f"the best there (paired bootstrap difference per level, Holm-adjusted across the "
            f"rows compared, p ≥ {alpha:.2g}); "
            + paired.describe(resamples, level, seed, seeds_resampled=any(
                len(v) > 1 for cells in board.cell_runs.values() for v in cells.values()))
            .replace("; HM resamples every dataset's queries jointly", "")
            + f"; each level resampled on its own (seed {seed} + level index), AUC the "
            "trapezoid of the per-level replicates")
    notes = []
    measured = set(board.cell_runs)
    if measured and missing >= measured:
        notes.append("No record has per-query outcomes (records written before schema 3, or "
                     "missing sidecars): no intervals, nothing marked; rerun the runs to get "
                     "them")
    elif missing:
        notes.append("No per-query outcomes at some levels (records without a sidecar): no "
                     "interval there, and no AUC interval, for " + ", ".join(sorted(missing)))
    if unmarked:
        notes.append("Nothing marked in " + ", ".join(
            _level_title(c) for c in board.columns if c in unmarked)
            + " for some datasets: the best row there has no per-query outcomes")
    return BoardIntervals(low, high, tied, note, notes)


def _level_title(col: str) -> str:
    return f"L{col.split(':')[1]}" if col.startswith("level:") else col.upper()


def _normalised(text: str) -> str:
    """``"Fine-tuning, unified (ArcFace)"`` -> ``"finetuningunifiedarcface"``: how a name typed
    on a command line is matched when it is not spelled exactly as the row label."""
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


def resolve_rows(df: pd.DataFrame, names: Sequence[str], labels: pd.Series
                 ) -> list[tuple[str, list[str], str]]:
    """Each name -> (row label, its run ids, data id). A name is matched, in this order, as the
    exact row label, the row label up to case and punctuation, a display name, then a method
    id; the first that matches decides, and it must name exactly one row. UserError otherwise
    (one line, with the rows to choose from)."""
    frame = df.assign(row=labels)
    norm = frame["row"].map(_normalised)
    out = []
    for name in names:
        found: list[str] = []
        for hit in (frame["row"] == name, norm == _normalised(name),
                    frame["display_name"] == name, frame["method"] == name):
            found = sorted(frame.loc[hit, "row"].unique())
            if found:
                break
        if len(found) != 1:
            choices = sorted(frame["row"].unique())
            what = "matches no row" if not found else "matches several rows (" + "; ".join(
                found) + ")"
            raise UserError(f"{name!r} {what}; rows: " + "; ".join(choices))
        row = found[0]
        runs = frame[frame["row"] == row]
        out.append((row, list(dict.fromkeys(runs["run_id"])), str(runs["data_id"].iloc[0])))
    return out


def replace_board(board, intervals: BoardIntervals):
    """The board with its intervals and tied marks (see ``leaderboard.Board``)."""
    return dataclasses.replace(board, low=intervals.low.reindex(board.mean.index),
                               high=intervals.high.reindex(board.mean.index),
                               tied=intervals.tied, significance=intervals.note,
                               footnotes=board.footnotes + intervals.footnotes)



# --- output of compare -------------------------------------------------------------------------

_SCOPE_TITLES = {"universal": "universal", HM: "harmonic mean",
                 EPISODES: "mean over episodes"}


def _pp(v: float | None) -> float | None:
    """Fraction -> percentage points (None and NaN stay None)."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else 100 * v


def comparison_records(cmp: Comparison) -> list[dict]:
    """One dict per scope, values in percent (percentage points for differences)."""
    out = []
    for s in cmp.scopes:
        out.append({
            "scope": s.scope, "queries": s.n_queries, "a": _pp(s.a), "b": _pp(s.b),
            "diff": _pp(s.diff.estimate), "low": _pp(s.diff.low), "high": _pp(s.diff.high),
            "p": s.diff.p_value, "p_holm": s.p_holm, "mcnemar_p": s.mcnemar,
            "mcnemar_p_holm": s.mcnemar_holm, "only_a": s.only_a, "only_b": s.only_b,
            "significant": bool(s.p_holm < 1 - cmp.level)})
    return out


def _p_text(p: float | None, resamples: int | None = None) -> str:
    if p is None:
        return "n/a"
    if resamples is not None and p <= 2 / (resamples + 1) + 1e-12:
        return f"<{2 / (resamples + 1):.1g}"  # the bootstrap's smallest p-value
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def render_comparison(cmp: Comparison, fmt: str) -> str:
    """``json``, ``csv`` or ``markdown`` text of a comparison (percent units)."""
    import json

    recs = comparison_records(cmp)
    if fmt == "json":
        return json.dumps({"metric": cmp.metric, "a": cmp.a_name, "b": cmp.b_name,
                           "difference": "b - a", "units": "percent", "level": cmp.level,
                           "resamples": cmp.resamples, "seed": cmp.seed,
                           "seeds": {"a": cmp.a_seeds, "b": cmp.b_seeds},
                           "correction": "holm", "method": cmp.method_note(),
                           "scopes": recs}, indent=2) + "\n"
    if fmt == "csv":
        frame = pd.DataFrame(recs)
        return frame.to_csv(index=False, float_format="%.6g") + f"# {cmp.method_note()}\n"
    if fmt == "markdown":
        level = f"{cmp.level:.0%}"
        head = ["Scope", "Episodes" if cmp.episodic else "Queries", f"A {cmp.metric}",
                f"B {cmp.metric}", "B − A",
                f"{level} interval", "p", "p (Holm)", "McNemar p (Holm)"]
        lines = [(f"A = {cmp.a_name} ({cmp.a_seeds} seed{'s' * (cmp.a_seeds > 1)}), "
                  f"B = {cmp.b_name} ({cmp.b_seeds} seed{'s' * (cmp.b_seeds > 1)}); "
                  "values in percent, differences in points."), "",
                 "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        for s, r in zip(cmp.scopes, recs):
            lines.append("| " + " | ".join([
                _SCOPE_TITLES.get(s.scope, s.scope), str(s.n_queries or "–"),
                f"{r['a']:.2f}", f"{r['b']:.2f}", f"{r['diff']:+.2f}",
                f"[{r['low']:+.2f}, {r['high']:+.2f}]", _p_text(s.diff.p_value, cmp.resamples),
                _p_text(s.p_holm), _p_text(s.mcnemar_holm)]) + " |")
        return "\n".join(lines + ["", f"Note: {cmp.method_note()}"]) + "\n"
    raise UserError(f"unknown format {fmt!r}; known: json, csv, markdown")


def comparison_rich(cmp: Comparison):
    """The terminal view: a rich table (significant differences in colour) and the method."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    recs = comparison_records(cmp)
    # The raw bootstrap p-values are in the file formats; the terminal shows the adjusted ones,
    # which decide, so that the table fits 80 columns.
    t = Table(title=f"{cmp.metric}: B − A in percentage points", title_justify="left",
              header_style="bold", pad_edge=False, show_edge=False, box=box.SIMPLE_HEAD,
              padding=(0, 1, 0, 0))
    for name in ["Scope", "n", "A", "B", "B − A", f"{cmp.level:.0%} interval", "p Holm",
                 "McNemar"]:
        t.add_column(name, justify="left" if name == "Scope" else "right", no_wrap=True)
    for s, r in zip(cmp.scopes, recs):
        style = ("green" if r["diff"] > 0 else "red") if r["significant"] else ""
        t.add_row(Text(_SCOPE_TITLES.get(s.scope, s.scope)), str(s.n_queries or "–"),
                  f"{r['a']:.2f}", f"{r['b']:.2f}", Text(f"{r['diff']:+.2f}", style=style),
                  f"[{r['low']:+.2f}, {r['high']:+.2f}]",
                  Text(_p_text(s.p_holm, None if len(cmp.scopes) > 1 else cmp.resamples),
                       style=style), _p_text(s.mcnemar_holm))
    head = Text(f"A = {cmp.a_name} ({cmp.a_seeds} seed{'s' * (cmp.a_seeds > 1)})\n"
                f"B = {cmp.b_name} ({cmp.b_seeds} seed{'s' * (cmp.b_seeds > 1)})")
    return Group(head, t, Text(cmp.method_note(), style="dim"))


def plot_intervals(df: pd.DataFrame, metric: str, results_dir: Path, *, suite: str | None = None,
                   protocol: str = "uml", resamples: int = paired.DEFAULT_RESAMPLES,
                   level: float = paired.DEFAULT_LEVEL, seed: int = paired.DEFAULT_SEED
                   ) -> tuple[pd.DataFrame, list[str]]:
    """Intervals of what a figure draws, in percent, and the labels left without (no per-query
    outcomes, or runs on different data).

    ``protocol="uml"`` (datasets, params): one line per measured display name and scope,
    columns ``label, scope, low, high``. ``"oodml"`` (shift): the universal scope of each
    display name, dataset and level, columns ``label, dataset, level, low, high``."""
    sel = df[(df["protocol"].fillna("uml") == protocol) & (df["status"] == "completed")
             & (df["source"] == "measured")]
    if suite:
        sel = sel[sel["suite"] == suite]
    keys = ["display_name"] if protocol == "uml" else ["display_name", "dataset", "level"]
    sel = sel.dropna(subset=keys)
    groups = {_key(k): g for k, g in sel.groupby(keys)}
    rows = {k: list(dict.fromkeys(g["run_id"])) for k, g in groups.items()}
    data_ids = {k: (str(g["data_id"].iloc[0]) if g["data_id"].nunique() == 1 else "mixed:" + k)
                for k, g in groups.items()}
    if protocol != "uml":  # every level is its own split: bootstrap each point on its own
        data_ids = {k: f"{d}|{k}" for k, d in data_ids.items()}
    outcomes = load_outcomes({i for ids in rows.values() for i in ids},
                             record_paths(results_dir))
    reps, order, missing = cell_intervals(rows, data_ids, outcomes, metric, resamples=resamples,
                                          level=level, seed=seed)
    lines = []
    for data_id, labels in order.items():
        for i, key in enumerate(labels):
            for scope in reps[data_id].draws:
                if protocol != "uml" and scope != "universal":
                    continue
                iv = paired.interval(reps[data_id], scope, i, level)
                where = dict(zip(keys, key.split("\x1f")))
                line = {"label": where["display_name"], "low": 100 * iv.low,
                        "high": 100 * iv.high}
                if protocol == "uml":
                    line["scope"] = scope
                else:
                    line |= {"dataset": where["dataset"], "level": int(float(where["level"]))}
                lines.append(line)
    columns = ["label", "scope", "low", "high"] if protocol == "uml" else [
        "label", "dataset", "level", "low", "high"]
    names = sorted({m.split("\x1f")[0] for m in missing})
    return pd.DataFrame(lines, columns=columns), names


def _key(k) -> str:
    return "\x1f".join(str(x) for x in (k if isinstance(k, tuple) else (k,)))
