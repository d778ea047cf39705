"""The results store: run records (and reported reference rows) -> one long DataFrame.

Long format, one row per (run, scope, metric): columns ``run_id, method, display_name, suite,
protocol, dataset, level, fid, shots, seed, status, scope, metric, value, trainable, total,
source``. ``scope`` is a dataset name, ``universal``, ``harmonic_mean`` or ``arithmetic_mean``;
``source`` is ``measured`` for run records and ``reported`` for numbers published elsewhere.
Renderers and plots take this frame and never touch the filesystem.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import yaml

from umlbench.results.record import RecordError, RunRecord, read_record

__all__ = ["COLUMNS", "find_record_files", "load_records", "records_frame", "load_reference",
           "load_store"]

COLUMNS = ["run_id", "method", "display_name", "suite", "protocol", "dataset", "level", "fid",
           "shots", "seed", "status", "scope", "metric", "value", "trainable", "total", "source",
           "citation"]
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


def records_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    rows = [r for rec in records for r in _rows_for(rec)]
    return pd.DataFrame(rows, columns=COLUMNS)


def load_reference(directory: Path, warn: Callable[[str], None] = print) -> pd.DataFrame:
    """Reported rows from ``results/reference/*.yaml|*.csv`` (see README for the format)."""
    rows: list[dict] = []
    if not Path(directory).is_dir():
        return pd.DataFrame(columns=COLUMNS)
    for path in sorted(Path(directory).iterdir()):
        try:
            if path.suffix in (".yaml", ".yml"):
                rows += _reference_yaml(path)
            elif path.suffix == ".csv":
                rows += _reference_csv(path)
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
            warn(f"skipping {path}: {exc}")
    return pd.DataFrame(rows, columns=COLUMNS)


def _ref_base(entry: dict, source: Path) -> dict:
    for key in ("method", "suite", "citation"):
        if not entry.get(key):
            raise ValueError(f"entry {entry.get('method', '?')!r} lacks {key!r}")
    return {
        "run_id": f"reported:{source.stem}:{entry['method']}", "method": entry["method"],
        "display_name": entry.get("display_name", entry["method"]), "suite": entry["suite"],
        "protocol": entry.get("protocol", "uml"), "dataset": entry.get("dataset"),
        "level": entry.get("level"), "fid": entry.get("fid"), "shots": entry.get("shots"),
        "seed": None, "status": "reported", "trainable": entry.get("trainable"),
        "total": entry.get("total"), "source": "reported", "citation": entry["citation"],
    }


def _reference_yaml(path: Path) -> list[dict]:
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get("rows", []) if isinstance(data, dict) else data
    rows = []
    for entry in entries:
        base = _ref_base(entry, path)
        metric = entry.get("metric", "recall@1")
        values = entry.get("values") or {}
        for scope, v in values.items():
            rows.append({**base, "scope": scope, "metric": metric, "value": float(v)})
        if not values:
            rows.append({**base, "scope": None, "metric": None, "value": None})
    return rows


def _reference_csv(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as fh:
        for entry in csv.DictReader(fh):
            entry = {k: (None if v == "" else v) for k, v in entry.items()}
            base = _ref_base(entry, path)
            for key in ("trainable", "total", "level", "shots"):
                if base.get(key) is not None:
                    base[key] = int(float(base[key]))
            if base.get("fid") is not None:
                base["fid"] = float(base["fid"])
            rows.append({**base, "scope": entry["scope"], "metric": entry.get("metric") or
                         "recall@1", "value": float(entry["value"])})
    return rows


def load_store(results_dir: Path, include_reference: bool = True,
               warn: Callable[[str], None] = print) -> pd.DataFrame:
    """Measured records under ``results_dir`` plus (optionally) its reported reference rows."""
    frames = [records_frame(load_records([results_dir], warn))]
    if include_reference:
        frames.append(load_reference(Path(results_dir) / REFERENCE_DIR, warn))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
