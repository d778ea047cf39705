"""The leaderboard in a terminal: rich tables that tell the truth at any width.

Headers are short (at most 6 characters, no wider than the numbers) and a key under the table
spells them out; cells show the mean, with the std over seeds dimmed on request; when the columns
do not fit the width, the table is split into stacked parts that each repeat the method column,
so no number is ever cut ("82…") or wrapped. Reads only a
:class:`~umlbench.results.leaderboard.Board`.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from umlbench.results.formats import _best, _cell_parts, _params, no_interval
from umlbench.results.leaderboard import Board, _metric_short, _title

__all__ = ["SHORT_TITLES", "to_rich"]

_METHOD_WIDTH = 28  # characters of the method column before its names wrap
SHORT_TITLES = {
    "cub": "CUB", "cars": "Cars", "sop": "SOP", "inshop": "InShop", "nabirds": "NABird",
    "dogs": "Dogs", "flowers": "Flower", "aircraft": "Air", "universal": "Univ",
    "harmonic_mean": "HM", "arithmetic_mean": "Mean", "auc": "AUC",
}


def _short(key: str) -> str:
    """Terminal header: ``mini-sop`` -> ``SOP``, ``mini-sop/recall@10`` -> ``SOP`` over
    ``R@10``, ``level:3`` -> ``L3``; unknown keys stay as they are."""
    if "/" in key:
        scope, metric = key.split("/", 1)
        return f"{_short(scope)}\n{_metric_short(metric)}"
    if key.startswith("level:"):
        return f"L{key.split(':')[1]}"
    return SHORT_TITLES.get(key.removeprefix("mini-"), key)


def _key_line(board: Board) -> str:
    """The key to the short headers: ``CUB mini-CUB · ... · HM harmonic mean``."""
    seen: dict[str, str] = {}
    for col in board.columns:
        scope = col.split("/", 1)[0]
        short = _short(scope)
        if scope in ("universal", "harmonic_mean", "arithmetic_mean") or short == scope:
            continue
        seen.setdefault(short, _title(scope))
    parts = [f"{k} {v}" for k, v in seen.items() if k != v]
    scopes = {c.split("/", 1)[0] for c in board.columns}
    if "universal" in scopes:
        parts.append("Univ universal (all queries vs all galleries)")
    if "harmonic_mean" in scopes:
        parts.append("HM harmonic mean of the datasets")
    parts.append("n seeds")
    if board.tied is not None:
        parts.append("bold green: tied for the top (see the note)")
    return "Key: " + " · ".join(parts)


def to_rich(board: Board, width: int | None = 80, std: bool = False):
    """The terminal view: short headers with a key, mean only unless ``std`` (then dimmed),
    and as many stacked tables (each repeating the method column) as the ``width`` needs,
    so no number is ever cut or wrapped.

    Returns a rich renderable (a ``Group`` of tables and the key).
    """
    width = width or 80
    best = _best(board)

    def cell(row: str, col: str) -> Text:
        text, sd = _cell_parts(board.mean.at[row, col], board.std.at[row, col],
                               int(board.n.get(row, 0)))
        out = Text(text, style="bold green" if row in best[col] and text != "–" else "")
        if std and sd is not None:
            out.append(f" ±{sd}", style="dim")
        if no_interval(board, row, col):
            out.append(" n/a", style="dim")
        return out

    columns: dict[str, tuple[str, list[Text]]] = {
        "n": ("n", [Text("–" if board.reported.get(r) else str(int(board.n.get(r, 0))))
                    for r in board.rows])}
    for col in board.columns:
        columns[col] = (_short(col), [cell(r, col) for r in board.rows])
    columns["Params"] = ("Params", [Text(_params(board.params.get(r))) for r in board.rows])
    # A column is exactly as wide as its widest cell or header line: rich may then neither
    # shrink it (ellipsis) nor break "86.85 ±1.88" at its space.
    widths = {k: max([t.cell_len for t in cells] + [len(x) for x in head.split("\n")])
              for k, (head, cells) in columns.items()}
    # Method names wrap at spaces beyond this width; the numbers never do.
    method_width = min(max([len(r) for r in board.rows] + [6]), _METHOD_WIDTH, width // 3)

    def table(cols: list[str], title: str | None) -> Table:
        t = Table(title=title, title_justify="left", pad_edge=False, show_edge=False,
                  box=box.SIMPLE_HEAD, header_style="bold", padding=(0, 1, 0, 0))
        t.add_column("Method", overflow="fold", min_width=method_width)
        for c in cols:
            t.add_column(columns[c][0], justify="right", no_wrap=True, min_width=widths[c])
        for i, row in enumerate(board.rows):
            style = "italic dim" if board.reported.get(row) else None
            # Text, not markup: row labels say in brackets what sets rows apart
            # ("PUMA [resized 256]", results/grouping.py).
            t.add_row(Text(row), *[columns[c][1][i] for c in cols], style=style)
        return t

    probe = Console(width=100_000, file=_NullFile())  # measures unclamped minimum widths

    def fits(cols: list[str]) -> bool:
        return Measurement.get(probe, probe.options, table(cols, None)).minimum <= width

    # Fill each part with whole groups (a dataset's Recall@K list in the paper view) while they
    # fit; a group wider than the screen is split column by column.
    groups: dict[str, list[str]] = {}
    for col in columns:
        groups.setdefault(col.split("/", 1)[0], []).append(col)
    chunks: list[list[str]] = [[]]
    for group in groups.values():
        if chunks[-1] and not fits(chunks[-1] + group):
            chunks.append([])
        for col in group:
            if chunks[-1] and not fits(chunks[-1] + [col]):
                chunks.append([])
            chunks[-1].append(col)
    caption = "Recall@K, Univ and HM at R@1" if board.metric == "paper" else board.metric
    title = f"umlbench leaderboard ({caption}, %)"
    parts = []
    for i, cols in enumerate(chunks):
        suffix = f" [{i + 1}/{len(chunks)}]" if len(chunks) > 1 else ""
        parts.append(table(cols, title + suffix))
    parts.append(Text(_key_line(board), style="dim"))
    return Group(*parts)


class _NullFile:
    """A write-nowhere file for the measuring Console."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
