"""The run record: one schema-versioned JSON file per run, written atomically.

The format is the JSON Schema ``schemas/record.schema.json`` (validated with ``jsonschema``, on
write and on read); :class:`RunRecord` is its in-memory form. :data:`UPGRADES` turns files
written by older schema versions into the current one (mteb ``TaskResult`` style): what an old
record never recorded is set to null ("unknown"), never guessed. A file is never overwritten:
records are written to a temporary file and then hard-linked to their final name, which fails if
the name exists.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from umlbench.results.identity import (FILE_KEYS, canonical_json, config_identity, get_dotted,
                                       hashed_config, sha256_text)

__all__ = ["SCHEMA_VERSION", "STATUSES", "RunRecord", "RecordError", "validate", "problems",
           "schema_problems", "read_json",
           "write_record", "read_record", "record_filename", "new_run_id", "UPGRADES",
           "schema", "describe_error"]

SCHEMA_VERSION = 3
STATUSES = ("completed", "failed", "interrupted")


class RecordError(ValueError):
    """A record file is malformed, truncated or from a newer schema."""


@dataclass
class RunRecord:
    """One run. ``metrics`` = {"per_dataset": {dataset: {metric: value}},
    "universal": {metric: value}, "summary": {"harmonic_mean": {...}, "arithmetic_mean": {...}}}.
    ``protocol`` = {"name": "uml" | "oodml" | "fewshot" | "fewshot-train", plus "dataset",
    "level", "fid", "shots", ... as the protocol defines}. ``params`` = {"trainable", "total",
    "proxies", "groups"}. ``identity`` = {"config", "data", "code"} (see
    :mod:`umlbench.results.identity`). Metric values are floats (NaN is written as null).
    ``upgraded_from`` is the schema version of the file when it was older (not written)."""

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
    created: str
    identity: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # {"file", "sha256", "format"} of the per-query outcomes sidecar (schema 3); None when the
    # run scored no retrieval metric or the record predates sidecars. Set by write_record.
    per_query: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    upgraded_from: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        data = _json_safe(dataclasses.asdict(self))
        data.pop("upgraded_from")
        return data


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


@functools.cache
def schema(name: str = "record") -> dict:
    """The packaged JSON Schema ``schemas/<name>.schema.json``."""
    text = resources.files("umlbench.results").joinpath(f"schemas/{name}.schema.json").read_text()
    return json.loads(text)


def _inline_refs(node, defs: dict):
    """The schema with each local ``{"$ref": "#/$defs/x"}`` replaced by its definition: the
    same schema (the definitions are not recursive), validated several times faster because
    jsonschema no longer resolves a reference for every metric value."""
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/") and len(node) == 1:
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


@functools.cache
def _validator(name: str):
    from jsonschema import Draft202012Validator

    full = schema(name)
    return Draft202012Validator(_inline_refs(full, full.get("$defs", {})))


def describe_error(error) -> str:
    """One line for a ``jsonschema.ValidationError``: where, then what."""
    path = ".".join(str(p) for p in error.absolute_path)
    where = f"{path}: " if path else ""
    kind, inst = error.validator, error.instance
    if kind == "required":
        missing = [k for k in error.validator_value if k not in inst]
        return f"{where}missing field{'s' if len(missing) > 1 else ''} {missing}"
    if kind == "additionalProperties" and isinstance(inst, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in known)
        return f"{where}unknown field{'s' if len(extra) > 1 else ''} {extra}"
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where}{json.dumps(inst)[:60]} is not {expected}"
    if kind in ("enum", "const"):
        allowed = error.validator_value if kind == "enum" else [error.validator_value]
        return f"{where}{json.dumps(inst)[:60]} is not one of {allowed}"
    return f"{where}{' '.join(error.message.split())[:200]}"


def schema_problems(data: Any, name: str = "record") -> list[str]:
    """Every violation of schema ``name`` by ``data``, one line each (missing fields of one
    object are one line)."""
    errors = sorted(_validator(name).iter_errors(data),
                    key=lambda e: ([str(p) for p in e.absolute_path], e.validator))
    return [describe_error(e) for e in errors]


def _upgraded(data: dict, source: str) -> dict:
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordError(f"{source}: missing schema_version")
    if version > SCHEMA_VERSION:
        raise RecordError(f"{source}: schema_version {version} is newer than this umlbench "
                          f"({SCHEMA_VERSION}); upgrade umlbench to read it")
    if version < 1:
        raise RecordError(f"{source}: schema_version {version} does not exist")
    while version < SCHEMA_VERSION:
        data = UPGRADES[version](data)
        version = data["schema_version"]
    return data


def _check(data: Any, source: str) -> tuple[list[str], dict | None]:
    if not isinstance(data, dict):
        return [f"{source}: not a JSON object"], None
    try:
        data = _upgraded(dict(data), source)
    except RecordError as exc:
        return [str(exc)], None
    found = [f"{source}: {p}" for p in schema_problems(data)]
    return found or _consistency(data, source), data


def problems(data: Any, source: str = "record") -> list[str]:
    """Everything wrong with a record dict (after upgrading an older schema), one line each,
    each starting with ``source``; [] for a valid record."""
    return _check(data, source)[0]


def _consistency(data: dict, source: str) -> list[str]:
    """What the schema cannot say: the config hash matches the config, the seeds agree."""
    out = []
    ident = data["identity"]["config"]
    digest = sha256_text(canonical_json(hashed_config(data["config"], ident["excluded"],
                                                      ident.get("files"))))
    if digest != ident["sha256"]:
        out.append(f"{source}: identity.config.sha256 {ident['sha256'][:12]}… does not match "
                   f"the config ({digest[:12]}…); the config or the hash was edited")
    if data["config"].get("seed") != data["seed"]:
        out.append(f"{source}: seed {data['seed']} differs from config.seed "
                   f"{data['config'].get('seed')}")
    return out


def validate(data: dict, source: str = "record") -> RunRecord:
    """Check a record dict against the schema (upgrading older versions) and return it as a
    :class:`RunRecord`; the first problem is raised as a one-line :class:`RecordError`."""
    found, upgraded = _check(data, source)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise RecordError(found[0] + more)
    version = data["schema_version"]
    return RunRecord(**upgraded, upgraded_from=version if version < SCHEMA_VERSION else None)


def record_filename(rec: RunRecord) -> str:
    return f"{rec.run_id}.json"


def new_run_id(prefix: str) -> str:
    """``prefix`` plus a timestamp and random suffix: unique across concurrent writers."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def write_record(rec: RunRecord, directory: Path, per_query=None) -> Path:
    """Validate and write ``rec`` into ``directory``; never replaces an existing file.

    ``per_query`` (a :class:`~umlbench.results.perquery.PerQuery`) is written first, as the
    sidecar ``<run_id>.perquery.npz``, and ``rec.per_query`` is set to name it; the JSON
    follows (temp file, then link). A record is therefore never visible before its sidecar, and
    if the JSON cannot be written the sidecar is removed again (and ``rec`` left as it was)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / record_filename(rec)
    if final.exists():
        raise RecordError(f"{final}: a record with this id exists; not overwriting")
    sidecar, before = None, rec.per_query
    if per_query is not None:
        # Imported here: perquery imports RecordError from this module.
        from umlbench.results.perquery import FORMAT, sidecar_name, write_sidecar

        sidecar = directory / sidecar_name(final.name)
        name, digest = write_sidecar(sidecar, per_query)
        rec.per_query = {"file": name, "sha256": digest, "format": FORMAT}
    try:
        data = rec.to_dict()
        validate(json.loads(json.dumps(data)), rec.run_id)
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
    except BaseException:
        if sidecar is not None:
            sidecar.unlink(missing_ok=True)
            rec.per_query = before
        raise
    return final


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: unreadable ({exc})") from None


def read_record(path: Path) -> RunRecord:
    return validate(read_json(path), str(path))


def _v1_to_v2(data: dict) -> dict:
    """Schema 1 had no identity, only ``git_commit`` (``<sha>[-dirty]``). The config identity
    is computed from the recorded config (file contents unknown); data identity and the diff
    of a dirty tree were never recorded, so they are null."""
    data = dict(data)
    commit = data.pop("git_commit", None)
    dirty = None
    if isinstance(commit, str):
        dirty = commit.endswith("-dirty")
        commit = commit.removesuffix("-dirty")
    config = data.get("config")
    config_id = None
    if isinstance(config, dict):
        config_id = config_identity(
            config, files={k: None for k in FILE_KEYS if get_dotted(config, k) is not None})
    packages = data.get("packages") if isinstance(data.get("packages"), dict) else {}
    data["identity"] = {
        "config": config_id,
        "data": None,
        "code": {"umlbench_version": packages.get("umlbench"), "git_commit": commit,
                 "dirty": dirty, "diff_sha256": None},
    }
    data["schema_version"] = 2
    return data


def _v2_to_v3(data: dict) -> dict:
    """Schema 2 kept no per-query outcomes: ``per_query`` is null."""
    return {**data, "per_query": None, "schema_version": 3}


# schema_version -> function returning the record upgraded to the next version.
UPGRADES: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3}
