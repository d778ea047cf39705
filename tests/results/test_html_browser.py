"""The HTML leaderboard in a real headless browser (Chromium), when one is installed.

Checks what a reader sees at 1600 px: every "mean ± std" on one line, and that clicking a header
sorts the rows by that column (ascending, then descending). Chromium runs the page with a small
script appended that does the clicks and the measuring, and ``--dump-dom`` returns the result.
Skipped where no chromium is installed (CI does not need one).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.results.test_terminal import NAMES, _records
from umlbench.results.formats import render
from umlbench.results.leaderboard import build_board

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")

# Counts the value cells whose text pieces lie on more than one line (a piece that starts below
# the bottom of another; pieces on one line overlap vertically even in different font sizes),
# then sorts by column COL
# (CLICKS header clicks) and leaves both results in the DOM.
PROBE = """<script>
window.addEventListener("load", function() {
  var wrapped = 0;
  document.querySelectorAll("#board td:not(:first-child)").forEach(function(td) {
    var r = document.createRange(); r.selectNodeContents(td);
    var rects = Array.from(r.getClientRects()).filter(function(x) { return x.width > 0; });
    var top = Math.max.apply(null, rects.map(function(x) { return x.top; }));
    var bottom = Math.min.apply(null, rects.map(function(x) { return x.bottom; }));
    if (top >= bottom) wrapped += 1;  // some piece starts below where another ends
  });
  var th = document.querySelectorAll("#board th")[COL];
  for (var i = 0; i < CLICKS; i++) th.click();
  document.body.setAttribute("data-wrapped", String(wrapped));
});
</script></body>"""


def _browse(page: str, tmp_path: Path, col: int, clicks: int) -> str:
    path = tmp_path / f"board-{col}-{clicks}.html"
    path.write_text(page.replace("</body>", PROBE.replace("COL", str(col))
                                 .replace("CLICKS", str(clicks))))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1600,900",
         "--virtual-time-budget=2000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _row_order(dom: str) -> list[str]:
    body = dom.split("<tbody>", 1)[1]
    return [m for m in re.findall(r"<tr[^>]*><td[^>]*>([^<]*)</td>", body)]


@pytest.fixture(scope="module")
def board():
    return build_board(_records(), "recall@1")


def test_values_stay_on_one_line_at_1600px(board, tmp_path):
    dom = _browse(render(board, "html"), tmp_path, col=0, clicks=0)
    assert 'data-wrapped="0"' in dom
    assert len(_row_order(dom)) == len(NAMES)


@pytest.mark.parametrize("clicks", [1, 2])
def test_clicking_a_header_sorts_by_that_column(board, tmp_path, clicks):
    col = board.columns.index("mini-sop")
    dom = _browse(render(board, "html"), tmp_path, col=2 + col, clicks=clicks)
    ascending = list(board.mean["mini-sop"].sort_values(kind="stable").index)
    assert _row_order(dom) == (ascending if clicks == 1 else ascending[::-1])
    assert ("sorted-asc" if clicks == 1 else "sorted-desc") in dom
