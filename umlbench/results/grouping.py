"""Which runs a table row averages: identity groups, one record per (group, seed), row labels.

A row is one display name with one config identity and one data identity (the default
``group_by = ("config", "data")``): seeds are averaged only within it. When several records
share a group, a seed and a protocol outcome (dataset, level, shots), only the newest is
counted and the others are reported as set aside. Rows that share a display name but differ in
identity are shown apart, each labelled with what differs ("PUMA [resized 256]",
"PUMA [train.epochs=8]"). ``group_by`` is the escape hatch: ``()`` (``--group-by name``) pools
every run of a display name, ``("config", "data", "code")`` also separates code versions.

Functions take and return the long results frame of :mod:`umlbench.results.store`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence

import pandas as pd

from umlbench.errors import UserError
from umlbench.results.identity import canonical_json, flatten, sha256_text

__all__ = ["GROUP_FIELDS", "DEFAULT_GROUP_BY", "parse_group_by", "deduplicate", "row_labels",
           "footnotes", "mixed_data"]

GROUP_FIELDS = {"config": "config_id", "data": "data_id", "code": "code_version"}
DEFAULT_GROUP_BY = ("config", "data")
_OUTCOME = ["protocol", "dataset", "level", "shots"]  # one run may score several outcomes
_MAX_KEYS = 3  # config differences named in a label


def parse_group_by(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"config,data"`` -> ("config", "data"); ``"name"`` (display name only) -> ()."""
    if spec is None:
        return DEFAULT_GROUP_BY
    tokens = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec)]
    tokens = [t for t in tokens if t and t != "name"]
    unknown = sorted(set(tokens) - set(GROUP_FIELDS))
    if unknown:
        raise UserError(f"--group-by {unknown[0]!r} is not one of: name, "
                        + ", ".join(GROUP_FIELDS) + " (comma-separated)")
    return tuple(f for f in GROUP_FIELDS if f in tokens)


@functools.lru_cache(maxsize=4096)
def _config_without(config_json: str, ignore: tuple[str, ...]) -> str:
    tree = json.loads(config_json)
    for key in ignore:
        *parents, last = key.split(".")
        node = tree
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return canonical_json(tree)


def _runs(df: pd.DataFrame) -> pd.DataFrame:
    """One line per measured, completed run."""
    runs = df[(df["source"] == "measured") & (df["status"] == "completed")]
    return runs.drop_duplicates("run_id").reset_index(drop=True)


def _group_key(runs: pd.DataFrame, group_by: Sequence[str],
               ignore: tuple[str, ...] = ()) -> pd.Series:
    parts = [runs["display_name"].map(str)]
    for name in group_by:
        if name == "config" and ignore:
            parts.append(runs["config"].map(
                lambda c: sha256_text(_config_without(c, ignore))))
        else:
            parts.append(runs[GROUP_FIELDS[name]].map(str))
    key = parts[0]
    for p in parts[1:]:
        key = key + "\x1f" + p
    return key


def deduplicate(df: pd.DataFrame, group_by: Sequence[str] = DEFAULT_GROUP_BY
                ) -> tuple[pd.DataFrame, list[str]]:
    """Keep the newest completed record of each (group, seed, protocol outcome); returns the
    frame without the others and their run ids. Reported rows and unfinished runs are kept."""
    runs = _runs(df)
    if runs.empty:
        return df, []
    outcome = runs[_OUTCOME].map(lambda v: "" if pd.isna(v) else str(v)).agg("|".join, axis=1)
    created = pd.to_datetime(runs["created"], utc=True, format="ISO8601", errors="coerce")
    order = pd.DataFrame({"group": _group_key(runs, group_by), "seed": runs["seed"].map(str),
                          "outcome": outcome, "created": created, "run_id": runs["run_id"]})
    order = order.sort_values(["created", "run_id"], na_position="first", kind="stable")
    keep = order.drop_duplicates(["group", "seed", "outcome"], keep="last")["run_id"]
    dropped = sorted(set(runs["run_id"]) - set(keep))
    return (df[~df["run_id"].isin(dropped)] if dropped else df), dropped


def _value(v) -> str:
    return "unset" if v is None else (v if isinstance(v, str) else json.dumps(v))


def _differences(groups: pd.DataFrame, group_by: Sequence[str],
                 ignore: tuple[str, ...]) -> dict[str, str]:
    """For each group (rows of ``groups``: one per group) what sets it apart from the others."""
    parts: dict[str, list[str]] = {g: [] for g in groups["group"]}
    if "config" in group_by and groups["config_key"].nunique() > 1:
        flat = {g: flatten(json.loads(_config_without(c, ignore)))
                for g, c in zip(groups["group"], groups["config"])}
        keys = sorted({k for f in flat.values() for k in f
                       if len({_value(x.get(k)) for x in flat.values()}) > 1})
        for g, f in flat.items():
            named = [f"{k}={_value(f.get(k))}" for k in keys[:_MAX_KEYS]]
            if len(keys) > _MAX_KEYS:
                named.append(f"+{len(keys) - _MAX_KEYS} more")
            parts[g].append(", ".join(named))
    if "data" in group_by and groups["data_id"].nunique() > 1:
        by_label = groups["data_label"].nunique() == groups["data_id"].nunique()
        for g, d_id, d_label in zip(groups["group"], groups["data_id"], groups["data_label"]):
            parts[g].append(d_label if by_label or d_id == "unknown" else f"data {d_id[:8]}")
    if "code" in group_by and groups["code_version"].nunique() > 1:
        for g, code in zip(groups["group"], groups["code_version"]):
            parts[g].append(f"code {code}")
    return {g: "; ".join(p) for g, p in parts.items()}


def row_labels(df: pd.DataFrame, group_by: Sequence[str] = DEFAULT_GROUP_BY,
               partition: Iterable[str] = (), ignore: Iterable[str] = ()) -> pd.Series:
    """Row label for every line of ``df`` (measured lines; others get their display name).

    Groups with the same display name (within each ``partition`` value, e.g. the dataset of an
    ooDML row) get what differs between them in brackets. ``ignore`` names config keys that
    are columns of the table (``protocol.level``), so they neither split nor name rows."""
    ignore, partition = tuple(ignore), list(partition)
    labels = df["display_name"].map(str)
    runs = _runs(df)
    if runs.empty:
        return labels
    runs = runs.assign(group=_group_key(runs, group_by, ignore),
                       config_key=_group_key(runs, ("config",), ignore))
    by_run: dict[str, str] = {}
    for _, block in runs.groupby(["display_name"] + partition, dropna=False, sort=False):
        groups = block.drop_duplicates("group")
        name = str(block["display_name"].iloc[0])
        if len(groups) == 1:
            text = {groups["group"].iloc[0]: ""}
        else:
            text = _differences(groups, group_by, ignore)
            if len(set(text.values())) < len(text):  # nothing printable tells them apart
                text = {g: (t + "; " if t else "") + f"group {sha256_text(g)[:6]}"
                        for g, t in text.items()}
        for run_id, g in zip(block["run_id"], block["group"]):
            by_run[run_id] = f"{name} [{text[g]}]" if text[g] else name
    mapped = df["run_id"].map(by_run)
    return mapped.where(mapped.notna(), labels)


def footnotes(df: pd.DataFrame, rows: pd.Series, dropped: list[str],
          group_by: Sequence[str]) -> list[str]:
    """Footnotes for a table built from ``df`` (after :func:`deduplicate`) whose lines got
    ``rows`` as row labels: duplicates set aside, several code versions, unknown identity,
    deliberate pooling."""
    out = []
    if dropped:
        shown = ", ".join(dropped[:3]) + (", …" if len(dropped) > 3 else "")
        out.append(f"{len(dropped)} duplicate record{'s' if len(dropped) > 1 else ''} set "
                   f"aside (same method, {' and '.join(group_by) or 'name'} and seed as a "
                   f"newer record, which is counted): {shown}")
    runs = _runs(df.assign(row=rows))
    if runs.empty:
        return out
    versions = sorted(runs["code_version"].dropna().unique())
    if len(versions) > 1:
        mixed = sorted(r for r, v in runs.groupby("row")["code_version"].nunique().items()
                       if v > 1)
        text = (f"Rows built from {len(versions)} code versions ("
                + ", ".join(versions[:4]) + (", …" if len(versions) > 4 else "") + ")")
        if mixed:
            text += "; rows mixing versions: " + ", ".join(mixed)
        out.append(text + "; `--group-by config,data,code` separates them")
    unknown = sorted(runs.loc[runs["data_id"] == "unknown", "row"].unique())
    if unknown:
        which = ("All rows come" if len(unknown) == runs["row"].nunique()
                 else ", ".join(unknown) + " come")
        out.append(f"{which} from records without data identity (schema 1, written before it "
                   "was recorded): their data cannot be checked")
    pooled = [f for f in DEFAULT_GROUP_BY if f not in group_by]
    if pooled:
        out.append(f"Pooled with --group-by {','.join(group_by) or 'name'}: a row may average "
                   f"runs of different {' and '.join(pooled)}")
    return out


def mixed_data(df: pd.DataFrame) -> list[str]:
    """Display names whose runs in ``df`` have more than one data identity for the same point
    of a figure (protocol, dataset, level, shots): a figure that draws one line or bar per
    display name pools them. Different ooDML levels or datasets are different data by design."""
    runs = _runs(df)
    point = [c for c in ("protocol", "dataset", "level", "shots") if c in runs.columns]
    counts = runs.groupby(["display_name", *point], dropna=False)["data_id"].nunique()
    mixed = counts[counts > 1].reset_index()["display_name"]
    return sorted({str(n) for n in mixed})
