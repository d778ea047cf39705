"""The results store: run records (and reported reference rows) -> one long DataFrame.

Long format, one row per (run, scope, metric): columns ``run_id, method, display_name, suite,
protocol, dataset, level, fid, shots, seed, status, scope, metric, value, trainable, total,
source, citation`` and the run's identity: ``config_id`` (the config hash), ``config`` (the
identifying config as canonical JSON), ``config_excluded`` and ``config_files`` (how it was
hashed), ``data_id`` (:func:`~umlbench.results.identity.data_key`, ``unknown`` for records that
predate data identity), ``data_label`` ("resized 256"), ``code_version`` and ``created``.
``scope`` is a dataset name, ``universal``, ``harmonic_mean`` or ``arithmetic_mean``;
``source`` is ``measured`` for run records and ``reported`` for numbers published elsewhere.
Renderers and plots take this frame and never touch the filesystem.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import yaml

from umlbench.results.identity import (canonical_json, code_label, data_key, data_label,
                                       hashed_config)
from umlbench.results.record import RecordError, RunRecord, read_record, schema_problems

__all__ = ["COLUMNS", "IDENTITY_COLUMNS", "find_record_files", "load_records", "records_frame",
           "load_reference", "reference_entries", "load_store", "REFERENCE_DIR"]

COLUMNS = ["run_id", "method", "display_name", "suite", "protocol", "dataset", "level", "fid",
           "shots", "seed", "status", "scope", "metric", "value", "trainable", "total", "source",
           "citation", "config_id", "config", "config_excluded", "config_files", "data_id",
           "data_label", "code_version", "created"]
IDENTITY_COLUMNS = COLUMNS[COLUMNS.index("config_id"):]
REFERENCE_DIR = "reference"


def find_record_files(roots: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files += sorted(p for p in root.rglob("*.json")
                            if REFERENCE_DIR not in p.relative_to(root).parts[:1]
                            and not p.name.startswith("."))
    return files


def load_records(roots: Iterable[Path], warn: Callable[[str], None] = print) -> list[RunRecord]:
    """Every valid record under ``roots``; each bad file is skipped with a one-line warning."""
    out = []
    for path in find_record_files(roots):
        try:
            out.append(read_record(path))
        except RecordError as exc:
            warn(f"skipping {exc}")
    return out


def _rows_for(rec: RunRecord) -> list[dict]:
    base = {
        "run_id": rec.run_id, "method": rec.method, "display_name": rec.display_name,
        "suite": rec.suite, "protocol": rec.protocol.get("name", "uml"),
        "dataset": rec.protocol.get("dataset"), "level": rec.protocol.get("level"),
        "fid": rec.protocol.get("fid"), "shots": rec.protocol.get("shots"), "seed": rec.seed,
        "status": rec.status, "trainable": rec.params.get("trainable"),
        "total": rec.params.get("total"), "source": "measured", "citation": None,
        **_identity_columns(rec),
    }
    rows = []
    metrics = rec.metrics or {}
    for scope, values in (metrics.get("per_dataset") or {}).items():
        rows += [{**base, "scope": scope, "metric": m, "value": v} for m, v in values.items()]
    for m, v in (metrics.get("universal") or {}).items():
        rows.append({**base, "scope": "universal", "metric": m, "value": v})
    for kind, values in (metrics.get("summary") or {}).items():
        rows += [{**base, "scope": kind, "metric": m, "value": v} for m, v in values.items()]
    extra = metrics.get("extra") or {}
    for m, v in extra.items():
        rows.append({**base, "scope": "extra", "metric": m, "value": v})
    if not rows:  # failed/interrupted runs still show up in listings
        rows.append({**base, "scope": None, "metric": None, "value": None})
    return rows


def _identity_columns(rec: RunRecord) -> dict:
    ident = rec.identity
    config = ident["config"]
    return {
        "config_id": config["sha256"],
        # The identifying part of the config, to name what differs between rows.
        "config": canonical_json(hashed_config(rec.config, config["excluded"],
                                               config.get("files"))),
        "config_excluded": tuple(config["excluded"]),
        "config_files": canonical_json(config.get("files") or {}),
        "data_id": data_key(ident["data"]),
        "data_label": data_label(ident["data"]),
        "code_version": code_label(ident["code"]),
        "created": rec.created,
    }


def records_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    rows = [r for rec in records for r in _rows_for(rec)]
    return pd.DataFrame(rows, columns=COLUMNS)


def load_reference(directory: Path, warn: Callable[[str], None] = print) -> pd.DataFrame:
    """Reported rows from ``results/reference/*.yaml|*.csv`` (see README for the format); a
    file with any entry that breaks ``schemas/reference.schema.json`` is skipped with one
    warning line."""
    rows: list[dict] = []
    if not Path(directory).is_dir():
        return pd.DataFrame(columns=COLUMNS)
    for path in sorted(Path(directory).iterdir()):
        if path.suffix not in REFERENCE_SUFFIXES:
            continue
        entries, found = reference_entries(path)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            warn(f"skipping {found[0]}{more}")
            continue
        for entry in entries:
            rows += _reference_rows(entry, path)
    return pd.DataFrame(rows, columns=COLUMNS)


REFERENCE_SUFFIXES = (".yaml", ".yml", ".csv")
_CSV_INTS = ("trainable", "total", "level", "shots")


def reference_entries(path: Path) -> tuple[list[dict], list[str]]:
    """The entries of one reference file in the YAML shape (a CSV line's ``scope``/``value``
    become ``values: {scope: value}``) and every problem found, one line each."""
    try:
        if path.suffix == ".csv":
            entries, found = _csv_entries(path)
        else:
            data = yaml.safe_load(path.read_text()) or {}
            entries = data.get("rows", []) if isinstance(data, dict) else data
            found = []
            if not isinstance(entries, list):
                return [], [f"{path}: expected a list of rows (or rows: [...])"]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [], [f"{path}: unreadable ({exc})"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        return [], [f"{path}: invalid YAML{where}"]
    for i, entry in enumerate(entries, 1):
        name = entry.get("method", "?") if isinstance(entry, dict) else "?"
        found += [f"{path}: row {i} ({name}): {p}"
                  for p in schema_problems(entry, "reference")]
    return entries, found


def _csv_entries(path: Path) -> tuple[list[dict], list[str]]:
    entries, found = [], []
    with open(path, newline="") as fh:
        for line, raw in enumerate(csv.DictReader(fh), 2):
            cells = {k: v for k, v in raw.items() if k is not None and v not in ("", None)}
            for key in _CSV_INTS:
                if key in cells:
                    cells[key] = _number(cells[key], int)
            if "fid" in cells:
                cells["fid"] = _number(cells["fid"], float)
            if "scope" not in cells or "value" not in cells:
                found.append(f"{path}: line {line}: needs both scope and value")
                continue
            scope, value = cells.pop("scope"), _number(cells.pop("value"), float)
            entries.append({**cells, "values": {scope: value}})
    return entries, found


def _number(text: str, kind: type):
    try:
        value = float(text)
    except ValueError:
        return text  # the schema names the problem
    return int(value) if kind is int and value.is_integer() else value


def _reference_rows(entry: dict, source: Path) -> list[dict]:
    base = {
        "run_id": f"reported:{source.stem}:{entry['method']}", "method": entry["method"],
        "display_name": entry.get("display_name", entry["method"]), "suite": entry["suite"],
        "protocol": entry.get("protocol", "uml"), "dataset": entry.get("dataset"),
        "level": entry.get("level"), "fid": entry.get("fid"), "shots": entry.get("shots"),
        "seed": None, "status": "reported", "trainable": entry.get("trainable"),
        "total": entry.get("total"), "source": "reported", "citation": entry["citation"],
    }
    metric = entry.get("metric", "recall@1")
    values = entry.get("values") or {}
    rows = [{**base, "scope": scope, "metric": metric, "value": float(v)}
            for scope, v in values.items()]
    return rows or [{**base, "scope": None, "metric": None, "value": None}]


def load_store(results_dir: Path, include_reference: bool = True,
               warn: Callable[[str], None] = print) -> pd.DataFrame:
    """Measured records under ``results_dir`` plus (optionally) its reported reference rows."""
    frames = [records_frame(load_records([results_dir], warn))]
    if include_reference:
        frames.append(load_reference(Path(results_dir) / REFERENCE_DIR, warn))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
