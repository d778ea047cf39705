"""Per-query outcomes: what each query contributed to each retrieval metric of a run.

A record's retrieval metrics are means over queries. Keeping the terms of those means lets two
runs on the same data be compared query by query (paired intervals, McNemar), which the means
alone cannot. They live in a sidecar ``<record stem>.perquery.npz`` next to the JSON record,
which names it with its SHA-256 (``record["per_query"]``).

In memory, :class:`PerQuery` maps each scope to a :class:`ScopeOutcomes`: the scope's scored
queries (queries without any relevant gallery item are left out of every mean, so they are not
here) and, per metric, each query's term of the mean: Recall@K and Precision@1 hits are 0.0 or
1.0; R-precision, MAP@R and MAP@1000 lie in [0, 1]. The record's aggregate equals
``values[m].mean()`` to within :data:`TOLERANCE` (the AP-type terms are stored rounded).

Scopes are the record's: each dataset of ``record["metrics"]["per_dataset"]`` and
``"universal"``. ooDML few-shot records (``PerQuery.episodic``) have one scope per episode,
``"episode-<i>"`` (the fixed episodes of the split file, in order): their score is the mean over
episodes of each episode's mean, which a pool of all queries would not reproduce, and pairing
two few-shot runs episode by episode keeps the episode a unit of the comparison.

Query ids. A query's id is ``"<dataset>/<k>"``: ``k`` (zero-padded) is the position of its
image id in the sorted list of the dataset's scored query image ids (manifest ``image_id``), and
``PerQuery.datasets[dataset]`` holds that list's length and SHA-256 (over the ids joined by
newlines). Two runs scored on the same query images get the same ids, and :func:`pair` refuses
two runs whose lists differ. The image ids themselves are not stored: on the real suite they
would take most of the size budget (NABirds alone has 25,653 UUIDs, 16 bytes each however they
are packed); the data identity's manifest gives them back, ``k`` being their sorted order.

On disk (``FORMAT`` 1) the file is an ``.npz`` (a zip of ``.npy`` members, LZMA-compressed,
fixed timestamps, so the same outcomes always give the same bytes; ``numpy.load`` reads it):

- ``meta`` (uint8, UTF-8 JSON): format, scale, datasets (n, sha256), scopes (their metrics and
  how each is stored), episodic; ``ids``: ``positions`` (the ids are the datasets' positions
  above) or ``stored`` (outcomes built by hand as ``PerQuery(scopes)`` with ids of the
  caller's choice: the sorted ids are stored in the member ``ids``, newline-joined, LZMA);
- ``<scope>.mask`` (packed bits over the key table: every dataset's keys in name order): which
  queries the scope holds; its values follow that order;
- ``<scope>.<metric>``: hits as packed bits; AP-type terms as uint16 ``q``, the term rounded to
  a multiple of ``1 / SCALE`` (off by at most :data:`TOLERANCE`, and so is any mean of them).
  In ``universal`` a metric that every query also has in its dataset's scope is stored as the
  XOR (hits) or difference (int16) against that value: the two mostly agree, and zeros compress
  to almost nothing. A metric equal to another of the same scope (Precision@1 and Recall@1) is
  stored once (``same_as``).

Size: a synthetic outcome set shaped like the real ``uml`` suite (146,665 queries, the
literature's Recall@K lists, every retrieval metric, per dataset and universal) takes 0.72 MB
(tests/results/test_perquery.py checks <= 1 MB); an off-the-shelf run on the whole mini suite
0.059 MB (budget 0.1 MB).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from umlbench.errors import UserError
from umlbench.results.record import RecordError

__all__ = ["FORMAT", "SCALE", "SUFFIX", "TOLERANCE", "DatasetQueries", "ScopeOutcomes",
           "PerQuery", "write_sidecar", "load_sidecar", "load_for_record", "pair",
           "sidecar_name", "scope_problems", "sha256_file", "is_retrieval",
           "episode_scope"]

FORMAT = 1
SUFFIX = ".perquery.npz"
# AP-type terms are stored as q / SCALE (uint16, 12 bits): finer than any difference a reader
# acts on, and every further bit of resolution costs ~70 KB on the real suite.
SCALE = 4095
# Bound on the error of a stored AP-type term, and so of any mean of them (hits are exact). In
# practice a scope mean is off by far less (rounding errors cancel): at most 2e-5 in a mini run.
TOLERANCE = 0.5 / SCALE + 1e-12
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_AP_TYPE = ("r_precision", "map@r", "map@1000")


def is_binary(metric: str) -> bool:
    """Metrics whose per-query term is a hit (0 or 1)."""
    return metric.startswith("recall@") or metric == "precision@1"


def is_retrieval(metric: str) -> bool:
    """Metrics that are means over queries (NMI and F1 are not)."""
    return is_binary(metric) or metric in _AP_TYPE


def episode_scope(index: int) -> str:
    return f"episode-{index}"


@dataclass(frozen=True)
class DatasetQueries:
    """A dataset's scored query image ids, as the ids refer to them: their number and the
    SHA-256 of the sorted ids joined by newlines."""

    n: int
    sha256: str


@dataclass(frozen=True)
class ScopeOutcomes:
    """The scored queries of one scope. ``ids``: (n,) str, unique, sorted; ``values``: metric ->
    (n,) float64, each query's term of the metric's mean (hits 0.0/1.0). ``sources``: dataset ->
    SHA-256 of the query list the ids of that dataset point into (empty when unknown)."""

    ids: np.ndarray
    values: dict[str, np.ndarray]
    sources: dict[str, str] = field(default_factory=dict)

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
    def build(cls, ids, values: Mapping[str, Any], sources: Mapping[str, str] | None = None
              ) -> ScopeOutcomes:
        """From ids in any order (sorted here, values with them); duplicate ids are an error."""
        ids = np.asarray(ids, dtype=str).reshape(-1)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
            dup = ids[1:][ids[1:] == ids[:-1]][0]
            raise ValueError(f"query id {dup!r} appears twice in one scope")
        vals = {m: np.asarray(v, dtype=np.float64).reshape(-1)[order] for m, v in values.items()}
        return cls(ids, vals, dict(sources or {}))


@dataclass(frozen=True)
class PerQuery:
    """Per-query outcomes of a run: scope name -> :class:`ScopeOutcomes`; ``datasets``: the
    query list each dataset's ids point into; ``episodic``: scopes are few-shot episodes."""

    scopes: dict[str, ScopeOutcomes]
    datasets: dict[str, DatasetQueries] = field(default_factory=dict)
    episodic: bool = False

    @classmethod
    def from_queries(cls, scopes: Mapping[str, tuple[Any, Any, Mapping[str, Any]]],
                     episodic: bool = False) -> PerQuery:
        """Build from ``{scope: (datasets (n,) str, image_ids (n,) str, {metric: (n,)})}``,
        one entry per scored query; gives each query its id (see the module docstring)."""
        parts = {s: (np.asarray(d, dtype=str).reshape(-1), np.asarray(i, dtype=str).reshape(-1),
                     v) for s, (d, i, v) in scopes.items()}
        names = sorted({str(x) for d, _, _ in parts.values() for x in np.unique(d)})
        lists, info = {}, {}
        for name in names:
            lists[name] = np.unique(np.concatenate([i[d == name] for d, i, _ in parts.values()]))
            info[name] = DatasetQueries(len(lists[name]), _ids_sha256(lists[name]))
        out = {}
        for scope, (ds, image_ids, values) in parts.items():
            keys = np.empty(len(ds), dtype=object)
            for name in np.unique(ds):
                at = ds == name
                k = np.searchsorted(lists[name], image_ids[at])
                keys[at] = _keys(str(name), info[name].n)[k]
            out[scope] = ScopeOutcomes.build(
                keys.astype(str), values, {str(n): info[str(n)].sha256 for n in np.unique(ds)})
        return cls(out, info, episodic)


def _ids_sha256(sorted_ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join(sorted_ids.tolist()).encode()).hexdigest()


def _keys(dataset: str, n: int) -> np.ndarray:
    """The ids of a dataset's ``n`` queries, zero-padded so that they sort in number order."""
    width = len(str(max(n - 1, 0)))
    return np.array([f"{dataset}/{k:0{width}d}" for k in range(n)], dtype=str)


def sidecar_name(record_name: str) -> str:
    """``<record stem>.perquery.npz`` for ``<record stem>.json``."""
    return Path(record_name).name.removesuffix(".json") + SUFFIX


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


# --- writing -------------------------------------------------------------------------------


def _quantise(metric: str, v: np.ndarray) -> np.ndarray:
    """Hits as 0/1, AP-type terms as round(v * SCALE): (n,) int64. Rounding each term on its
    own (not to fix a scope's sum) gives a query the same stored value in every scope where its
    exact value is the same, which the universal scope's differencing relies on."""
    v = np.asarray(v, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"metric {metric}: per-query values must be finite")
    if is_binary(metric):
        if not np.isin(v, (0.0, 1.0)).all():
            raise ValueError(f"metric {metric}: per-query hits must be 0 or 1")
        return v.astype(np.int64)
    if (v < 0).any() or (v > 1).any():
        raise ValueError(f"metric {metric}: per-query values must lie in [0, 1]")
    return np.rint(v * SCALE).astype(np.int64)


def _encode(per_query: PerQuery) -> dict[str, np.ndarray]:
    names = sorted(per_query.datasets)
    arrays: dict[str, np.ndarray] = {}
    if names:
        table = np.concatenate([_keys(n, per_query.datasets[n].n) for n in names])
    else:
        # Outcomes built by hand (ScopeOutcomes with ids of the caller's choice, no query
        # lists): the ids themselves are stored, newline-joined.
        table = np.unique(np.concatenate([np.asarray(s.ids, str) for s in
                                          per_query.scopes.values()] or [np.array([], str)]))
        if any("\n" in i for i in table.tolist()):
            raise ValueError("query ids must not contain a newline")
        arrays["ids"] = np.frombuffer(lzma.compress("\n".join(table.tolist()).encode()),
                                      np.uint8)
    order = np.argsort(table, kind="stable")
    sorted_table = table[order]

    def where(ids: np.ndarray) -> np.ndarray:
        i = np.minimum(np.searchsorted(sorted_table, ids), max(len(table) - 1, 0))
        if len(ids) and (not len(table) or (sorted_table[i] != ids).any()):
            bad = ids[sorted_table[i] != ids][0] if len(table) else ids[0]
            raise ValueError(f"query id {bad!r} is not one of the datasets' queries")
        return order[i]

    pos, quant = {}, {}
    for scope, out in per_query.scopes.items():
        p = where(out.ids)
        srt = np.argsort(p, kind="stable")  # values go in key-table order
        pos[scope] = p[srt]
        quant[scope] = {m: _quantise(m, v)[srt] for m, v in out.values.items()}
    # Each query's stored value in its dataset's scope, which universal is stored against.
    own: dict[str, np.ndarray] = {}
    has: dict[str, np.ndarray] = {}
    if not per_query.episodic:
        for scope in per_query.scopes:
            if scope != "universal":
                for m, q in quant[scope].items():
                    own.setdefault(m, np.zeros(len(table), np.int64))[pos[scope]] = q
                    has.setdefault(m, np.zeros(len(table), bool))[pos[scope]] = True
    meta_scopes = {}
    for scope, out in per_query.scopes.items():
        mask = np.zeros(len(table), bool)
        mask[pos[scope]] = True
        arrays[f"{scope}.mask"] = np.packbits(mask)
        stored: dict[str, str] = {}
        for m, q in quant[scope].items():
            twin = next((o for o in stored if stored[o] in ("bits", "uint16", "xor", "diff")
                         and is_binary(o) == is_binary(m)
                         and np.array_equal(quant[scope][o], q)), None)
            if twin is not None:
                stored[m] = f"same_as:{twin}"
                continue
            p = pos[scope]
            against = scope == "universal" and m in own and bool(has[m][p].all())
            if is_binary(m):
                stored[m] = "xor" if against else "bits"
                arrays[f"{scope}.{m}"] = np.packbits(((q ^ own[m][p]) if against else q)
                                                     .astype(bool))
            else:
                stored[m] = "diff" if against else "uint16"
                arrays[f"{scope}.{m}"] = ((q - own[m][p]).astype(np.int16) if against
                                          else q.astype(np.uint16))
        meta_scopes[scope] = {"n": int(len(out)), "metrics": list(out.values), "stored": stored}
    meta = {"format": FORMAT, "scale": SCALE, "episodic": per_query.episodic,
            "ids": "positions" if names else "stored",
            "datasets": {n: {"n": per_query.datasets[n].n, "sha256": per_query.datasets[n].sha256}
                         for n in names},
            "scopes": meta_scopes}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    return arrays


def write_sidecar(path: Path, per_query: PerQuery) -> tuple[str, str]:
    """Write ``per_query`` to ``path`` atomically (temp file, then rename); returns the file
    name and its SHA-256 (hex). The same outcomes always give the same bytes."""
    path = Path(path)
    arrays = _encode(per_query)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for key in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]),
                                          allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_LZMA  # ~10% smaller than deflate here
                zf.writestr(info, buf.getvalue())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.name, sha256_file(path)


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
    except Exception as exc:  # zip, npy, LZMA, JSON, key or shape errors: a damaged file
        msg = " ".join(str(exc).split())[:160]
        raise RecordError(f"{path}: not a readable per-query sidecar "
                          f"({type(exc).__name__}: {msg})") from None


def _decode(arrays: dict[str, np.ndarray]) -> PerQuery:
    if "meta" not in arrays:
        raise RecordError("no meta member")
    meta = json.loads(arrays["meta"].tobytes().decode())
    if meta.get("format") != FORMAT:
        raise RecordError(f"sidecar format {meta.get('format')!r} is not {FORMAT}; "
                          "upgrade umlbench to read it")
    info = {n: DatasetQueries(int(d["n"]), str(d["sha256"])) for n, d in meta["datasets"].items()}
    names = sorted(info)
    if meta.get("ids") == "stored":
        text = lzma.decompress(arrays["ids"].tobytes()).decode()
        table = np.array(text.split("\n") if text else [], dtype=str)
    else:
        table = np.concatenate([_keys(n, info[n].n) for n in names] or [np.array([], str)])
    owner = np.repeat(np.array(names, dtype=object), [info[n].n for n in names])
    scale = float(meta["scale"])
    raw: dict[str, dict[str, np.ndarray]] = {}
    where: dict[str, np.ndarray] = {}
    for scope, sm in meta["scopes"].items():
        n = int(sm["n"])
        mask = np.unpackbits(arrays[f"{scope}.mask"], count=len(table)).astype(bool)
        if int(mask.sum()) != n:
            raise RecordError(f"scope {scope}: {int(mask.sum())} queries, the header says {n}")
        where[scope] = np.flatnonzero(mask)
        raw[scope] = {}
        for m in sm["metrics"]:
            how = sm["stored"][m]
            if how.startswith("same_as:"):
                continue
            a = arrays[f"{scope}.{m}"]
            a = np.unpackbits(a, count=n) if how in ("bits", "xor") else a
            if len(a) != n:
                raise RecordError(f"scope {scope}, {m}: {len(a)} values for {n} queries")
            raw[scope][m] = a.astype(np.int64)
    if "universal" in meta["scopes"]:
        sm = meta["scopes"]["universal"]
        p = where["universal"]
        for m in sm["metrics"]:
            if sm["stored"][m] not in ("xor", "diff"):
                continue
            own = np.zeros(len(table), np.int64)
            for scope in raw:
                if scope != "universal" and m in meta["scopes"][scope]["metrics"]:
                    own[where[scope]] = _resolved(raw[scope], meta["scopes"][scope], m)
            u = raw["universal"][m]
            raw["universal"][m] = (u ^ own[p]) if sm["stored"][m] == "xor" else u + own[p]
    scopes = {}
    for scope, sm in meta["scopes"].items():
        values = {}
        for m in sm["metrics"]:
            q = _resolved(raw[scope], sm, m)
            if not is_binary(m) and ((q < 0).any() or (q > scale).any()):
                raise RecordError(f"scope {scope}, {m}: stored values outside [0, 1]")
            values[m] = q.astype(np.float64) if is_binary(m) else q / scale
        ids = table[where[scope]]
        sources = ({str(n): info[n].sha256 for n in np.unique(owner[where[scope]])}
                   if names else {})
        scopes[scope] = ScopeOutcomes.build(ids, values, sources)
    return PerQuery(scopes, info, bool(meta.get("episodic", False)))


def _resolved(raw: dict[str, np.ndarray], sm: dict, m: str) -> np.ndarray:
    how = sm["stored"][m]
    return raw[how.removeprefix("same_as:")] if how.startswith("same_as:") else raw[m]


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
    float64 arrays in id order. A UserError when the scopes hold different queries (other
    data: a different query list behind the ids, or other ids) or either lacks the metric."""
    for name, s in (("first", a), ("second", b)):
        if metric not in s.values:
            raise UserError(f"the {name} run has no per-query {metric} "
                            f"(it has {', '.join(sorted(s.values)) or 'none'})")
    for ds in sorted(set(a.sources) & set(b.sources)):
        if a.sources[ds] != b.sources[ds]:
            raise UserError(f"the runs were scored on different {ds} query images (query "
                            f"lists {a.sources[ds][:12]}… and {b.sources[ds][:12]}…); compare "
                            "runs on the same data")
    if len(a.ids) == len(b.ids) and np.array_equal(a.ids, b.ids):
        return a.values[metric], b.values[metric]
    only_a = np.setdiff1d(a.ids, b.ids)
    only_b = np.setdiff1d(b.ids, a.ids)
    if len(only_a) or len(only_b):
        example = (only_a if len(only_a) else only_b)[0]
        raise UserError(f"the runs were scored on different queries ({len(only_a)} only in "
                        f"the first, {len(only_b)} only in the second, e.g. {example!r}); "
                        "compare runs on the same data")
    ia, ib = np.argsort(a.ids, kind="stable"), np.argsort(b.ids, kind="stable")
    return a.values[metric][ia], b.values[metric][ib]


def scope_problems(per_query: PerQuery, metrics: Mapping[str, Any]) -> list[str]:
    """Where the outcomes disagree with a record's ``metrics`` block, one line each: a scope or
    retrieval metric of the record they lack, a scope the record lacks, another number of
    scored queries, or a mean further from the record's value than storage rounding allows.
    Episodic outcomes are checked as the record computes them: the mean of episode means."""
    expected: dict[str, Mapping[str, Any]] = dict(metrics.get("per_dataset") or {})
    if metrics.get("universal"):
        expected["universal"] = metrics["universal"]
    if per_query.episodic:
        return _episode_problems(per_query, expected)
    out = []
    for scope, agg in expected.items():
        names = [m for m in agg if is_retrieval(m)]
        if not names:
            continue
        if scope not in per_query.scopes:
            out.append(f"scope {scope}: no per-query outcomes")
            continue
        got = per_query.scopes[scope]
        if agg.get("num_queries") is not None:
            scored = int(agg["num_queries"]) - int(agg.get("num_excluded_queries") or 0)
            if scored != len(got):
                out.append(f"scope {scope}: {len(got)} queries, the record scored {scored}")
                continue
        means = got.means()
        out += [f"scope {scope}: {p}" for p in _mean_problems(means, agg, names, len(got))]
    extra = sorted(set(per_query.scopes) - set(expected))
    if extra:
        out.append(f"scope{'s' if len(extra) > 1 else ''} {', '.join(extra)} not in the record")
    return out


def _mean_problems(means: dict, agg: Mapping, names: list[str], n: int) -> list[str]:
    """``n``: the number of queries behind each mean (0: no outcomes, a null mean is right)."""
    out = []
    for m in names:
        if m not in means:
            out.append(f"no per-query {m}")
        elif agg[m] is None:
            if n:
                out.append(f"{m} is null in the record but {n} queries have outcomes")
        elif not abs(means[m] - float(agg[m])) <= TOLERANCE:
            out.append(f"mean per-query {m} {means[m]:.6f} differs from the record's "
                       f"{float(agg[m]):.6f}")
    return out


def _episode_problems(per_query: PerQuery, expected: dict) -> list[str]:
    episodes = list(per_query.scopes.values())
    if not episodes:
        return ["no episodes"]
    out = []
    for scope, agg in expected.items():
        names = [m for m in agg if is_retrieval(m)]
        means = {}
        for m in names:
            if all(m in e.values for e in episodes):
                means[m] = float(np.mean([e.means()[m] for e in episodes]))
        n = min(len(e) for e in episodes)
        out += [f"scope {scope} (mean over {len(episodes)} episodes): {p}"
                for p in _mean_problems(means, agg, names, n)]
    return out
