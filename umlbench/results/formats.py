"""Render a leaderboard ``Board`` (:mod:`umlbench.results.leaderboard`) as markdown, LaTeX,
CSV, a self-contained sortable HTML page or JSON; values in [0, 1] in percent, the best mean of
each column bold (with ``--significance``: every row tied for the top, and each cell's interval
in CSV, JSON and HTML), ± sample std and the seed count where asked for."""

from __future__ import annotations

import html
import json
import math

import pandas as pd

from umlbench.errors import UserError
from umlbench.results.leaderboard import (
    FORMATS,
    Board,
    _title,
)

__all__ = ["render", "to_csv", "to_html", "to_json", "to_latex", "to_markdown"]


def _pct(v: float) -> float:
    return 100 * v


def _cell_parts(mean: float, std: float, n: int) -> tuple[str, str | None]:
    """("82.39", "0.65") in percent; ("–", None) for a missing value; no std for one seed."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–", None
    if n > 1 and std is not None and not math.isnan(std):
        return f"{_pct(mean):.2f}", f"{_pct(std):.2f}"
    return f"{_pct(mean):.2f}", None


def _cell(mean: float, std: float, n: int) -> str:
    text, sd = _cell_parts(mean, std, n)
    return text if sd is None else f"{text} ± {sd}"


def _params(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    v = float(v)
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}K"
    return f"{int(v)}"


def _best(board: Board) -> dict[str, set[str]]:
    """Rows marked per column: with ``--significance`` every row tied for the top
    (``board.tied``), otherwise the best mean (one per group of comparable rows); reported rows
    are shown but never marked."""
    if board.tied is not None:
        return {c: set(board.tied.get(c, set())) for c in board.columns}
    best: dict[str, set[str]] = {}
    measured = board.mean[~board.reported.astype(bool)]
    groups = (pd.Series("", index=board.mean.index) if board.groups is None
              else board.groups).loc[measured.index]
    for col in board.columns:
        s = measured[col].dropna()
        best[col] = {s[groups.loc[s.index] == g].idxmax() for g in groups.loc[s.index].unique()}
    return best


def _fid_row(board: Board, group: str) -> list[str]:
    fids = (board.fids or {}).get(group, {})
    cells = [f"{fids[c]:.2f}" if c in fids else "–" for c in board.columns]
    return [f"FID ({group})", "–", *cells, "–"]


def _fid_rows(board: Board) -> dict[str, list[str]]:
    """Board row -> the FID row that opens its dataset's block (ooDML boards)."""
    if not board.fids or board.groups is None:
        return {}
    out: dict[str, list[str]] = {}
    for row in board.rows:
        group = board.groups[row]
        if group not in {board.groups[r] for r in out}:
            out[row] = _fid_row(board, group)
    return out


def _grid(board: Board, bold) -> tuple[list[str], list[list[str]]]:
    best = _best(board)
    header = ["Method", "Seeds"] + [_title(c) for c in board.columns] + ["Trainable params"]
    body = []
    fid_rows = _fid_rows(board)
    for row in board.rows:
        if row in fid_rows:
            body.append(fid_rows[row])
        n = int(board.n.get(row, 0))
        cells = [row, "–" if board.reported.get(row) else str(n)]
        for col in board.columns:
            text = _cell(board.mean.at[row, col], board.std.at[row, col], n)
            if no_interval(board, row, col):
                text += " (n/a)"
            cells.append(bold(text) if row in best[col] and text != "–" else text)
        cells.append(_params(board.params.get(row)))
        body.append(cells)
    return header, body


def _notes(board: Board) -> list[str]:
    """The footnotes of every file format: how significance was computed first."""
    return ([board.significance] if board.significance else []) + board.footnotes


def no_interval(board: Board, row: str, col: str) -> bool:
    """``--significance`` found no interval for a measured cell that has a mean (its records
    lack per-query outcomes): shown as "n/a" beside the mean."""
    return (board.tied is not None and not board.reported.get(row)
            and _num(board.mean.at[row, col]) is not None
            and _interval(board, row, col)[0] is None)


def _interval(board: Board, row: str, col: str) -> tuple[float | None, float | None]:
    if board.low is None or board.high is None:
        return None, None
    return _num(board.low.at[row, col]), _num(board.high.at[row, col])


def to_markdown(board: Board) -> str:
    header, body = _grid(board, lambda t: f"**{t}**")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    if _notes(board):
        lines += [""] + [f"Note: {note}" for note in _notes(board)]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPE = str.maketrans({"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                               "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"})


def to_latex(board: Board) -> str:
    header, body = _grid(board, lambda t: "\\textbf{" + t + "}")

    def esc(text: str) -> str:
        if text.startswith("\\textbf{"):
            return "\\textbf{" + esc(text[8:-1]) + "}"
        return text.translate(_LATEX_ESCAPE).replace("±", "$\\pm$").replace("–", "--")

    cols = "l" + "r" * (len(header) - 1)
    lines = [
        "% Requires \\usepackage{booktabs}",
        f"% {board.metric} in percent; mean $\\pm$ std over seeds.",
        "\\begin{tabular}{" + cols + "}",
        "\\toprule",
        " & ".join(esc(h) for h in header) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(esc(c) for c in row) + " \\\\" for row in body]
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"% Note: {note}" for note in _notes(board)]
    return "\n".join(lines) + "\n"


def to_csv(board: Board) -> str:
    out = pd.DataFrame(index=board.mean.index)
    out.index.name = "method"
    out["reported"] = board.reported.astype(bool)
    out["seeds"] = board.n.where(~board.reported.astype(bool)).astype("Int64")
    for col in board.columns:
        out[f"{col}_mean"] = board.mean[col]
        out[f"{col}_std"] = board.std[col]
        if board.tied is not None:
            out[f"{col}_low"] = board.low[col]
            out[f"{col}_high"] = board.high[col]
            out[f"{col}_tied"] = [r in board.tied.get(col, set()) for r in board.rows]
    out["trainable_params"] = board.params
    text = out.to_csv(float_format="%.6f")
    # CSV has no footnote syntax: comment lines after the table say how it was computed.
    return text + "".join(f"# {n}\n" for n in _notes(board) if board.tied is not None)


def to_json(board: Board) -> str:
    rows = []
    for row in board.rows:
        rows.append({
            "method": row,
            "reported": bool(board.reported.get(row)),
            "seeds": None if board.reported.get(row) else int(board.n.get(row, 0)),
            "values": {c: _json_cell(board, row, c) for c in board.columns},
            "trainable_params": _num(board.params.get(row)),
        })
    out = {"metric": board.metric, "columns": board.columns, "rows": rows,
           "footnotes": board.footnotes}
    if board.significance:
        out["significance"] = board.significance
    if board.fids:
        out["fids"] = board.fids
    return json.dumps(out, indent=2) + "\n"


def _json_cell(board: Board, row: str, col: str) -> dict:
    cell = {"mean": _num(board.mean.at[row, col]), "std": _num(board.std.at[row, col])}
    if board.tied is not None:
        cell["low"], cell["high"] = _interval(board, row, col)
        cell["tied_for_top"] = row in board.tied.get(col, set())
    return cell


def _num(v):
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>umlbench leaderboard</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em}} .scroll{{overflow-x:auto}}
table{{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.95em}}
th,td{{padding:.35em .45em;border-bottom:1px solid #ddd;text-align:right}}
td{{white-space:nowrap}} td:first-child{{white-space:normal;min-width:10em}}
th:first-child,td:first-child{{text-align:left}} th{{cursor:pointer;background:#f4f4f4}}
th.sorted-asc::after{{content:" \\25B2"}} th.sorted-desc::after{{content:" \\25BC"}}
.sd{{font-size:.78em;color:#777}} tr.reported td{{color:#666;font-style:italic}}
</style></head><body>
<h1>umlbench leaderboard</h1>
<p>{caption}</p>
<div class="scroll"><table id="board"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></div>
{notes}
<script>
document.querySelectorAll("#board th").forEach(function(th, col) {{
  th.addEventListener("click", function() {{
    var tbody = document.querySelector("#board tbody");
    var rows = Array.from(tbody.rows);
    var asc = !th.classList.contains("sorted-asc");
    document.querySelectorAll("#board th").forEach(function(h) {{
      h.classList.remove("sorted-asc", "sorted-desc"); }});
    th.classList.add(asc ? "sorted-asc" : "sorted-desc");
    rows.sort(function(a, b) {{
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? cmp : -cmp;
    }});
    rows.forEach(function(r) {{ tbody.appendChild(r); }});
  }});
}});
</script></body></html>
"""


def _sort_value(v) -> str:
    v = _num(v)
    return "" if v is None else str(v)


def _html_cell(mean, std, n: int, best: bool, interval=(None, None)) -> str:
    """``<b>82.39</b><span class="sd"> ± 0.65</span>``: the std smaller, never on its own line;
    with an interval (``--significance``) it follows as ``[81.70, 83.05]``, also smaller."""
    text, sd = _cell_parts(mean, std, n)
    value = f"<b>{text}</b>" if best and text != "–" else text
    if sd is not None:
        value += f'<span class="sd">&nbsp;±&nbsp;{sd}</span>'
    low, high = interval
    if low is not None and high is not None:
        value += f'<span class="sd">&nbsp;[{_pct(low):.2f},&nbsp;{_pct(high):.2f}]</span>'
    return value


def to_html(board: Board) -> str:
    header = ["Method", "Seeds"] + [_title(c) for c in board.columns] + ["Trainable params"]
    best = _best(board)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = []
    fid_rows = _fid_rows(board)
    for row in board.rows:
        if row in fid_rows:
            tds = "".join(f'<td data-v="{html.escape(c)}">{html.escape(c)}</td>'
                          for c in fid_rows[row])
            rows.append(f'<tr class="fid">{tds}</tr>')
        n = int(board.n.get(row, 0))
        cells = [(row, html.escape(row)),
                 (str(n), "–" if board.reported.get(row) else str(n))]
        cells += [(_sort_value(board.mean.at[row, c]),
                   _html_cell(board.mean.at[row, c], board.std.at[row, c], n,
                              row in best[c], _interval(board, row, c)))
                  for c in board.columns]
        cells.append((_sort_value(board.params.get(row)), _params(board.params.get(row))))
        tds = "".join(f'<td data-v="{html.escape(v)}">{c}</td>' for v, c in cells)
        cls = ' class="reported"' if board.reported.get(row) else ""
        rows.append(f"<tr{cls}>{tds}</tr>")
    marks = ("interval in brackets; bold: tied for the top (see the note)"
             if board.tied is not None else "best per column in bold")
    caption = (f"{html.escape(_metric_caption(board))} in percent, mean ± std over seeds; "
               f"{marks}; italic rows are reported elsewhere, not measured.")
    notes = "".join(f"<p class=\"note\">Note: {html.escape(n)}</p>" for n in _notes(board))
    return _HTML.format(caption=caption, head=head, body="\n".join(rows), notes=notes)


def _metric_caption(board: Board) -> str:
    if board.metric == "paper":
        return "Recall@K (each dataset's K list as papers report it; universal and HM at R@1)"
    return board.metric


def render(board: Board, fmt: str) -> str:
    renderers = {"markdown": to_markdown, "latex": to_latex, "csv": to_csv, "html": to_html,
                 "json": to_json}
    if fmt not in renderers:
        raise UserError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return renderers[fmt](board)
