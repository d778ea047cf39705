"""What a run record is an instance of: its config, its data and its code identity.

Every record (schema 2) holds an ``identity`` block:

* ``config``: ``sha256`` of the canonical JSON (sorted keys, no whitespace) of the resolved
  config without the :data:`RESULT_NEUTRAL` keys, which never change a result (the seed is
  recorded, and aggregated over, on its own). Paths of files the run reads (:data:`FILE_KEYS`)
  are replaced by the SHA-256 of the file's contents, kept in ``files``.
* ``data``: per dataset used, the manifest file's SHA-256 (as its READY marker lists it), a
  hash of the manifest's rows (the same whatever Parquet library wrote the file), the image
  source (kind, image size and the SHA-256 of every image file READY lists) and the SHA-256 of
  the split file the protocol read (ooDML levels, few-shot episodes, imported few-shot
  training subsets), or null when it read none.
* ``code``: umlbench version, git commit, dirty flag and the hash of the diff when dirty
  (see :func:`umlbench.env.code_identity`).

Two records are the same experiment when their config and data keys (:func:`config_key`,
:func:`data_key`) are equal; the leaderboard averages seeds only within such a group.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["RESULT_NEUTRAL", "FILE_KEYS", "canonical_json", "sha256_text",
           "hashed_config", "config_identity", "config_key", "file_hashes", "rows_sha256",
           "dataset_identity", "data_identity", "data_key", "data_label", "code_label",
           "flatten", "data_differences", "get_dotted"]

# Config keys (dotted) that do not change what a run computes. The seed is the one varied
# on purpose (recorded in ``seed``); the others are where and how fast it runs.
RESULT_NEUTRAL = (
    "seed",
    "device",  # where it ran (recorded under ``hardware``)
    "data_root",  # a path; what is there is in the data identity
    "data.num_workers",  # augmentation is seeded per sample, not per worker
    "data.pin_memory",
    "train.log_every",  # logging only
)
# Config keys that name a file the run reads: hashed by content, not by path.
FILE_KEYS = ("backbone.weights",)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _pop(tree: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.get(p)
        if not isinstance(node, dict):
            return
    node.pop(last, None)


def get_dotted(tree: Mapping, dotted: str) -> Any:
    node: Any = tree
    for p in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(p)
    return node


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def hashed_config(config: Mapping, excluded: Iterable[str] = RESULT_NEUTRAL,
                  files: Mapping[str, str | None] | None = None) -> dict:
    """The part of ``config`` that identifies a run: ``excluded`` keys removed, file paths
    replaced by ``"sha256:<hex>"`` of their contents (``"sha256:unknown"`` when not known)."""
    out = _copy_tree(config)
    for key in FILE_KEYS:
        if get_dotted(out, key) is not None:
            digest = (files or {}).get(key)
            _set(out, key, f"sha256:{digest or 'unknown'}")
    for key in excluded:
        _pop(out, key)
    return out


def _copy_tree(node):
    # A copy of the nested dicts only (values are JSON scalars or lists, never changed here).
    return {k: _copy_tree(v) for k, v in node.items()} if isinstance(node, Mapping) else node


def file_hashes(config: Mapping) -> dict[str, str | None]:
    """SHA-256 of each file a :data:`FILE_KEYS` entry of ``config`` names (None if unreadable)."""
    from umlbench.data.prepare import sha256_file  # lazy: records load without data code

    out: dict[str, str | None] = {}
    for key in FILE_KEYS:
        path = get_dotted(config, key)
        if path:
            try:
                out[key] = sha256_file(Path(path).expanduser())
            except OSError:
                out[key] = None
    return out


def config_identity(config: Mapping, files: Mapping[str, str | None] | None = None) -> dict:
    """The ``identity.config`` block of a record whose resolved config is ``config``."""
    files = dict(file_hashes(config) if files is None else files)
    digest = sha256_text(canonical_json(hashed_config(config, RESULT_NEUTRAL, files)))
    return {"sha256": digest, "excluded": list(RESULT_NEUTRAL), "files": files}


def config_key(config: Mapping, identity: Mapping, ignore: Iterable[str] = ()) -> str:
    """Hash of the record's identifying config with ``ignore`` keys also left out (e.g.
    ``protocol.level`` when levels are the columns of a table). Without ``ignore`` this is
    ``identity["sha256"]``."""
    ignore = tuple(ignore)
    if not ignore:
        return identity["sha256"]
    excluded = list(identity.get("excluded", RESULT_NEUTRAL)) + list(ignore)
    return sha256_text(canonical_json(hashed_config(config, excluded, identity.get("files"))))


def rows_sha256(manifest) -> str:
    """Hash of a manifest's rows: columns in name order, written as CSV. Unlike the Parquet
    file's hash it does not depend on the library version that wrote the file."""
    cols = sorted(manifest.columns)
    return sha256_text(manifest[cols].to_csv(index=False, lineterminator="\n"))


# Image sources whose pixels are the original files at full resolution (no image size).
FULL_RESOLUTION = ("files", "packed")


def dataset_identity(ready: Mapping, rows_hash: str | None, split_file: Path | None = None,
                     *, kind: str | None = None, image_size: int | None = None) -> dict:
    """Identity of one prepared dataset from its READY marker (``data/prepare.py``).

    ``kind``/``image_size``: the prepared dataset's own account of its image source (its
    ``Prepared.image_source``/``image_size``) when it gives one; otherwise they are read from
    READY (``data.prepare.image_source_of``; full-resolution sources have no size)."""
    from umlbench.data.prepare import image_source_of, sha256_file  # lazy, as above

    files = dict(ready.get("sha256") or {})
    manifest = files.pop("manifest.parquet", None)
    if kind is None:
        kind = image_source_of(dict(ready))
        image_size = None if kind in FULL_RESOLUTION else ready.get("image_size")
    return {
        "manifest_sha256": manifest,
        "rows_sha256": rows_hash,
        "images": {"kind": kind, "image_size": image_size, "sha256": files},
        "split_sha256": sha256_file(split_file) if split_file else None,
    }


def data_identity(sources: Iterable[tuple[str, Mapping, str | None, str | None, int | None]],
                  split_files: Mapping[str, Path] | None = None) -> dict:
    """``identity.data``: {dataset: :func:`dataset_identity`} for (name, READY, rows hash,
    image source kind or None, image size) of each dataset used."""
    split_files = split_files or {}
    return {name: dataset_identity(ready, rows, split_files.get(name), kind=kind,
                                   image_size=size)
            for name, ready, rows, kind, size in sources}


def _comparable(entry: Mapping) -> dict:
    # The Parquet file's own hash changes with the writing library's version; rows_sha256
    # carries the content, so the file hash is left out of comparisons.
    return {k: v for k, v in entry.items() if k != "manifest_sha256"}


def data_key(data: Mapping | None) -> str:
    """Hash of ``identity.data`` as far as results depend on it; ``"unknown"`` when absent."""
    if data is None:
        return "unknown"
    return sha256_text(canonical_json({k: _comparable(v) for k, v in data.items()}))


def data_differences(recorded: Mapping, current: Mapping) -> list[tuple[str, str, Any, Any]]:
    """(dataset, field, recorded value, current value) for each comparable field that differs
    (fields dotted, e.g. ``images.sha256.images.u8``); a dataset that ``current`` lacks gives
    field ``"dataset"`` with values ``"used"`` / ``"not used"``."""
    out = []
    for name, rec in recorded.items():
        cur = current.get(name)
        if cur is None:
            out.append((name, "dataset", "used", "not used"))
            continue
        rec_c, cur_c = flatten(_comparable(rec)), flatten(_comparable(cur))
        # The manifest's rows first: when they differ, everything else usually does too.
        for key in sorted(set(rec_c) | set(cur_c), key=lambda k: (k != "rows_sha256", k)):
            if canonical_json(rec_c.get(key)) != canonical_json(cur_c.get(key)):
                out.append((name, key, rec_c.get(key), cur_c.get(key)))
    return out


def data_label(data: Mapping | None) -> str:
    """Short text for the image source of ``data`` ("resized 256", "files", "data unknown")."""
    if data is None:
        return "data unknown"
    kinds = set()
    for entry in data.values():
        images = entry.get("images") or {}
        size = images.get("image_size")
        kinds.add(f"{images.get('kind', '?')} {size}" if size else str(images.get("kind", "?")))
    return ", ".join(sorted(kinds)) or "no data"


def code_label(code: Mapping | None) -> str:
    """``0.1.0 1a2b3c4d5e`` (``-dirty <diff hash>`` when the tree was dirty), or ``unknown``."""
    if not code:
        return "unknown"
    parts = [code.get("umlbench_version") or "?"]
    commit = code.get("git_commit")
    if commit:
        text = commit[:10]
        if code.get("dirty"):
            diff = code.get("diff_sha256")
            text += f"-dirty {diff[:8]}" if diff else "-dirty"
        parts.append(text)
    return " ".join(parts)


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
