"""Download, verify and unpack official dataset files (stdlib only: urllib, tarfile, zipfile).

* Downloads resume: bytes go to ``<name>.part`` next to the target and a rerun asks the server
  for the rest with an HTTP ``Range`` header (a server that ignores it is downloaded afresh).
* Every file with a known size/md5/sha256 is verified before use. A file that fails is moved
  aside to ``<name>.bad`` (never used, never silently deleted) and a one-line
  :class:`~umlbench.errors.DataError` names the file and the expected and actual values.
* Archives (.tar, .tar.gz, .tgz, .zip) are unpacked safely: tar with the ``data`` extraction
  filter, zip after checking that no member is absolute, has a ``..`` part or lands outside the
  target folder. A path-traversal archive is a DataError and nothing of it is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from umlbench import __version__
from umlbench.errors import DataError

__all__ = [
    "ProgressFn",
    "archive_kind",
    "download",
    "extract",
    "file_digests",
    "progress_task",
    "verify_file",
]

# (stage, done, total): the hook prepare_one forwards; total 0 means unknown.
ProgressFn = Callable[[str, int, int], None]

_CHUNK = 1 << 20
_RETRIES = 4  # network hiccups on multi-GB downloads are common; each retry resumes
_TIMEOUT_S = 60
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@contextmanager
def progress_task(
    description: str, total: int | None, *, callback: ProgressFn | None = None,
    unit: str = "items",
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; reports to ``callback`` if given, else draws a rich progress bar.

    ``unit`` is "bytes" (size, speed and ETA columns) or anything else (a plain counter).
    """
    if callback is not None:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            callback(description, done, total or 0)

        callback(description, 0, total or 0)
        yield advance
        return

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        columns += [MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def file_digests(path: Path, algorithms: tuple[str, ...]) -> dict[str, str]:
    """Hex digests of ``path`` for each of ``algorithms`` ("md5", "sha256"), in one pass."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK * 4):
            for h in hashes.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def _move_aside(path: Path) -> Path:
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    return bad


def verify_file(
    path: Path, *, md5: str | None = None, sha256: str | None = None, size: int | None = None,
) -> bool:
    """Check ``path`` against whatever is known; returns True when a checksum was compared.

    Raises:
        DataError: wrong size (truncated download) or checksum mismatch; the file has been moved
            to ``<name>.bad`` first so that a rerun downloads it again.
    """
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        bad = _move_aside(path)
        kind = "truncated" if actual_size < size else "too large"
        raise DataError(f"{path.name}: {kind} ({actual_size} bytes, expected {size}); "
                        f"moved aside to {bad}, rerun to download it again")
    wanted = {a: v.lower() for a, v in (("sha256", sha256), ("md5", md5)) if v}
    if not wanted:
        return False
    actual = file_digests(path, tuple(wanted))
    for algo, expected in wanted.items():
        if actual[algo] != expected:
            bad = _move_aside(path)
            raise DataError(f"{path.name}: {algo} mismatch: expected {expected}, got "
                            f"{actual[algo]}; moved aside to {bad} (not used)")
    return True


def _total_from(resp, start: int) -> int | None:
    """Full file size from a 206 Content-Range or a 200 Content-Length."""
    content_range = resp.headers.get("Content-Range", "")
    m = re.match(r"bytes\s+\d+-\d+/(\d+)", content_range)
    if m:
        return int(m.group(1))
    length = resp.headers.get("Content-Length")
    return int(length) + start if length and length.isdigit() else None


def _fetch_once(url: str, part: Path, size: int | None, advance_to: Callable[[int], None]) -> bool:
    """One HTTP request appending to ``part``. Returns True when the file is complete."""
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        part.unlink()  # larger than the real file: it is not a prefix of it
        start = 0
    if size is not None and start == size:
        return True
    headers = {"User-Agent": f"umlbench/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            return True  # nothing left to send: the part file already holds the whole file
        if exc.code == 429 or exc.code >= 500:
            raise OSError(f"HTTP {exc.code} {exc.reason}") from None  # transient: retried
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    with resp:
        if resp.headers.get_content_type() == "text/html" and not part.name.endswith(".html.part"):
            raise DataError(f"{url}: the server sent a web page instead of the file (a login, "
                            "quota or confirmation page?)")
        resumed = start > 0 and getattr(resp, "status", 200) == 206
        if not resumed:
            start = 0  # the server ignored Range (or this is a fresh start): begin again
        total = _total_from(resp, start) if resumed else _total_from(resp, 0)
        advance_to(start)
        with open(part, "ab" if resumed else "wb") as fh:
            done = start
            while block := resp.read(_CHUNK):
                fh.write(block)
                done += len(block)
                advance_to(done)
    expected = size if size is not None else total
    return expected is None or part.stat().st_size >= expected


def download(
    url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None,
    size: int | None = None, progress: ProgressFn | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and verify it.

    An existing ``dest`` that passes verification is reused without any network access.

    Returns:
        ``dest``.
    Raises:
        DataError: network failure after retries, HTTP error, or a failed verification.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            verify_file(dest, md5=md5, sha256=sha256, size=size)
            return dest
        except DataError:
            pass  # moved aside to .bad: download it again
    part = dest.with_name(dest.name + ".part")
    last_error = ""
    with progress_task(f"download {dest.name}", size, callback=progress, unit="bytes") as adv:
        reported = 0

        def advance_to(done: int) -> None:
            nonlocal reported
            adv(done - reported)
            reported = done

        for attempt in range(_RETRIES):
            try:
                if _fetch_once(url, part, size, advance_to):
                    break
                last_error = "connection closed early"
            except (HTTPException, OSError) as exc:  # URLError is an OSError
                last_error = str(getattr(exc, "reason", exc))
            time.sleep(min(2**attempt, 10) * 0.5)
        else:
            raise DataError(f"{url}: download failed after {_RETRIES} attempts ({last_error}); "
                            f"rerun to resume from {part}")
    os.replace(part, dest)
    verify_file(dest, md5=md5, sha256=sha256, size=size)
    return dest


def archive_kind(path: Path) -> str | None:
    """"tar", "zip" or None, from the name first and the content as a fallback."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, EOFError):
        return None


def _check_zip_member(name: str, root: Path, archive: Path) -> None:
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in parts:
        raise DataError(f"{archive}: unsafe member path {name!r} in archive; refusing to extract")
    if not (root / posix).resolve().is_relative_to(root):
        raise DataError(f"{archive}: member {name!r} would be written outside {root}; "
                        "refusing to extract")


def extract(archive: Path, target: Path) -> None:
    """Unpack a tar/zip archive into ``target`` (created if needed), refusing unsafe members.

    Raises:
        DataError: not an archive, corrupt/truncated, password-protected, or a member that would
            escape ``target`` (absolute path, ``..``, link outside).
    """
    kind = archive_kind(archive)
    if kind is None:
        raise DataError(f"{archive}: not a .tar/.tar.gz/.tgz/.zip archive")
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        if kind == "tar":
            with tarfile.open(archive, "r:*") as tf:
                tf.extractall(root, filter="data")
        else:
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for info in members:  # check every member before writing any
                    _check_zip_member(info.filename, root, archive)
                zf.extractall(root, members)
    except tarfile.FilterError as exc:
        raise DataError(f"{archive}: unsafe member in archive ({exc}); refusing to extract") \
            from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: corrupt or truncated archive ({exc}); delete it and "
                        "download it again") from None
    except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required"
        if "encrypt" in str(exc) or "password" in str(exc):
            raise DataError(f"{archive}: the archive is password-protected; extract it yourself "
                            "with the password and pass the extracted folder with --source") \
                from None
        raise
    except OSError as exc:
        raise DataError(f"{archive}: extraction failed ({exc})") from None
