"""A method from an outside package, found through the ``umlbench.methods`` entry-point group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FAST

PLUGIN = '''
from dataclasses import dataclass

from baselines.common import EmbeddingNet, make_backbone
from umlbench.methods import Method


class MyMethod(Method):
    """Frozen backbone + a trained embedding head, defined outside umlbench."""

    name = "my-method"

    @dataclass(frozen=True, kw_only=True)
    class Config:
        embedding_dim: int = 24

    def build(self, data):
        return EmbeddingNet(make_backbone(self.cfg), self.args.embedding_dim, frozen=True)

    def display_name(self):
        return f"My method (d={self.args.embedding_dim})"
'''


def _install_plugin(site: Path) -> None:
    """What ``pip install`` of a package with an entry point leaves on disk."""
    (site / "my_pkg").mkdir(parents=True)
    (site / "my_pkg" / "__init__.py").write_text("")
    (site / "my_pkg" / "plugin.py").write_text(PLUGIN)
    info = site / "my_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[umlbench.methods]\nmy-method = my_pkg.plugin:MyMethod\n")


def test_outside_method_runs_end_to_end(env_root, tmp_path):
    site = tmp_path / "site"
    _install_plugin(site)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.getcwd()]))
    listed = subprocess.run([sys.executable, "-m", "umlbench", "list"], env=env,
                            capture_output=True, text=True, check=True).stdout
    assert "my-method" in listed
    sets = [a for kv in FAST + ["method.embedding_dim=16"] for a in ("--set", kv)]
    out = tmp_path / "res"
    subprocess.run([sys.executable, "-m", "umlbench", "run", "--method", "my-method",
                    "--results-dir", str(out), *sets], env=env, capture_output=True, text=True,
                   check=True)
    (path,) = (out / "mini").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["method"] == "my-method" and rec["status"] == "completed"
    assert rec["display_name"] == "My method (d=16)"
    assert rec["params"]["trainable"] == 128 * 16 + 16  # only the head: backbone width 128
    assert 0 < rec["metrics"]["universal"]["recall@1"] < 1
