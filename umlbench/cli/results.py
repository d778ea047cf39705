"""Commands that read run records: leaderboard, plot, validate."""

from __future__ import annotations

from pathlib import Path

import click

from umlbench import paths
from umlbench.cli.base import cli, console, out
from umlbench.cli_util import PathHelpOption, write_text
from umlbench.errors import UserError

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
def leaderboard(fmt, metric, view, show_std, suite, protocol, dataset, methods, sort, out_file,
                results_dir, no_reference, group_by):
    """Aggregate run records into a leaderboard table."""
    from umlbench.results.formats import render
    from umlbench.results.grouping import parse_group_by
    from umlbench.results.leaderboard import build_board, build_paper_board
    from umlbench.results.store import load_store
    from umlbench.results.terminal import to_rich

    grouping = parse_group_by(group_by)
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
    for note in board.notes + board.footnotes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if fmt is None:
        out.print(to_rich(board, width=out.width, std=show_std))
        return
    text = render(board, fmt)
    if out_file:
        write_text(Path(out_file), text)
        console.print(f"wrote {out_file}", markup=False, highlight=False)
    else:
        click.echo(text, nl=False)


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
def plot(kind, metric, suite, dataset, methods, ablations, out_file, results_dir, no_reference,
         protocol):
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
    written = plot_kind(df, kind, Path(out_file), metric=metric, suite=suite, dataset=dataset,
                        methods=list(methods) or None, ablations=ablations, protocol=protocol)
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
