"""`umlbench info` and `umlbench list datasets`: what is prepared under a data root (counts, disk
use, source), what each dataset holds, and how much disk run checkpoints take."""

from __future__ import annotations

import time
from pathlib import Path

from umlbench import const as C
from umlbench.data.registry import DATASETS, SUITES

__all__ = ["checkpoint_usage", "dataset_catalogue", "dataset_status", "disk_usage", "human_size"]


def disk_usage(path: Path) -> int:
    """Bytes of all files under ``path`` (0 if it does not exist)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human_size(n: float) -> str:
    """Bytes in binary units: ``123 B``, ``4.5 MB`` (1 MB = 1024**2 bytes)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_human = human_size  # the old private name


def _pair(exp: dict, index: int) -> str:
    """``train/test`` of one count (0: images, 1: classes) from a spec's ``expected``; "" when
    the count is not fixed (generated datasets: the seed decides the image counts)."""

    def one(split: str) -> int | None:
        if split == C.TEST and C.TEST not in exp and C.QUERY in exp:
            if index == 1:
                return exp[C.QUERY][1]
            q, g = exp[C.QUERY][0], exp[C.GALLERY][0]
            return q + g if q >= 0 and g >= 0 else None
        v = exp.get(split, (-1, -1))[index]
        return v if v >= 0 else None

    train, test = one(C.TRAIN), one(C.TEST)
    return f"{train:,}/{test:,}" if train is not None and test is not None else ""


def dataset_catalogue() -> tuple[list[str], list[list[str]]]:
    """(header, rows) for `umlbench list datasets`: each dataset's own split sizes from its spec
    (train/test; In-shop's test = query + gallery)."""
    header = ["dataset", "suite", "classes", "images", "description"]
    rows = []
    for suite, members in SUITES.items():
        for name in members:
            spec = DATASETS.get(name)
            rows.append([name, suite, _pair(spec.expected, 1), _pair(spec.expected, 0),
                         spec.title])
    return header, rows


def dataset_status(root: Path, suite: str | None = None) -> list[tuple[str, ...]]:
    """One row per known dataset: name, ready, train img/cls, eval img/cls, disk, source.

    "source" starts with the image source of a prepared dataset (see
    ``Prepared.image_source``): ``packed: <origin>``, ``resized 256: <origin>``,
    ``files: <origin>``, or ``generated 32`` for the mini suite."""
    from umlbench.data.prepare import image_source_of, read_ready

    rows = []
    names = [n for s, members in SUITES.items() if suite in (None, s) for n in members]
    for name in names:
        spec = DATASETS.get(name)
        info = read_ready(root, name)
        if info is None:
            partial = (root / name).exists() or any(root.glob(f".tmp-{name}-*"))
            rows.append((name, "partial" if partial else "no", "", "", "",
                         "needs a manual download" if spec.manual else ""))
            continue
        counts = info.get("counts", {})

        def fmt(split):
            c = counts.get(split)
            return f"{c['images']:,}/{c['classes']:,}" if c else ""

        evals = fmt(C.TEST) or f"{fmt(C.QUERY)} | {fmt(C.GALLERY)}"
        disk = disk_usage(root / name)
        raw = info.get("raw_dir")
        if raw:
            disk += disk_usage(Path(raw))
        kind = image_source_of(info)
        size = info.get("image_size") if kind in (C.RESIZED, C.GENERATED) else None
        origin = str(info.get("source", ""))
        images = f"{kind}{f' {size}' if size else ''}"
        source = images if kind == C.GENERATED else f"{images}: {origin}"
        rows.append((name, "yes", fmt(C.TRAIN), evals, human_size(disk), source))
    return rows


def checkpoint_usage(work_root: Path) -> list[tuple[str, int, str]]:
    """Run checkpoint folders under ``work_root``: (name, bytes, last written), newest first.

    A completed run deletes its folder (unless ``--keep-checkpoints``), so what is listed here is
    interrupted or failed runs that ``--resume`` can continue, and kept ones."""
    if not work_root.is_dir():
        return []
    rows = []
    for folder in work_root.iterdir():
        if not folder.is_dir():
            continue
        files = [p for p in folder.rglob("*") if p.is_file()]
        newest = max((p.stat().st_mtime for p in files), default=folder.stat().st_mtime)
        rows.append((folder.name, sum(p.stat().st_size for p in files), newest))
    rows.sort(key=lambda r: -r[2])
    return [(name, size, time.strftime("%Y-%m-%d %H:%M", time.localtime(t)))
            for name, size, t in rows]
