"""The ``umlbench`` command line. Each command parses its input and calls one library function.

Startup stays cheap: torch, timm, faiss and matplotlib are imported inside the commands that use
them, after the input is checked, so `umlbench list`, `--help` and every mistake in a name or a
flag answer in well under a second (``benchmarks/test_startup.py``).
"""

from __future__ import annotations

from umlbench.cli import data, results, runs  # noqa: F401  (each module registers its commands)
from umlbench.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="umlbench")

