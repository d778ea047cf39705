"""Commands that read run records: leaderboard, plot, validate."""

from __future__ import annotations

from pathlib import Path

import click

from umlbench import paths
from umlbench.cli.base import cli, console, out
from umlbench.cli_util import PathHelpOption, write_text
from umlbench.errors import UserError

def _stats_options(fn):
    """--resamples, --level and --seed: how intervals are computed (compare, leaderboard, plot)."""
    from umlbench.metrics.paired import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED

    fn = click.option("--seed", "seed", type=int, default=DEFAULT_SEED, show_default=True,
                      help="Seed of the bootstrap: the same seed gives the same intervals.")(fn)
    fn = click.option("--level", type=click.FloatRange(0.5, 0.999), default=DEFAULT_LEVEL,
                      show_default=True, help="Confidence level of the intervals.")(fn)
    return click.option("--resamples", type=click.IntRange(100, 1_000_000),
                        default=DEFAULT_RESAMPLES, show_default=True,
                        help="Bootstrap resamples (about 2 s per 1,000 over the 146,665 "
                        "queries of the full suite on 2 cores).")(fn)


_RESULTS_HELP = ("Folder of run records, searched recursively, with reported rows in "
                 "DIR/reference/ (default: {results}).")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "csv", "html", "json"]),
              default=None, help="Output format (default: a table in the terminal).")
@click.option("--metric", default="recall@1", show_default=True,
              help="Any recorded metric: recall@K (e.g. recall@10), map@r, map@1000, ...")
@click.option("--view", type=click.Choice(["metric", "paper"]), default="metric",
              show_default=True,
              help="metric: --metric on every dataset; paper: each dataset's Recall@K list as "
              "the literature reports it (SOP 1/10/100/1000, In-shop 1/10/20/30, others "
              "1/2/4/8; universal and HM at R@1).")
@click.option("--std", "show_std", is_flag=True,
              help="Terminal table: show the std over seeds (always in the file formats).")
@click.option("--suite", default=None)
@click.option("--protocol", default="uml", show_default=True)
@click.option("--dataset", default=None, help="oodml: only this dataset.")
@click.option("--method", "methods", multiple=True, help="Only these methods.")
@click.option("--sort", default=None, help="Column to sort by (default: harmonic mean).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None)
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              cls=PathHelpOption, help=_RESULTS_HELP)
@click.option("--no-reference", is_flag=True, help="Hide reported (non-measured) rows.")
@click.option("--group-by", "group_by", default="config,data", show_default=True,
              help="What runs must share to be one row (comma-separated: config, data, code; "
              "'name' pools every run of a display name).")
@click.option("--significance", is_flag=True,
              help="Mark every row tied for the top of its column (not significantly worse "
              "than the best: paired bootstrap over queries, Holm) instead of the best mean, "
              "and give each cell's interval (csv, json, html). Needs per-query outcomes. "
              "ooDML: per level within each dataset's rows, AUC from the per-level "
              "replicates.")
@_stats_options
def leaderboard(fmt, metric, view, show_std, suite, protocol, dataset, methods, sort, out_file,
                results_dir, no_reference, group_by, significance, resamples, level, seed):
    """Aggregate run records into a leaderboard table."""
    from umlbench.results.formats import render
    from umlbench.results.grouping import parse_group_by
    from umlbench.results.leaderboard import build_board, build_paper_board
    from umlbench.results.store import load_store
    from umlbench.results.terminal import to_rich

    grouping = parse_group_by(group_by)
    if significance:
        _significance_applies(protocol, view)
    if out_file and fmt is None:
        fmt = _format_from_suffix(out_file)
        if fmt not in ("markdown", "latex", "csv", "html", "json"):
            raise UserError(f"cannot tell the format of {out_file}; add --format or use .md, "
                            ".tex, .csv, .html or .json")
    df = load_store(Path(results_dir) if results_dir else paths.default_results_dir(),
                    include_reference=not no_reference,
                    warn=lambda m: click.echo(f"warning: {m}", err=True))
    if view == "paper":
        board = build_paper_board(df, suite=suite, protocol=protocol,
                                  methods=list(methods) or None, sort=sort, group_by=grouping)
    else:
        board = build_board(df, metric, suite=suite, protocol=protocol,
                            methods=list(methods) or None, sort=sort, dataset=dataset,
                            group_by=grouping)
    if significance:
        board = _with_significance(board, results_dir, protocol, view, resamples, level, seed)
    for note in board.notes + ([board.significance] if board.significance else []) \
            + board.footnotes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if fmt is None:
        out.print(to_rich(board, width=out.width, std=show_std))
        return
    _emit(render(board, fmt), out_file)


def _emit(text: str, out_file: str | None) -> None:
    """A rendered table to ``out_file`` (atomically) or to stdout."""
    if out_file:
        write_text(Path(out_file), text)
        console.print(f"wrote {out_file}", markup=False, highlight=False)
    else:
        click.echo(text, nl=False)


def _significance_applies(protocol: str, view: str) -> None:
    """A flag mistake is said before any record is read."""
    if protocol not in ("uml", "oodml") or view != "metric":
        raise UserError("--significance applies to the --view metric table of the uml and "
                        "oodml protocols (few-shot records compare episode by episode: "
                        "`umlbench compare`)")


def _with_significance(board, results_dir, protocol, view, resamples, level, seed):
    """The board with its cell intervals and tied-for-the-top marks."""
    from umlbench.results.significance import (board_significance, level_board_significance,
                                               load_outcomes, record_paths, replace_board)

    _significance_applies(protocol, view)
    paths_ = record_paths(Path(results_dir) if results_dir else paths.default_results_dir())
    if protocol == "oodml":
        outcomes = load_outcomes({i for cells in board.cell_runs.values()
                                  for ids in cells.values() for i in ids}, paths_)
        return replace_board(board, level_board_significance(
            board, outcomes, resamples=resamples, level=level, seed=seed))
    runs = {r: ids for r, ids in board.runs.items() if r in board.mean.index}
    outcomes = load_outcomes({i for ids in runs.values() for i in ids}, paths_)
    intervals = board_significance(board.mean, board.columns, runs, board.data_ids, outcomes,
                                   board.metric, resamples=resamples, level=level, seed=seed)
    return replace_board(board, intervals)


@cli.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--metric", default="recall@1", show_default=True,
              help="A metric with per-query outcomes: recall@K, precision@1, r_precision, "
              "map@r, map@1000.")
@_stats_options
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "markdown"]), default=None,
              help="Output format (default: a table in the terminal).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None)
@click.option("--suite", default=None, help="Rows by name: only this suite's runs.")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              cls=PathHelpOption, help=_RESULTS_HELP)
@click.option("--group-by", "group_by", default="config,data", show_default=True,
              help="Rows by name: what runs must share to be one row (as in leaderboard).")
def compare(a, b, metric, resamples, level, seed, fmt, out_file, suite, results_dir, group_by):
    """Paired comparison of two runs or rows: B - A per dataset, universal and HM.

    A and B are record files (*.json, with per-query sidecars) or leaderboard rows by name
    (row label, display name or method id; each seed of the row counts). Prints each
    difference with its interval, bootstrap p-value (Holm-adjusted across the scopes) and, for
    Recall@K of two single runs, the exact McNemar p-value."""
    from umlbench.results.significance import (compare as compare_rows, comparison_rich,
                                               render_comparison)

    (a_name, a_runs, a_data), (b_name, b_runs, b_data) = _compare_inputs(
        [a, b], results_dir, suite, group_by)
    if a_data != b_data:
        raise UserError(f"{a_name!r} and {b_name!r} were run on different data (data identity "
                        f"{a_data[:12]} vs {b_data[:12]}); only runs on the same data pair up")
    cmp = compare_rows(a_runs, b_runs, metric=metric, a_name=a_name, b_name=b_name,
                       resamples=resamples, level=level, seed=seed)
    if fmt is None and out_file:
        fmt = {"md": "markdown"}.get(Path(out_file).suffix.lstrip("."),
                                     Path(out_file).suffix.lstrip("."))
        if fmt not in ("json", "csv", "markdown"):
            raise UserError(f"cannot tell the format of {out_file}; add --format or use .json, "
                            ".csv or .md")
    if fmt is None:
        out.print(comparison_rich(cmp))
        return
    _emit(render_comparison(cmp, fmt), out_file)


def _compare_inputs(names, results_dir, suite, group_by):
    """Each of ``names`` -> (label, its runs' per-query outcomes, data id)."""
    from umlbench.results.identity import data_key
    from umlbench.results.perquery import load_for_record
    from umlbench.results.record import RecordError, read_json, validate

    out = []
    rows_frame = None
    for name in names:
        path = Path(name)
        if path.suffix == ".json" and path.is_file():
            try:
                data = read_json(path)
                rec = validate(data, str(path))
                per_query = load_for_record(path, data)
            except RecordError as exc:
                raise UserError(str(exc)) from None
            if per_query is None:
                raise UserError(f"{path}: no per-query outcomes (a schema "
                                f"{rec.upgraded_from or rec.schema_version} record or a missing "
                                "sidecar); rerun it with this umlbench to compare it")
            out.append((f"{rec.display_name} [{path.name}]", [per_query],
                        data_key(rec.identity.get("data"))))
            continue
        if path.suffix == ".json":
            raise UserError(f"{path}: no such record file")
        if rows_frame is None:
            rows_frame = _uml_rows(results_dir, suite, group_by)
        out.append(_named_row(rows_frame, name, results_dir))
    return out


def _uml_rows(results_dir, suite, group_by):
    from umlbench.results.grouping import deduplicate, parse_group_by, row_labels
    from umlbench.results.store import load_store

    grouping = parse_group_by(group_by)
    root = Path(results_dir) if results_dir else paths.default_results_dir()
    df = load_store(root, include_reference=False,
                    warn=lambda m: click.echo(f"warning: {m}", err=True))
    df = df[(df["protocol"].fillna("uml") == "uml") & (df["status"] == "completed")]
    if suite:
        df = df[df["suite"] == suite]
    if df.empty:
        raise UserError(f"no completed uml runs in {root}"
                        + (f" for suite {suite!r}" if suite else ""))
    suites = sorted(df["suite"].dropna().unique())
    if len(suites) > 1:
        raise UserError(f"runs from several suites ({', '.join(suites)}); pass --suite")
    df, _ = deduplicate(df, grouping)
    return df, row_labels(df, grouping), root


def _named_row(rows, name, results_dir):
    from umlbench.results.significance import load_outcomes, record_paths, resolve_rows

    df, labels, root = rows
    (label, run_ids, data_id), = resolve_rows(df, [name], labels)
    if df.loc[df["run_id"].isin(run_ids), "data_id"].nunique() > 1:
        raise UserError(f"row {label!r} pools runs on different data; use --group-by "
                        "config,data")
    outcomes = load_outcomes(run_ids, record_paths(root))
    lacking = [i for i in run_ids if outcomes[i] is None]
    if lacking:
        raise UserError(f"row {label!r}: {len(lacking)} of its {len(run_ids)} runs have no "
                        f"per-query outcomes (e.g. {lacking[0]}: a record older than schema 3 "
                        "or a missing sidecar); rerun them to compare")
    return label, [outcomes[i] for i in run_ids], data_id


@cli.command()
@click.option("--kind", type=click.Choice(["datasets", "params", "shift", "fewshot"]),
              required=True, help="datasets: bars per dataset; params: HM vs trainable params; "
              "shift: metric vs ooDML level; fewshot: metric vs shots.")
@click.option("--metric", default="recall@1", show_default=True)
@click.option("--suite", default=None)
@click.option("--dataset", default=None, help="shift/fewshot: only this dataset.")
@click.option("--method", "methods", multiple=True,
              help="Only these methods (method id or row label; repeatable).")
@click.option("--ablations", is_flag=True,
              help="Also draw ablations (rows labelled 'Name (variant)' beside a 'Name' row of "
              "the same method); hidden by default unless named with --method.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True,
              help="Output file; .png or .svg (both written when the suffix is omitted).")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              cls=PathHelpOption, help=_RESULTS_HELP)
@click.option("--no-reference", is_flag=True, help="Hide reported (non-measured) rows.")
@click.option("--protocol", type=click.Choice(["fewshot", "fewshot-train"]), default=None,
              help="--kind fewshot: only ooDML few-shot adaptation, or only PUMA's few-shot "
              "training (default: both).")
@click.option("--errors", type=click.Choice(["ci", "std"]), default="ci", show_default=True,
              help="Error bars (datasets, params) and bands (shift): ci, the bootstrap interval "
              "over queries (as leaderboard --significance; none for runs without per-query "
              "outcomes); std, the sample std over seeds. fewshot draws its stored episode "
              "intervals.")
@_stats_options
def plot(kind, metric, suite, dataset, methods, ablations, out_file, results_dir, no_reference,
         protocol, errors, resamples, level, seed):
    """Publication-quality figures from run records (PNG/SVG)."""
    from umlbench.results.grouping import deduplicate, mixed_data
    from umlbench.results.plots import check_target, plot_kind
    from umlbench.results.store import load_store

    check_target(Path(out_file))
    if protocol and kind != "fewshot":
        raise UserError("--protocol applies to --kind fewshot")
    df = load_store(Path(results_dir) if results_dir else paths.default_results_dir(),
                    include_reference=not no_reference,
                    warn=lambda m: click.echo(f"warning: {m}", err=True))
    df, dropped = deduplicate(df)
    if dropped:
        console.print(f"note: {len(dropped)} duplicate record(s) set aside (same config, data "
                      f"and seed as a newer one): {', '.join(dropped[:3])}"
                      + (", …" if len(dropped) > 3 else ""), markup=False)
    for name in mixed_data(df):
        console.print(f"note: {name} pools runs of different data identities; "
                      "`umlbench leaderboard` shows them apart", markup=False)
    intervals = None
    notes: list[str] = []  # printed once the figure is drawn (an error comes alone)
    if errors == "ci" and kind in ("datasets", "params", "shift"):
        from umlbench.results.significance import plot_intervals

        intervals, missing = plot_intervals(
            df, metric, Path(results_dir) if results_dir else paths.default_results_dir(),
            suite=suite, protocol="oodml" if kind == "shift" else "uml",
            resamples=resamples, level=level, seed=seed)
        what = "bands" if kind == "shift" else "error bars"
        if intervals.empty:  # nothing to draw from: say so and keep the seed std
            intervals = None
            notes.append(f"note: no record has per-query outcomes; {what} are the std over "
                         "seeds")
        else:
            notes.append(f"note: {what} are {level:.0%} bootstrap intervals over queries "
                         f"({resamples:,} resamples, seed {seed})")
            if missing:
                notes.append("note: no per-query outcomes, so no interval, for "
                             + ", ".join(missing) + "; --errors std draws the seed std")
    written = plot_kind(df, kind, Path(out_file), metric=metric, suite=suite, dataset=dataset,
                        methods=list(methods) or None, ablations=ablations, protocol=protocol,
                        intervals=intervals)
    for note in notes:
        console.print(note, markup=False)
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)


@cli.command()
@click.argument("paths_", metavar="PATH...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
def validate(paths_):
    """Check run records (*.json) and reference rows (*.yaml, *.csv) against their schemas.

    A record's per-query sidecar (*.perquery.npz) must exist, match the record's SHA-256 and
    agree with its metrics. Prints one line per problem; exits with status 1 if there is any."""
    from umlbench.results.validate import validate_paths

    report = validate_paths(paths_)
    for line in report.problems:
        click.echo(line)
    if report.notes:  # information, not problems: one line, however many records
        example = f": {report.notes[0]}" if len(report.notes) == 1 else (
            f", e.g. {report.notes[0]}")
        click.echo(f"note: {len(report.notes)} record(s) have no per-query outcomes, so "
                   f"per-query comparisons are unavailable for them{example}", err=True)
    click.echo(f"{report.files} file(s) checked, {len(report.problems)} problem(s)", err=True)
    if not report.ok:
        click.get_current_context().exit(1)


def _format_from_suffix(path: str) -> str:
    suffix = Path(path).suffix.lstrip(".")
    return {"md": "markdown", "tex": "latex", "htm": "html"}.get(suffix, suffix)
