"""Per-query outcomes: what each query contributed to each retrieval metric of a run.

A record's retrieval metrics are means over queries. Keeping the terms of those means lets two
runs on the same data be compared query by query (paired intervals, McNemar), which the means
alone cannot. They live in a sidecar ``<record stem>.perquery.npz`` next to the JSON record,
which names it and its SHA-256 (``record["per_query"]``).

In memory: :class:`PerQuery` maps each scope (a dataset name as in
``record["metrics"]["per_dataset"]``, and ``"universal"``) to a :class:`ScopeOutcomes`: the
scope's scored queries (queries without any relevant gallery item are excluded from every mean,
so they are not here) keyed by ``"<dataset>/<image_id>"`` and, per metric, each query's term
(Recall@K and Precision@1 hits are 0.0/1.0, R-precision, MAP@R and MAP@1000 in [0, 1]). The
record's aggregate equals ``values[m].mean()`` to within :data:`TOLERANCE`.

On disk (format 1) the file is a zip of ``.npy`` members (``numpy.load`` reads it) written with
fixed timestamps, so the same outcomes give the same bytes and the same SHA-256:

- ``meta`` (uint8, UTF-8 JSON): format, scopes with their metrics and
  how each is stored;
- ``ids`` (uint8): the sorted union of every scope's ids, newline-joined, LZMA-compressed (ids
  share long prefixes, which LZMA removes);
- ``<scope>.mask`` (uint8, packed bits over ``ids``): which ids the scope holds; its values are in
  ``ids`` order;
- ``<scope>.<metric>`` the values: hits as packed bits, AP-type values quantised to uint16
  (``round(v * 65535)``), both stored as the XOR / difference against the same query's value
  in its dataset's scope where that scope has the metric (``universal`` mostly agrees with the
  per-dataset scope, and a difference of zero compresses to almost nothing).
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import secrets
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from umlbench.errors import UserError
from umlbench.results.record import RecordError

__all__ = ["FORMAT", "TOLERANCE", "SUFFIX", "ScopeOutcomes", "PerQuery", "write_sidecar",
           "load_sidecar", "load_for_record", "pair", "sidecar_name", "scope_problems",
           "query_key", "sha256_file"]

FORMAT = 1
SUFFIX = ".perquery.npz"
# AP-type values are stored as round(v * _SCALE): each is off by at most 0.5 / _SCALE, and so is
# any mean of them. Hits are stored exactly. Means are compared against the record with this.
_SCALE = 65535
TOLERANCE = 0.5 / _SCALE + 1e-12
_BINARY = ("precision@1",)  # besides recall@K: metrics whose per-query term is a hit (0/1)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _is_binary(metric: str) -> bool:
    return metric.startswith("recall@") or metric in _BINARY


def query_key(dataset: str, image_id: str) -> str:
    """The id of one query: unique across the datasets of a universal scope."""
    return f"{dataset}/{image_id}"


@dataclass(frozen=True)
class ScopeOutcomes:
    """The scored queries of one scope. ``ids``: (n,) str, unique, sorted; ``values``: metric ->
    (n,) float64, the query's term of the metric's mean (hits 0.0/1.0)."""

    ids: np.ndarray
    values: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.ids)
        for m, v in self.values.items():
            if np.shape(v) != (n,):
                raise ValueError(f"metric {m}: {np.shape(v)} values for {n} ids")

    def __len__(self) -> int:
        return len(self.ids)

    def means(self) -> dict[str, float]:
        return {m: float(np.mean(v)) if len(v) else float("nan") for m, v in self.values.items()}

    @classmethod
    def build(cls, ids, values: Mapping[str, Any]) -> ScopeOutcomes:
        """From ids in any order (sorted here, with the values); duplicate ids are an error."""
        ids = np.asarray(ids, dtype=str)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
            dup = ids[1:][ids[1:] == ids[:-1]][0]
            raise ValueError(f"query id {dup!r} appears twice in one scope")
        vals = {m: np.asarray(v, dtype=np.float64)[order] for m, v in values.items()}
        return cls(ids, vals)


@dataclass(frozen=True)
class PerQuery:
    """Per-query outcomes of a run: scope name -> :class:`ScopeOutcomes`."""

    scopes: dict[str, ScopeOutcomes]


def sidecar_name(record_name: str) -> str:
    """``<record stem>.perquery.npz`` for ``<record stem>.json``."""
    return Path(record_name).name.removesuffix(".json") + SUFFIX


# --- writing -------------------------------------------------------------------------------


def _encode(per_query: PerQuery) -> dict[str, np.ndarray]:
    scopes = per_query.scopes
    table = np.unique(np.concatenate([s.ids for s in scopes.values()] or [np.array([], str)]))
    blob = lzma.compress("\n".join(table.tolist()).encode(), preset=9 | lzma.PRESET_EXTREME)
    arrays: dict[str, np.ndarray] = {"ids": np.frombuffer(blob, np.uint8)}
    pos = {scope: np.searchsorted(table, out.ids) for scope, out in scopes.items()}
    quant = {scope: {m: _quantise(m, v) for m, v in out.values.items()}
             for scope, out in scopes.items()}
    # Each id's stored value in its dataset's scope, which the universal scope is stored against.
    own: dict[str, np.ndarray] = {}
    own_has: dict[str, np.ndarray] = {}
    for scope in scopes:
        if scope != "universal":
            for m, q in quant[scope].items():
                own.setdefault(m, np.zeros(len(table), np.int64))[pos[scope]] = q
                own_has.setdefault(m, np.zeros(len(table), bool))[pos[scope]] = True
    meta_scopes = {}
    for scope, out in scopes.items():
        mask = np.zeros(len(table), bool)
        mask[pos[scope]] = True
        arrays[f"{scope}.mask"] = np.packbits(mask)
        diffed = []
        for m, q in quant[scope].items():
            at = pos[scope]
            against = scope == "universal" and m in own and own_has[m][at].all()
            if against:
                diffed.append(m)
                q = (q ^ own[m][at]) if _is_binary(m) else q - own[m][at]
            if _is_binary(m):
                arrays[f"{scope}.{m}"] = np.packbits(q.astype(bool))
            else:
                arrays[f"{scope}.{m}"] = q.astype(np.int32 if against else np.uint16)
        meta_scopes[scope] = {"n": int(len(out)), "metrics": list(out.values), "diffed": diffed}
    meta = {"format": FORMAT, "scale": _SCALE, "n_ids": int(len(table)), "scopes": meta_scopes}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    return arrays


def _quantise(metric: str, v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"metric {metric}: per-query values must be finite")
    if _is_binary(metric):
        if not np.isin(v, (0.0, 1.0)).all():
            raise ValueError(f"metric {metric}: per-query hits must be 0 or 1")
        return v.astype(np.int64)
    if (v < 0).any() or (v > 1).any():
        raise ValueError(f"metric {metric}: per-query values must lie in [0, 1]")
    return np.rint(v * _SCALE).astype(np.int64)


def write_sidecar(path: Path, per_query: PerQuery) -> tuple[str, str]:
    """Write ``per_query`` to ``path`` atomically (temp file, then rename); returns the file
    name and its SHA-256 (hex). The same outcomes always give the same bytes."""
    path = Path(path)
    arrays = _encode(per_query)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for key in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]),
                                          allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue(), compresslevel=9)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.name, sha256_file(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


# --- reading -------------------------------------------------------------------------------


def load_sidecar(path: Path) -> PerQuery:
    """Read a sidecar; a missing, truncated or malformed file raises a one-line RecordError."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return _decode(arrays)
    except FileNotFoundError:
        raise RecordError(f"{path}: per-query sidecar not found") from None
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None
    except Exception as exc:  # zip, npy, lzma, JSON or shape errors: all mean a damaged file
        msg = " ".join(str(exc).split())[:160]
        raise RecordError(f"{path}: not a readable per-query sidecar "
                          f"({type(exc).__name__}: {msg})") from None


def _decode(arrays: dict[str, np.ndarray]) -> PerQuery:
    if "meta" not in arrays or "ids" not in arrays:
        raise RecordError("missing the meta or ids member")
    meta = json.loads(arrays["meta"].tobytes().decode())
    if meta.get("format") != FORMAT:
        raise RecordError(f"sidecar format {meta.get('format')!r} is not {FORMAT}; "
                          "upgrade umlbench to read it")
    text = lzma.decompress(arrays["ids"].tobytes()).decode()
    table = np.array(text.split("\n") if meta["n_ids"] else [], dtype=str)
    if len(table) != meta["n_ids"]:
        raise RecordError(f"{len(table)} ids, the header says {meta['n_ids']}")
    scale = float(meta["scale"])
    raw: dict[str, dict[str, np.ndarray]] = {}
    where: dict[str, np.ndarray] = {}
    for scope, info in meta["scopes"].items():
        mask = np.unpackbits(arrays[f"{scope}.mask"], count=len(table)).astype(bool)
        if mask.sum() != info["n"]:
            raise RecordError(f"scope {scope}: {int(mask.sum())} ids, the header says "
                              f"{info['n']}")
        where[scope] = np.flatnonzero(mask)
        raw[scope] = {}
        for m in info["metrics"]:
            a = arrays[f"{scope}.{m}"]
            if _is_binary(m):
                a = np.unpackbits(a, count=info["n"]).astype(np.int64)
            elif len(a) != info["n"]:
                raise RecordError(f"scope {scope}, {m}: {len(a)} values for {info['n']} ids")
            raw[scope][m] = a.astype(np.int64)
    if "universal" in meta["scopes"]:
        pos = where["universal"]
        for m in meta["scopes"]["universal"].get("diffed", []):
            own = np.zeros(len(table), np.int64)
            for scope in raw:
                if scope != "universal" and m in raw[scope]:
                    own[where[scope]] = raw[scope][m]
            u = raw["universal"][m]
            raw["universal"][m] = (u ^ own[pos]) if _is_binary(m) else u + own[pos]
    scopes = {}
    for scope, vals in raw.items():
        values = {m: (q.astype(np.float64) if _is_binary(m) else q / scale)
                  for m, q in vals.items()}
        scopes[scope] = ScopeOutcomes(table[where[scope]], values)
    return PerQuery(scopes)


def load_for_record(record_path: Path, record: Mapping | Any | None = None) -> PerQuery | None:
    """The sidecar a record names, checked against its SHA-256. None when the record names none
    (schema 1 and 2, or a run that scored no retrieval metric) or the file is missing; a
    RecordError when it does not match the hash or cannot be read."""
    record_path = Path(record_path)
    if record is None:
        from umlbench.results.record import read_json

        record = read_json(record_path)
    ref = record.get("per_query") if isinstance(record, Mapping) else record.per_query
    if not ref:
        return None
    path = record_path.parent / ref["file"]
    if not path.is_file():
        return None
    digest = sha256_file(path)
    if digest != ref["sha256"]:
        raise RecordError(f"{path}: SHA-256 {digest[:12]}… does not match the record's "
                          f"{ref['sha256'][:12]}…; the sidecar was changed or replaced")
    return load_sidecar(path)


# --- using ---------------------------------------------------------------------------------


def pair(a: ScopeOutcomes, b: ScopeOutcomes, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``metric``'s per-query values of ``a`` and ``b`` aligned query by query: two (n,)
    float64 arrays in id order. A UserError when the scopes hold different queries (different
    data, or a different set of excluded queries) or either lacks the metric."""
    for name, s in (("first", a), ("second", b)):
        if metric not in s.values:
            raise UserError(f"the {name} run has no per-query {metric} "
                            f"(it has {', '.join(sorted(s.values)) or 'none'})")
    if len(a.ids) == len(b.ids) and np.array_equal(a.ids, b.ids):
        return a.values[metric], b.values[metric]
    only_a = np.setdiff1d(a.ids, b.ids)
    only_b = np.setdiff1d(b.ids, a.ids)
    example = (only_a if len(only_a) else only_b)[0]
    raise UserError(f"the runs were scored on different queries ({len(only_a)} only in the "
                    f"first, {len(only_b)} only in the second, e.g. {example!r}); compare runs "
                    "on the same data")


def scope_problems(per_query: PerQuery, metrics: Mapping[str, Any],
                   tolerance: float = TOLERANCE) -> list[str]:
    """Where the sidecar disagrees with a record's ``metrics`` block: a scope or retrieval
    metric of the record missing from the sidecar, a scope the record lacks, a query count
    that differs, or a mean off by more than ``tolerance``. One line each."""
    expected: dict[str, Mapping[str, Any]] = dict(metrics.get("per_dataset") or {})
    if metrics.get("universal"):
        expected["universal"] = metrics["universal"]
    out = []
    for scope, agg in expected.items():
        names = [m for m in agg if _is_retrieval(m)]
        if not names:
            continue
        if scope not in per_query.scopes:
            out.append(f"scope {scope}: no per-query outcomes")
            continue
        got = per_query.scopes[scope]
        n = agg.get("num_queries")
        if n is not None:
            scored = int(n) - int(agg.get("num_excluded_queries") or 0)
            if scored != len(got):
                out.append(f"scope {scope}: {len(got)} queries, the record scored {scored}")
                continue
        means = got.means()
        for m in names:
            if m not in means:
                out.append(f"scope {scope}: no per-query {m}")
            elif agg[m] is None:
                if len(got):
                    out.append(f"scope {scope}: {m} is null in the record but {len(got)} "
                               "queries have outcomes")
            elif not abs(means[m] - float(agg[m])) <= tolerance:
                out.append(f"scope {scope}: mean per-query {m} {means[m]:.6f} differs from "
                           f"the record's {float(agg[m]):.6f}")
    extra = sorted(set(per_query.scopes) - set(expected))
    if extra:
        out.append(f"scopes {extra} are not in the record")
    return out


def _is_retrieval(metric: str) -> bool:
    return _is_binary(metric) or metric in ("r_precision", "map@r", "map@1000")
