"""Prepare one real dataset: obtain the official files, parse them, build the image cache.

:func:`prepare_real` is called by :func:`umlbench.data.prepare.prepare_one`, which then checks
the split counts against ``spec.expected`` and writes READY. The steps:

1. **Obtain.** Without ``--source`` every official :class:`~umlbench.data.registry.Resource` is
   downloaded to ``<root>/_downloads/`` (resumable, checksum-verified) and unpacked or copied into
   ``<root>/_raw/<name>/``. ``--source`` may be a URL or an archive (unpacked the same way; a file
   named like an official resource replaces only that resource), a folder holding the official
   downloads, or an already extracted folder, which is then used in place (nothing is copied).
   Each unpacked file leaves a marker in ``_raw/<name>/.umlbench/`` so a rerun skips it.
2. **Parse.** ``spec.parse(raw_dir)`` reads the official annotation files into rows.
3. **Store.** By default every original image file is appended unchanged to one indexed pack
   (full resolution, as the official pipeline crops from); ``resized`` decodes each image once
   into a uint8 cache with shorter side ``image_size`` instead; ``files`` reads the originals
   in place. See :mod:`umlbench.data.build`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from umlbench import const as C
from umlbench.data.download import ProgressFn, download, extract, progress_task, verify_file
from umlbench.errors import DataError, UserError

if TYPE_CHECKING:
    import pandas as pd

    from umlbench.data.registry import DatasetSpec, Resource

__all__ = [
    "DOWNLOADS_DIR",
    "RAW_DIR",
    "half_split",
    "locate",
    "obtain",
    "prepare_real",
    "read_columns",
    "rel_path",
]

DOWNLOADS_DIR = "_downloads"
RAW_DIR = "_raw"
_MARKERS = ".umlbench"  # inside a raw folder: one JSON marker per unpacked/copied file
_ROW_COLUMNS = (C.IMAGE_ID, C.PATH, C.LABEL, C.CLASS_NAME, C.SPLIT)


# ---- helpers for the parsers in data/sources ----------------------------------------------


def locate(raw_dir: Path, *candidates: str, dataset: str = "") -> Path:
    """Find an official file or folder in ``raw_dir`` or one folder below it.

    Archives unpack into a top folder (``CUB_200_2011/images.txt``) while users may pass that
    folder itself (``images.txt``); both work. Candidates are tried in order, first directly in
    ``raw_dir``, then one level down (sorted, so the result is deterministic).

    Raises:
        DataError: naming the first candidate when none exists.
    """
    for rel in candidates:
        if (raw_dir / rel).exists():
            return raw_dir / rel
    for rel in candidates:
        hits = sorted(p for p in raw_dir.glob(f"*/{rel}") if _MARKERS not in p.parts)
        if hits:
            return hits[0]
    what = f" ({dataset} release)" if dataset else ""
    raise DataError(f"{raw_dir}: {candidates[0]} not found{what}; is this the official layout?")


def rel_path(raw_dir: Path, path: Path) -> str:
    """``path`` relative to ``raw_dir`` in POSIX form (what the manifest stores)."""
    return path.relative_to(raw_dir).as_posix()


def read_columns(path: Path, ncols: int, *, skip: int = 0) -> list[list[str]]:
    """Read a whitespace-separated annotation file into rows of exactly ``ncols`` fields.

    The last field keeps inner spaces (class names such as ``Barn Owl`` or ``Falcon 2000``);
    runs of spaces between fields (In-shop pads its columns) count as one separator. The first
    ``skip`` lines (headers) and blank lines are ignored.

    Raises:
        DataError: the file is missing, or a line has too few fields (naming file and line).
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    rows = []
    for lineno, line in enumerate(text.splitlines()[skip:], skip + 1):
        if not line.strip():
            continue
        parts = line.split(None, ncols - 1)
        if len(parts) != ncols:
            raise DataError(f"{path}:{lineno}: expected {ncols} fields, got {line.strip()!r}")
        parts[-1] = parts[-1].strip()
        rows.append(parts)
    return rows


def half_split(labels: np.ndarray) -> np.ndarray:
    """The official class-half rule: labels (N,) int in 0..C-1 -> splits (N,) str.

    The first ceil(C/2) classes are "train", the rest "test" (CUB 100/100, Cars 98/98,
    NABirds 278/277, Dogs 60/60, Flowers 51/51, Aircraft 50/50), as in PUMA's dataset.py.
    """
    n_train = (int(labels.max()) + 2) // 2 if len(labels) else 0
    return np.where(labels < n_train, C.TRAIN, C.TEST)


# ---- obtaining the files ------------------------------------------------------------------


def _is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https", "ftp", "file")


def _url_filename(url: str) -> str:
    """The URL's file name; names without a suffix (Drive's ``/download``) get a URL hash so
    two different URLs never share a file in ``_downloads``."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if "." not in name:
        name = f"source-{hashlib.sha1(url.encode()).hexdigest()[:12]}"
    return name


def _marker_ok(marker: Path, given: Path | None) -> bool:
    """True when ``marker`` records a finished unpack of ``given`` (or of the official file)."""
    if not marker.exists():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if given is None:  # a rerun without --source: whatever finished before still counts
        return True
    st = given.stat()
    return info.get("file") == str(given.resolve()) and info.get("size") == st.st_size and \
        info.get("mtime_ns") == st.st_mtime_ns


def _write_marker(marker: Path, file: Path, origin: str) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    st = file.stat()
    tmp = marker.with_name(marker.name + ".part")
    tmp.write_text(json.dumps({"origin": origin, "file": str(file.resolve()),
                               "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    os.replace(tmp, marker)


def _place(file: Path, dest: Path) -> None:
    """Put a non-archive file (an annotation .mat/.txt) into the raw folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    try:
        os.link(file, dest)  # same filesystem: no copy
    except OSError:
        shutil.copy2(file, dest)


def _extract(file: Path, raw: Path, progress: ProgressFn | None) -> None:
    with progress_task(f"unpack {file.name}", 1, callback=progress) as advance:
        extract(file, raw)
        advance(1)


def _fetch(spec: DatasetSpec, res: Resource, downloads: Path,
           progress: ProgressFn | None) -> Path:
    """The verified official file: downloaded, or dropped into ``_downloads`` by the user."""
    dest = downloads / res.filename
    if res.url is None:
        if dest.exists():  # the user followed the manual steps and saved it here
            verify_file(dest, md5=res.md5, sha256=res.sha256, size=res.size)
            return dest
        raise UserError(f"{spec.name}: {res.filename} cannot be downloaded automatically. "
                        f"{spec.manual or ''}")
    try:
        return download(res.url, dest, md5=res.md5, sha256=res.sha256, size=res.size,
                        progress=progress)
    except DataError as exc:
        raise DataError(f"{exc} (or fetch {res.filename} yourself and pass "
                        f"`--source FILE`)") from None


def _unpack_resources(spec: DatasetSpec, raw: Path, downloads: Path, given: dict[str, Path],
                      progress: ProgressFn | None) -> None:
    """Unpack (or copy) each resource into ``raw``, skipping those already done."""
    for res in spec.resources:
        marker = raw / _MARKERS / f"{res.filename}.json"
        file = given.get(res.filename)
        if _marker_ok(marker, file):
            continue
        origin = "official" if file is None else "source"
        if file is None:
            file = _fetch(spec, res, downloads, progress)
        marker.unlink(missing_ok=True)  # from here on the folder is not known to be complete
        if res.extract:
            _extract(file, raw, progress)
        else:
            _place(file, raw / res.filename)
        _write_marker(marker, file, origin)


def _find_resources(folder: Path, resources: Iterable[Resource]) -> dict[str, Path]:
    """Official files inside a user's folder (up to two levels down, e.g. Drive's ``Img/``)."""
    found = {}
    for res in resources:
        for pattern in (res.filename, f"*/{res.filename}", f"*/*/{res.filename}"):
            hits = sorted(p for p in folder.glob(pattern) if p.is_file())
            if hits:
                found[res.filename] = hits[0]
                break
    return found


def obtain(spec: DatasetSpec, root: Path, source: str | None,
           progress: ProgressFn | None = None) -> tuple[Path, str, pd.DataFrame | None]:
    """Make the official files available on disk.

    Returns:
        (raw_dir, a description of what was used, rows when parsing was needed to decide).
    Raises:
        UserError: a resource needs a manual step and no ``source`` was given.
        DataError: download, checksum or archive problems.
    """
    raw = root / RAW_DIR / spec.name
    downloads = root / DOWNLOADS_DIR
    if source is None:
        _unpack_resources(spec, raw, downloads, {}, progress)
        return raw.resolve(), " ".join(r.url or r.filename for r in spec.resources), None
    origin = source
    if _is_url(source):
        path = download(source, downloads / _url_filename(source), progress=progress)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"--source {source}: no such file or folder")
        origin = str(path.resolve())
    if path.is_dir():
        folder = path.resolve()
        try:  # an extracted copy of the dataset: use it where it is
            return folder, origin, _parse(spec, folder)
        except DataError as exc:
            parse_error = exc
        found = _find_resources(folder, spec.resources)
        if not any(r.extract and r.filename in found for r in spec.resources):
            raise parse_error
        _unpack_resources(spec, raw, downloads, found, progress)
        return raw.resolve(), origin, None
    if path.name in {r.filename for r in spec.resources}:
        _unpack_resources(spec, raw, downloads, {path.name: path}, progress)
    else:  # a whole-dataset archive under another name (a mirror's repack)
        marker = raw / _MARKERS / f"source-{path.name}.json"
        if not _marker_ok(marker, path):
            _extract(path, raw, progress)
            _write_marker(marker, path, "source")
    return raw.resolve(), origin, None


# ---- parsing ------------------------------------------------------------------------------


def _parse(spec: DatasetSpec, raw_dir: Path) -> pd.DataFrame:
    try:
        rows = spec.parse(raw_dir)
    except (ValueError, KeyError, IndexError, TypeError) as exc:  # malformed official files
        raise DataError(f"{raw_dir}: cannot parse the {spec.name} annotations "
                        f"({type(exc).__name__}: {exc})") from None
    missing = [c for c in _ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise DataError(f"{spec.name}: parser returned no {missing} columns")
    if rows[C.IMAGE_ID].duplicated().any():
        dup = rows.loc[rows[C.IMAGE_ID].duplicated(), C.IMAGE_ID].iloc[0]
        raise DataError(f"{raw_dir}: image id {dup!r} is listed twice in the annotations")
    if not len(rows):
        raise DataError(f"{raw_dir}: the annotation files list no images")
    return rows.reset_index(drop=True)


# ---- the image store ----------------------------------------------------------------------


def _check_files(raw_dir: Path, paths: Iterable[str]) -> None:
    missing = [p for p in paths if not (raw_dir / p).is_file()]
    if missing:
        raise DataError(f"{raw_dir / missing[0]}: image file not found "
                        f"({len(missing)} listed images are missing)")


def prepare_real(
    spec: DatasetSpec,
    root: Path,
    tmp: Path,
    *,
    source: str | None,
    image_source: str,
    image_size: int,
    workers: int,
    progress: ProgressFn | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Obtain and parse one real dataset and build its image store into ``tmp``.

    Args:
        image_source: ``packed`` (the original files in one indexed file, full resolution),
            ``resized`` (uint8 cache, shorter side ``image_size``) or ``files`` (read the
            original files where they are).
    Returns:
        (manifest with the fixed schema, info for READY: source, raw_dir, image_source,
        image_size (None at full resolution), cache, and for a pack the number of images
        decoded by PIL instead of libjpeg-turbo).
    """
    from umlbench.data.build import build_cache, build_pack
    from umlbench.data.manifest import make_manifest

    raw_dir, origin, rows = obtain(spec, root, source, progress)
    if rows is None:
        rows = _parse(spec, raw_dir)
    rows = rows.assign(**{C.DATASET: spec.name})
    paths = [raw_dir / p for p in rows[C.PATH]]
    info = {"source": origin, "raw_dir": str(raw_dir), "image_source": image_source,
            "image_size": None, "cache": image_source == C.RESIZED}
    if image_source == C.PACKED:
        offsets, nbytes, heights, widths, turbo = build_pack(
            paths, tmp / C.PACK_FILE, workers, progress, label=f"pack {spec.name}")
        rows = rows.assign(**{C.OFFSET: offsets, C.NBYTES: nbytes, C.HEIGHT: heights,
                              C.WIDTH: widths})
        info["pil_decoded"] = int((~turbo).sum())
        info["pil_decoded_examples"] = [str(p) for p in rows.loc[~turbo, C.PATH].iloc[:5]]
    elif image_source == C.RESIZED:
        offsets, heights, widths = build_cache(paths, tmp / C.CACHE_FILE, image_size, workers,
                                               progress, label=f"cache {spec.name}")
        rows = rows.assign(**{C.OFFSET: offsets, C.HEIGHT: heights, C.WIDTH: widths})
        info["image_size"] = image_size
    elif image_source == C.FILES:
        _check_files(raw_dir, rows[C.PATH])
        rows = rows.assign(**{C.OFFSET: -1, C.HEIGHT: 0, C.WIDTH: 0})
    else:
        raise UserError(f"unknown image source {image_source!r}; known: packed, resized, files")
    return make_manifest(rows), info
