"""``umlbench validate``: check run records and reported reference rows against their schemas.

Records (``*.json``) are checked with :func:`umlbench.results.record.problems` (the JSON Schema
``schemas/record.schema.json`` after upgrading older schema versions, plus what a schema cannot
say: the config hash matches the config, the seeds agree) and against each other (the file is
named after its run id, no run id twice). Reference files (``*.yaml``, ``*.yml``, ``*.csv``)
are checked entry by entry with ``schemas/reference.schema.json``. Every problem is one line
that starts with the file's path.

A record's per-query outcomes sidecar (schema 3, :mod:`umlbench.results.perquery`) must exist,
match the SHA-256 the record gives, parse, hold the record's scopes and retrieval metrics with
its numbers of scored queries, and average to the record's values within the storage rounding
(:data:`~umlbench.results.perquery.TOLERANCE`). A record without one (schema 1 and 2, or a run
that scored no retrieval metric) is a note, not a problem: it loads everywhere, only per-query
comparisons are unavailable for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from umlbench.results import perquery
from umlbench.results.record import RecordError, problems, read_json
from umlbench.results.store import REFERENCE_SUFFIXES, reference_entries

__all__ = ["Report", "validate_paths"]

RECORD_SUFFIX = ".json"


@dataclass
class Report:
    """``problems``: one line each; ``notes``: information that is not a problem (records
    without per-query outcomes), one line each."""

    files: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
                report.problems += _record_problems(path, seen, report.notes)
            elif path.suffix in REFERENCE_SUFFIXES:
                report.problems += reference_entries(path)[1]
            else:
                report.problems.append(f"{path}: not a record (.json) or a reference file "
                                       f"({', '.join(REFERENCE_SUFFIXES)})")
    return report


def _record_problems(path: Path, seen: dict[str, Path], notes: list[str]) -> list[str]:
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
    return found + _sidecar_problems(path, data, notes)


def _sidecar_problems(path: Path, data: dict, notes: list[str]) -> list[str]:
    """The per-query sidecar checks (module docstring); at most one line per record."""
    ref = data.get("per_query")
    if not ref:
        version = data.get("schema_version")
        why = (f"schema {version} record" if version < 3 else
               "the run scored no retrieval metric" if data.get("status") == "completed"
               else f"a {data.get('status')} run")
        notes.append(f"{path}: no per-query outcomes ({why})")
        return []
    sidecar = path.parent / ref["file"]
    if not sidecar.is_file():
        return [f"{path}: per-query sidecar {ref['file']} is missing (the record names it "
                "with its SHA-256; copy it next to the record)"]
    try:
        outcomes = perquery.load_for_record(path, data)
    except RecordError as exc:
        return [str(exc)]
    found = perquery.scope_problems(outcomes, data.get("metrics") or {})
    if not found:
        return []
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return [f"{sidecar}: does not match its record: {found[0]}{more}"]
