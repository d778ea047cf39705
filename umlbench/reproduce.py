"""``umlbench reproduce RECORD.json``: rerun a recorded run and compare its metrics.

The rerun uses the record's resolved config (its seed included) as it is, with only the
machine-specific keys replaced (``data_root``, optionally ``device``); a warning says when this
umlbench's code identity is not the record's. Before anything runs, the
prepared data must have the record's data identity: manifests, image source and split files are
compared dataset by dataset and the first difference is a one-line error naming the dataset and
both values. Checkpoints go to a temporary work dir (never resumed from); the new record goes to
the results dir like any run's. On CPU the rerun uses the record's number of torch threads
(``hardware.torch_threads``): float sums are split differently with another count, so a run is
bit-exact only with the same one.

When the record has per-query outcomes (a sidecar, schema 3) the rerun's are compared query by
query too: equal sidecar SHA-256s mean identical outcomes, otherwise every (scope, metric) where
some query's stored term differs is a difference.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from umlbench import paths
from umlbench.config import RunConfig, from_dict, to_dict
from umlbench.env import code_identity
from umlbench.errors import UserError
from umlbench.results.identity import (canonical_json, code_label, config_identity,
                                       data_differences, file_hashes, flatten, get_dotted,
                                       hashed_config)
from umlbench.results import perquery
from umlbench.results.record import RecordError, RunRecord, read_record
from umlbench.runner import load_protocol, protocol_data_identity, run

__all__ = ["Reproduction", "reproduce", "record_config", "metric_differences",
           "per_query_differences"]


@dataclass
class Reproduction:
    """``differences``: (metric key, original, reproduced) for every metric that differs, keys
    like ``per_dataset.mini-cub.recall@1``; ``compared``: how many metrics were compared."""

    original: RunRecord
    reproduced: RunRecord
    path: Path | None
    differences: list[tuple[str, float | None, float | None]]
    compared: int
    warnings: list[str]
    # Per-query outcomes: None when the original record has none (schema <= 2); else
    # (key ``per_query.<scope>.<metric>``, queries whose term differs, queries) per difference.
    per_query: list[tuple[str, int, int]] | None = None

    @property
    def identical(self) -> bool:
        return not self.differences and not self.per_query


def record_config(rec: RunRecord, source: str, data_root: str | None = None,
                  device: str | None = None) -> tuple[RunConfig, list[str]]:
    """The record's resolved config for this machine, and warnings when this umlbench
    resolves it to a different config identity (fields added since the record was made)."""
    config = dict(rec.config)
    config["data_root"] = data_root
    if device:
        config["device"] = device
    try:
        cfg = from_dict(RunConfig, config, source=f"{source} (config)")
    except UserError as exc:
        raise UserError(f"{exc}; this record was written by another umlbench version "
                        f"({rec.identity['code'].get('umlbench_version')})") from None
    warnings = []
    ident = rec.identity["config"]
    here = file_hashes(to_dict(cfg))
    for key, digest in (ident.get("files") or {}).items():
        if digest is not None and here.get(key) != digest:
            raise UserError(f"{source}: {key} {get_dotted(rec.config, key)} has SHA-256 "
                            f"{here.get(key) or 'none (unreadable)'} here, {digest} in the record")
    if config_identity(to_dict(cfg), ident.get("files"))["sha256"] != ident["sha256"]:
        old = flatten(hashed_config(rec.config, ident["excluded"], ident.get("files")))
        new = flatten(hashed_config(to_dict(cfg), ident["excluded"], ident.get("files")))
        changed = sorted(k for k in set(old) | set(new)
                         if canonical_json(old.get(k)) != canonical_json(new.get(k)))
        warnings.append("this umlbench resolves the record's config differently ("
                        + ", ".join(changed[:5]) + (", …" if len(changed) > 5 else "")
                        + "); the rerun may differ")
    return cfg, warnings


def record_threads(rec: RunRecord, device: str | None) -> int | None:
    """The torch thread count to rerun ``rec`` with: the record's, for a CPU run (None: keep)."""
    hw = rec.hardware or {}
    n = hw.get("torch_threads")
    on_cpu = str(device or hw.get("device") or "cpu").startswith("cpu")
    return int(n) if on_cpu and isinstance(n, int) and n >= 1 else None


def metric_differences(a: RunRecord, b: RunRecord) -> tuple[list, int]:
    """Metrics of ``a`` and ``b`` (and the harmonic mean) that are not exactly equal."""
    left = flatten(a.metrics) | {"harmonic_mean": a.harmonic_mean}
    right = flatten(b.metrics) | {"harmonic_mean": b.harmonic_mean}
    diffs = []
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        same = (x == y) or (_missing(x) and _missing(y))
        if not same:
            diffs.append((key, x, y))
    return diffs, len(set(left) | set(right))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _short(v) -> str:
    return v if isinstance(v, str) else canonical_json(v)


def reproduce(record_path: Path, *, data_root: str | None = None, device: str | None = None,
              results_dir: Path | None = None, work_dir: Path | None = None,
              console: Console | None = None) -> Reproduction:
    """Rerun the run of ``record_path`` and compare (see module docstring)."""
    source = str(record_path)
    try:
        rec = read_record(record_path)
    except RecordError as exc:
        raise UserError(str(exc)) from None
    if rec.status != "completed":
        raise UserError(f"{source}: a {rec.status} run has no metrics to reproduce")
    if rec.identity["data"] is None:
        raise UserError(f"{source}: written before records had a data identity (schema "
                        f"{rec.upgraded_from or 1}), so its data cannot be checked; rerun it "
                        "with `umlbench run` to get a record that `reproduce` accepts")
    cfg, warnings = record_config(rec, source, data_root, device)
    here, there = code_identity(), rec.identity["code"]
    if code_label(here) != code_label(there):
        warnings.append(f"the record was made by umlbench {code_label(there)}, this is "
                        f"{code_label(here)}; metrics may differ")
    root = paths.data_root(cfg.data_root)
    data = load_protocol(cfg, root)
    diffs = data_differences(rec.identity["data"], protocol_data_identity(data))
    if diffs:
        name, key, was, now = diffs[0]
        raise UserError(f"{name}: the prepared data under {root} is not the record's: {key} "
                        f"{_short(was)} (record) vs {_short(now)} (prepared)")
    console = console or Console(stderr=True)
    for w in warnings:
        console.print(f"warning: {w}")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="umlbench-reproduce-"))
    threads = record_threads(rec, device)
    import torch

    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        written = run(cfg, results_dir=results_dir, work_dir=work, console=console, data=data)
    finally:
        torch.set_num_threads(before)
        if not work_dir:
            shutil.rmtree(work, ignore_errors=True)
    same = [(r, p) for r, p in written
            if canonical_json(r.protocol) == canonical_json(rec.protocol)]
    new, path = (same or written)[0]
    differences, compared = metric_differences(rec, new)
    per_query = per_query_differences(Path(record_path), rec, path, new)
    return Reproduction(rec, new, path, differences, compared, warnings, per_query)


def per_query_differences(path_a: Path, a: RunRecord, path_b: Path | None,
                          b: RunRecord) -> list[tuple[str, int, int]] | None:
    """Where the per-query outcomes of two records differ: (``per_query.<scope>.<metric>``,
    queries whose stored term differs, queries compared), [] when identical; None when ``a``
    has none. A sidecar that cannot be read (missing, other SHA-256) is a UserError."""
    try:
        left = perquery.load_for_record(path_a, a)
        if left is None:
            if a.per_query:
                raise UserError(f"{path_a}: per-query sidecar {a.per_query['file']} is missing")
            return None
        if b.per_query and a.per_query and b.per_query["sha256"] == a.per_query["sha256"]:
            return []  # the same bytes: the same outcomes
        right = perquery.load_for_record(path_b, b) if path_b else None
    except RecordError as exc:
        raise UserError(str(exc)) from None
    if right is None:
        return [("per_query", len(left.scopes), 0)]
    out = []
    for scope in sorted(set(left.scopes) | set(right.scopes)):
        x, y = left.scopes.get(scope), right.scopes.get(scope)
        for m in sorted(set(x.values if x else ()) | set(y.values if y else ())):
            key = f"per_query.{scope}.{m}"
            if x is None or y is None or m not in x.values or m not in y.values:
                out.append((key, len(x or y), 0))
                continue
            if not np.array_equal(x.ids, y.ids):
                out.append((key, max(len(x), len(y)), 0))
                continue
            out.append((key, int((x.values[m] != y.values[m]).sum()), len(x)))
    return [d for d in out if d[1] or not d[2]]
