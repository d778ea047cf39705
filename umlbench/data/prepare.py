"""Prepare datasets into the data root, atomically and resumably.

Layout under the data root::

    <root>/<dataset>/manifest.parquet   one row per image (data/manifest.py)
    <root>/<dataset>/images.u8          uint8 image cache (data/cache.py); absent with --no-cache
    <root>/<dataset>/READY              JSON written last: counts, source, sha256 of the files
    <root>/_downloads/                  official archives (resumable downloads; real datasets)
    <root>/_raw/<dataset>/              extracted official files (real datasets)

A dataset is built in ``<root>/.tmp-<dataset>-<pid>`` and renamed into place only after its READY
marker is written, so a killed run never leaves a half-prepared dataset that looks usable, and a
rerun skips every dataset that is already READY.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from umlbench import const as C
from umlbench.data.cache import CacheWriter, ImageCache
from umlbench.data.manifest import make_manifest, read_manifest, write_manifest
from umlbench.data.registry import DATASETS, DatasetSpec
from umlbench.errors import DataError, UserError

__all__ = [
    "Prepared",
    "PrepareReport",
    "prepare",
    "prepare_one",
    "load_prepared",
    "read_ready",
    "is_ready",
    "split_counts",
    "sha256_file",
]

READY_FORMAT = 1


@dataclass
class Prepared:
    """A READY dataset: its manifest, its image cache (if any) and the READY information."""

    name: str
    path: Path
    manifest: pd.DataFrame
    ready: dict
    cache: ImageCache | None
    raw_dir: Path | None

    def load_image(self, row: int) -> np.ndarray:
        """Image of manifest row ``row`` as (H, W, 3) uint8."""
        r = self.manifest.iloc[row]
        if self.cache is not None and r[C.OFFSET] >= 0:
            return self.cache.get(int(r[C.OFFSET]), int(r[C.HEIGHT]), int(r[C.WIDTH]))
        return decode_image(self.raw_dir / r[C.PATH])


def decode_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; a broken file is a one-line DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


@dataclass
class PrepareReport:
    name: str
    status: str  # prepared | skipped
    seconds: float
    counts: dict


def sha256_file(path: Path, chunk: int = 2**22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def split_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{split: {"images": n, "classes": c}} in the order train, test, query, gallery."""
    out = {}
    for split in C.SPLITS:
        rows = manifest[manifest[C.SPLIT] == split]
        if len(rows):
            out[split] = {"images": int(len(rows)), "classes": int(rows[C.LABEL].nunique())}
    return out


def read_ready(root: Path, name: str) -> dict | None:
    path = root / name / C.READY_FILE
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if info.get("format") == READY_FORMAT else None


def is_ready(root: Path, name: str) -> bool:
    return read_ready(root, name) is not None


def load_prepared(root: Path, name: str) -> Prepared:
    """Open a READY dataset or raise a UserError that says how to prepare it."""
    info = read_ready(root, name)
    if info is None:
        spec = DATASETS.get(name)
        hint = (f"umlbench prepare-data --suite {spec.suite}" if spec.suite == "mini"
                else f"umlbench prepare-data --dataset {name}")
        raise UserError(f"dataset {name!r} is not prepared under {root}; run `{hint}`")
    path = root / name
    manifest = read_manifest(path / C.MANIFEST_FILE)
    cache = ImageCache(path / C.CACHE_FILE) if info.get("cache") else None
    raw = Path(info["raw_dir"]) if info.get("raw_dir") else None
    return Prepared(name, path, manifest, info, cache, raw)


def _check_expected(spec: DatasetSpec, counts: dict, source: str) -> None:
    for split, (n_img, n_cls) in spec.expected.items():
        got = counts.get(split, {"images": 0, "classes": 0})
        if (n_img >= 0 and got["images"] != n_img) or (n_cls >= 0 and got["classes"] != n_cls):
            raise DataError(
                f"{source}: {spec.name} {split} split has {got['images']} images / "
                f"{got['classes']} classes, expected {n_img if n_img >= 0 else 'any'} / {n_cls} "
                "(are these the official annotation files?)"
            )


def _commit(tmp: Path, target: Path) -> None:
    """Swap the finished temp dir into place; an old (not READY or forced) copy is removed."""
    if target.exists():
        trash = target.with_name(f".trash-{target.name}-{os.getpid()}")
        os.replace(target, trash)
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _write_generated(spec: DatasetSpec, tmp: Path, seed: int, image_size: int) -> tuple:
    rows, images = spec.generate(seed=seed, image_size=image_size)
    with CacheWriter(tmp / C.CACHE_FILE) as writer:
        offsets = writer.append_batch(images)
    rows = rows.assign(
        **{C.DATASET: spec.name, C.OFFSET: offsets, C.HEIGHT: image_size, C.WIDTH: image_size}
    )
    return make_manifest(rows), {"source": "generated", "seed": seed, "image_size": image_size,
                                 "cache": True, "raw_dir": None}


MIN_IMAGE_SIZE = 8  # pixels; anything smaller cannot hold a ViT patch grid


def check_prepare_args(*, seed: int = 0, image_size: int | None = None, workers: int = 1) -> None:
    """Refuse values that would silently become defaults or write an unusable cache, before
    anything is written."""
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise UserError(f"--image-size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")


def prepare_one(
    spec: DatasetSpec,
    root: Path,
    *,
    seed: int = 0,
    image_size: int | None = None,
    source: str | None = None,
    workers: int = 2,
    cache: bool = True,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> PrepareReport:
    """Prepare one dataset (skipped when already READY, unless ``force``)."""
    check_prepare_args(seed=seed, image_size=image_size, workers=workers)
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.name
    if not force and is_ready(root, spec.name):
        info = read_ready(root, spec.name) or {}
        return PrepareReport(spec.name, "skipped", 0.0, info.get("counts", {}))
    for stale in root.glob(f".tmp-{spec.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left behind by a killed run
    tmp = root / f".tmp-{spec.name}-{os.getpid()}"
    tmp.mkdir()
    try:
        if spec.generated:
            from umlbench.data.synthetic.suite import DEFAULT_IMAGE_SIZE

            manifest, info = _write_generated(spec, tmp, seed, image_size or DEFAULT_IMAGE_SIZE)
        else:
            from umlbench.data.real import prepare_real

            manifest, info = prepare_real(
                spec, root, tmp, source=source, image_size=image_size or 256, workers=workers,
                cache=cache, progress=progress,
            )
        counts = split_counts(manifest)
        _check_expected(spec, counts, info.get("source", spec.name))
        write_manifest(manifest, tmp / C.MANIFEST_FILE)
        files = {C.MANIFEST_FILE: sha256_file(tmp / C.MANIFEST_FILE)}
        if info.get("cache"):
            files[C.CACHE_FILE] = sha256_file(tmp / C.CACHE_FILE)
        ready = {
            "format": READY_FORMAT,
            "dataset": spec.name,
            "suite": spec.suite,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "counts": counts,
            "sha256": files,
            **info,
        }
        ready_tmp = tmp / (C.READY_FILE + ".part")
        ready_tmp.write_text(json.dumps(ready, indent=2, sort_keys=True))
        os.replace(ready_tmp, tmp / C.READY_FILE)  # READY last: only now is the copy usable
        _commit(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PrepareReport(spec.name, "prepared", time.perf_counter() - t0, counts)


def prepare(
    names: Sequence[str],
    root: Path,
    *,
    on_done: Callable[[PrepareReport], None] | None = None,
    **kwargs,
) -> list[PrepareReport]:
    """Prepare several datasets in order; each one is independent and atomic."""
    reports = []
    for name in names:
        report = prepare_one(DATASETS.get(name), root, **kwargs)
        reports.append(report)
        if on_done:
            on_done(report)
    return reports
