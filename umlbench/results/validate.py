"""``umlbench validate``: check run records and reported reference rows against their schemas.

Records (``*.json``) are checked with :func:`umlbench.results.record.problems` (the JSON Schema
``schemas/record.schema.json`` after upgrading older schema versions, plus what a schema cannot
say: the config hash matches the config, the seeds agree) and against each other (the file is
named after its run id, no run id twice). Reference files (``*.yaml``, ``*.yml``, ``*.csv``)
are checked entry by entry with ``schemas/reference.schema.json``. Every problem is one line
that starts with the file's path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from umlbench.results.record import RecordError, problems, read_json
from umlbench.results.store import REFERENCE_SUFFIXES, reference_entries

__all__ = ["Report", "validate_paths"]

RECORD_SUFFIX = ".json"


@dataclass
class Report:
    files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix in (RECORD_SUFFIX, *REFERENCE_SUFFIXES))


def validate_paths(paths: Iterable[Path]) -> Report:
    """Check every record and reference file at or under ``paths``."""
    report = Report()
    seen: dict[str, Path] = {}
    for root in map(Path, paths):
        if not root.exists():
            report.problems.append(f"{root}: no such file or directory")
            continue
        for path in _files(root):
            report.files += 1
            if path.suffix == RECORD_SUFFIX:
                report.problems += _record_problems(path, seen)
            elif path.suffix in REFERENCE_SUFFIXES:
                report.problems += reference_entries(path)[1]
            else:
                report.problems.append(f"{path}: not a record (.json) or a reference file "
                                       f"({', '.join(REFERENCE_SUFFIXES)})")
    return report


def _record_problems(path: Path, seen: dict[str, Path]) -> list[str]:
    try:
        data = read_json(path)
    except RecordError as exc:
        return [str(exc)]
    found = problems(data, str(path))
    run_id = data.get("run_id") if isinstance(data, dict) else None
    if found or not isinstance(run_id, str):
        return found
    if path.stem != run_id:
        found.append(f"{path}: file name does not match run_id {run_id!r} "
                     f"(expected {run_id}.json)")
    if run_id in seen and seen[run_id].resolve() != path.resolve():
        found.append(f"{path}: run_id {run_id!r} is also in {seen[run_id]}")
    seen.setdefault(run_id, path)
    return found
