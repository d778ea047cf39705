"""The run record: one schema-versioned JSON file per run, written atomically.

The schema is the :class:`RunRecord` dataclass; :func:`validate` checks a record's types on both
write and read, and :data:`UPGRADES` turns files written by older schema versions into the
current one (mteb ``TaskResult`` style). A file is never overwritten: records are written to a
temporary file and then hard-linked to their final name, which fails if the name exists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "STATUSES", "RunRecord", "RecordError", "validate", "write_record",
           "read_record", "record_filename", "new_run_id", "UPGRADES"]

SCHEMA_VERSION = 1
STATUSES = ("completed", "failed", "interrupted")


class RecordError(ValueError):
    """A record file is malformed, truncated or from a newer schema."""


@dataclass
class RunRecord:
    """One run. ``metrics`` = {"per_dataset": {dataset: {metric: value}},
    "universal": {metric: value}, "summary": {"harmonic_mean": {...}, "arithmetic_mean": {...}}}.
    ``protocol`` = {"name": "uml" | "oodml" | "fewshot" | "fewshot-train", plus "dataset",
    "level", "fid", "shots", ... as the protocol defines}. ``params`` = {"trainable", "total",
    "proxies", "groups"}. Metric values are floats (NaN is written as null)."""

    run_id: str
    method: str
    display_name: str
    suite: str
    seed: int
    status: str
    protocol: dict[str, Any]
    config: dict[str, Any]
    backbone: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    harmonic_mean: float | None
    timings: dict[str, float]
    hardware: dict[str, Any]
    packages: dict[str, str]
    git_commit: str | None
    created: str
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return _json_safe(dataclasses.asdict(self))


_TYPES: dict[str, type | tuple] = {
    "run_id": str, "method": str, "display_name": str, "suite": str, "seed": int,
    "status": str, "protocol": dict, "config": dict, "backbone": str, "params": dict,
    "metrics": dict, "harmonic_mean": (float, int, type(None)), "timings": dict,
    "hardware": dict, "packages": dict, "git_commit": (str, type(None)), "created": str,
    "history": list, "error": (str, type(None)), "schema_version": int,
}


def _json_safe(obj):
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _json_safe(obj.item())
    return obj


def validate(data: dict, source: str = "record") -> RunRecord:
    """Check a record dict against the schema and return it as a :class:`RunRecord`."""
    if not isinstance(data, dict):
        raise RecordError(f"{source}: not a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise RecordError(f"{source}: missing schema_version")
    if version > SCHEMA_VERSION:
        raise RecordError(f"{source}: schema_version {version} is newer than this umlbench "
                          f"({SCHEMA_VERSION}); upgrade umlbench to read it")
    while version < SCHEMA_VERSION:
        data = UPGRADES[version](data)
        version = data["schema_version"]
    required = [f.name for f in dataclasses.fields(RunRecord)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise RecordError(f"{source}: missing fields {missing}")
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise RecordError(f"{source}: unknown fields {unknown}")
    for key, tp in _TYPES.items():
        if key in data and not isinstance(data[key], tp) or (
            key == "seed" and isinstance(data.get(key), bool)
        ):
            raise RecordError(f"{source}: field {key!r} has type {type(data[key]).__name__}")
    if data["status"] not in STATUSES:
        raise RecordError(f"{source}: status {data['status']!r} is not one of {STATUSES}")
    metrics = data["metrics"]
    if data["status"] == "completed" and not isinstance(metrics.get("per_dataset"), dict):
        raise RecordError(f"{source}: a completed record needs metrics.per_dataset")
    for scope, values in (metrics.get("per_dataset") or {}).items():
        _check_values(values, f"{source}: metrics.per_dataset.{scope}")
    _check_values(metrics.get("universal") or {}, f"{source}: metrics.universal")
    return RunRecord(**data)


def _check_values(values, where: str) -> None:
    if not isinstance(values, dict):
        raise RecordError(f"{where} must be a mapping")
    for k, v in values.items():
        if v is not None and not isinstance(v, (int, float)) or isinstance(v, bool):
            raise RecordError(f"{where}.{k} is not a number")


def record_filename(rec: RunRecord) -> str:
    return f"{rec.run_id}.json"


def new_run_id(prefix: str) -> str:
    """``prefix`` plus a timestamp and random suffix: unique across concurrent writers."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def write_record(rec: RunRecord, directory: Path) -> Path:
    """Validate and write ``rec`` into ``directory``; never replaces an existing file."""
    data = rec.to_dict()
    validate(json.loads(json.dumps(data)), rec.run_id)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / record_filename(rec)
    tmp = directory / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, final)  # atomic, and fails instead of overwriting
    except FileExistsError:
        raise RecordError(f"{final}: a record with this id exists; not overwriting") from None
    finally:
        tmp.unlink(missing_ok=True)
    return final


def read_record(path: Path) -> RunRecord:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: unreadable ({exc})") from None
    return validate(data, str(path))


# schema_version -> function returning the record upgraded to the next version.
UPGRADES: dict[int, Callable[[dict], dict]] = {}
