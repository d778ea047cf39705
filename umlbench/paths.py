"""Where things live on disk: the data root and the default results/work directories."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "default_work_dir", "default_results_dir"]


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``explicit`` if given, else ``$UMLBENCH_DATA``, else ``~/.cache/umlbench``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("UMLBENCH_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "umlbench"


DEFAULT_RESULTS = "umlbench-results"


def default_results_dir() -> Path:
    """Your run records: ``$UMLBENCH_RESULTS`` or ``./umlbench-results`` (records go to
    ``<dir>/<suite>/``; the leaderboard's default input). Not ``./results``: in a clone of the
    repository that folder holds the committed reference runs, which a run must never touch,
    and the repository's .gitignore lists ``umlbench-results/``."""
    return Path(os.environ.get("UMLBENCH_RESULTS", DEFAULT_RESULTS))


def default_work_dir(data_root_dir: str | os.PathLike[str] | None = None) -> Path:
    """Checkpoints of runs: ``$UMLBENCH_WORK`` or ``<data root>/runs`` (the data root of the run:
    ``data_root_dir`` if given, else as :func:`data_root`)."""
    env = os.environ.get("UMLBENCH_WORK")
    return Path(env).expanduser() if env else data_root(data_root_dir) / "runs"
