"""`umlbench info`: which datasets are prepared under a data root, with counts and disk use."""

from __future__ import annotations

from pathlib import Path

from umlbench import const as C
from umlbench.data.prepare import image_source_of, read_ready
from umlbench.data.registry import DATASETS, SUITES

__all__ = ["dataset_status", "disk_usage"]


def disk_usage(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def dataset_status(root: Path, suite: str | None = None) -> list[tuple[str, ...]]:
    """One row per known dataset: name, suite, ready, train, eval counts, disk, source.

    "ready" names the image source of a prepared dataset: ``yes (packed)``, ``yes (resized
    256)``, ``yes (files)`` or ``yes (generated 32)`` (see ``Prepared.image_source``)."""
    rows = []
    names = [n for s, members in SUITES.items() if suite in (None, s) for n in members]
    for name in names:
        spec = DATASETS.get(name)
        info = read_ready(root, name)
        if info is None:
            partial = (root / name).exists() or any(root.glob(f".tmp-{name}-*"))
            rows.append((name, spec.suite, "partial" if partial else "no", "", "", "",
                         "needs a manual download" if spec.manual else ""))
            continue
        counts = info.get("counts", {})

        def fmt(split):
            c = counts.get(split)
            return f"{c['images']}/{c['classes']}" if c else ""

        evals = fmt(C.TEST) or f"{fmt(C.QUERY)} | {fmt(C.GALLERY)}"
        disk = disk_usage(root / name)
        raw = info.get("raw_dir")
        if raw:
            disk += disk_usage(Path(raw))
        kind = image_source_of(info)
        size = info.get("image_size") if kind in (C.RESIZED, C.GENERATED) else None
        ready = f"yes ({kind}{f' {size}' if size else ''})"
        rows.append((name, spec.suite, ready, fmt(C.TRAIN), evals, _human(disk),
                     str(info.get("source", ""))))
    return rows
