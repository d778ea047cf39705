"""The README's quickstart, run inside a temporary clone of the repository: afterwards
`git status` is clean and no row of the committed leaderboards has a different seed count."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST
from umlbench.results.leaderboard import build_board
from umlbench.results.store import load_store

REPO = Path(__file__).parents[1]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), "-c", "user.email=t@t", "-c", "user.name=t",
                           *args], check=True, capture_output=True, text=True).stdout


def quickstart_commands(readme: str) -> list[str]:
    """The `umlbench` commands of the first line of the README's Quickstart block."""
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands = [c.strip() for c in block.splitlines()[0].split("&&")]
    assert all(c.startswith("umlbench ") for c in commands), commands
    return commands


def _clone(dest: Path) -> None:
    """A clone of the working tree: HEAD's files with uncommitted changes, committed anew."""
    listed = _git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "clone")


def _seed_counts(results: Path) -> dict:
    df = load_store(results, warn=pytest.fail)
    counts = {}
    for protocol in sorted(df["protocol"].dropna().unique()):
        board = build_board(df, protocol=protocol)
        counts[protocol] = board.n.to_dict()
    return counts


def test_readme_quickstart_is_three_umlbench_commands():
    commands = quickstart_commands((REPO / "README.md").read_text())
    assert [c.split()[1] for c in commands] == ["prepare-data", "run", "leaderboard"]


@pytest.mark.slow
def test_quickstart_in_a_clone_changes_nothing_committed(mini_root, tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    clone.mkdir()
    _clone(clone)
    before = _seed_counts(clone / "results")
    assert before["uml"]  # the committed mini leaderboard is there
    env = {k: v for k, v in os.environ.items() if k != "UMLBENCH_RESULTS"}
    env.update(PYTHONPATH=str(clone), UMLBENCH_DATA=str(mini_root),
               UMLBENCH_WORK=str(tmp_path / "work"))
    for command in quickstart_commands((clone / "README.md").read_text()):
        args = shlex.split(command)[1:]
        if args[0] == "run":  # a short run: where it writes does not depend on its length
            args += [a for s in FAST for a in ("--set", s)]
        proc = subprocess.run([sys.executable, "-m", "umlbench", *args], cwd=clone, env=env,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"
    assert "| PUMA | 1 |" in proc.stdout  # the leaderboard of the newcomer's own run
    assert len(list((clone / "umlbench-results" / "mini").glob("*.json"))) == 1
    assert _git(clone, "status", "--porcelain", "--untracked-files=all") == ""
    assert _seed_counts(clone / "results") == before
