"""The README's "Adding a method" example, installed as an outside package and found through
the ``umlbench.methods`` entry-point group, runs end to end through the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import FAST

README = Path(__file__).parents[2] / "README.md"


def _readme_plugin() -> str:
    match = re.search(r"```python\n(# my_pkg/plugin\.py\n.*?)```", README.read_text(), re.S)
    assert match, "README lost its plugin example"
    return match.group(1)


def _install_plugin(site: Path) -> None:
    """What ``pip install`` of a package with an entry point leaves on disk."""
    (site / "my_pkg").mkdir(parents=True)
    (site / "my_pkg" / "__init__.py").write_text("")
    (site / "my_pkg" / "plugin.py").write_text(_readme_plugin())
    info = site / "my_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[umlbench.methods]\nmy-method = my_pkg.plugin:MyMethod\n")


def test_readme_plugin_example_runs_end_to_end(env_root, tmp_path):
    site = tmp_path / "site"
    _install_plugin(site)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.getcwd()]))
    listed = subprocess.run([sys.executable, "-m", "umlbench", "list"], env=env,
                            capture_output=True, text=True, check=True).stdout
    assert "my-method" in listed
    overrides = FAST + ["method.hidden=32", "method.embedding_dim=16"]
    sets = [a for kv in overrides for a in ("--set", kv)]
    out = tmp_path / "res"
    subprocess.run([sys.executable, "-m", "umlbench", "run", "--method", "my-method",
                    "--results-dir", str(out), *sets], env=env, capture_output=True, text=True,
                   check=True)
    (path,) = (out / "mini").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["method"] == "my-method" and rec["status"] == "completed"
    # Only the MLP head trains: 128 -> 32 -> 16 on the mini backbone (width 128).
    assert rec["params"]["trainable"] == (128 * 32 + 32) + (32 * 16 + 16)
    assert 0 < rec["metrics"]["universal"]["recall@1"] < 1
