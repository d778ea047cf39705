"""The command group and what every command shares: the two consoles and option types."""

from __future__ import annotations

import click
from rich.console import Console

from umlbench.cli_util import Group

__all__ = ["cli", "console", "out"]

console = Console(stderr=True)  # progress, warnings and errors
out = Console()  # what a command answers

_SEED = click.IntRange(min=0)
_POSITIVE = click.IntRange(min=1)


@click.group(name="umlbench", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="umlbench")
def cli() -> None:
    """umlbench: benchmark suite and leaderboard for Unified Metric Learning."""

