"""Prepare datasets into the data root, atomically and resumably.

Layout under the data root::

    <root>/<dataset>/manifest.parquet   one row per image (data/manifest.py)
    <root>/<dataset>/images.pack        the original image files, unchanged (data/pack.py);
                                        real datasets by default
    <root>/<dataset>/images.u8          uint8 image cache (data/cache.py): the mini suite, or
                                        real datasets prepared with --cache resized
    <root>/<dataset>/READY              JSON written last: counts, source, image_source,
                                        image_size, sha256 of the files
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
from umlbench.data.pack import ImagePack, decode_file
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
    "image_source_of",
    "describe_images",
]

READY_FORMAT = 1


@dataclass
class Prepared:
    """A READY dataset: its manifest, its image store and the READY information.

    ``image_source`` (one of :data:`umlbench.const.IMAGE_SOURCES`) and ``image_size`` say
    which pixels a run sees: ``packed`` / ``files`` are the original files at full resolution
    (``image_size`` None), ``resized`` a uint8 cache with shorter side ``image_size``,
    ``generated`` the mini generator's ``image_size`` x ``image_size`` images.
    """

    name: str
    path: Path
    manifest: pd.DataFrame
    ready: dict
    cache: ImageCache | None
    raw_dir: Path | None
    pack: ImagePack | None = None

    @property
    def image_source(self) -> str:
        return image_source_of(self.ready)

    @property
    def image_size(self) -> int | None:
        """Shorter side of the stored images in pixels; None for full-resolution originals."""
        return None if self.image_source in (C.PACKED, C.FILES) else self.ready.get("image_size")

    def load_image(self, row: int) -> np.ndarray:
        """Image of manifest row ``row`` as (H, W, 3) uint8."""
        return self.load_tensor(row).permute(1, 2, 0).numpy()

    def load_tensor(self, row: int):
        """Image of manifest row ``row`` as a (3, H, W) uint8 torch tensor."""
        import torch

        m = self.manifest
        offset, nbytes = int(m[C.OFFSET].iat[row]), int(m[C.NBYTES].iat[row])
        path = m[C.PATH].iat[row]
        if self.pack is not None and offset >= 0 and nbytes > 0:
            from umlbench.data.pack import decode

            return decode(self.pack.get(offset, nbytes), self.raw_dir / path if self.raw_dir
                          else path)
        if self.cache is not None and offset >= 0:
            img = self.cache.get(offset, int(m[C.HEIGHT].iat[row]), int(m[C.WIDTH].iat[row]))
            return torch.from_numpy(np.array(img)).permute(2, 0, 1)
        return decode_file(self.raw_dir / path)


def image_source_of(ready: dict) -> str:
    """The READY marker's image source; markers written before packs existed have none."""
    if ready.get("image_source") in C.IMAGE_SOURCES:
        return ready["image_source"]
    if ready.get("source") == "generated":
        return C.GENERATED
    return C.RESIZED if ready.get("cache") else C.FILES


def decode_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB with PIL (the official pipeline's decoder);
    a broken file is a one-line DataError. Training reads through :mod:`umlbench.data.pack`."""
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
    images: str = ""  # what describe_images says about the dataset's image store


def describe_images(ready: dict) -> str:
    """The image store of a READY dataset in a few words, e.g. ``packed, full resolution``."""
    kind = image_source_of(ready)
    if kind == C.PACKED:
        n = int(ready.get("pil_decoded") or 0)
        return "packed, full resolution" + (f" ({n} decoded by PIL)" if n else "")
    if kind == C.FILES:
        return "original files, full resolution"
    if kind == C.RESIZED:
        return f"resized, shorter side {ready.get('image_size')} px"
    return f"generated, {ready.get('image_size')} px"


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
    kind = image_source_of(info)
    cache = ImageCache(path / C.CACHE_FILE) if kind in (C.RESIZED, C.GENERATED) else None
    pack = ImagePack(path / C.PACK_FILE) if kind == C.PACKED else None
    raw = Path(info["raw_dir"]) if info.get("raw_dir") else None
    return Prepared(name, path, manifest, info, cache, raw, pack)


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
                                 "image_source": C.GENERATED, "cache": True, "raw_dir": None}


MIN_IMAGE_SIZE = 8  # pixels; anything smaller cannot hold a ViT patch grid


def check_prepare_args(*, seed: int = 0, image_size: int | None = None, workers: int = 1,
                       source: str | None = None) -> None:
    """Refuse values that would silently become defaults or write an unusable cache, and a
    local ``--source`` that does not exist, before anything is written or printed."""
    if source is not None:
        from umlbench.data.real import _is_url

        if not _is_url(source) and not Path(source).expanduser().exists():
            raise UserError(f"--source {source}: no such file or folder")
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
    image_source: str | None = None,
    cache: bool = True,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> PrepareReport:
    """Prepare one dataset (skipped when already READY, unless ``force``).

    Real datasets: ``image_source`` is ``packed`` (default: the original files, full
    resolution), ``resized`` (uint8 cache with shorter side ``image_size``, default 256; the
    default when ``image_size`` is given) or ``files``; ``cache=False`` means ``files``.
    Generated (mini) datasets ignore it.
    """
    check_prepare_args(seed=seed, image_size=image_size, workers=workers)
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.name
    kind = image_source or (C.FILES if not cache else C.RESIZED if image_size else C.PACKED)
    if not force and is_ready(root, spec.name):
        info = read_ready(root, spec.name) or {}
        images = describe_images(info)
        if not spec.generated and image_source_of(info) != kind:
            images += f"; --force rebuilds it as {kind}"
        return PrepareReport(spec.name, "skipped", 0.0, info.get("counts", {}), images)
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
                spec, root, tmp, source=source, image_source=kind,
                image_size=image_size or 256, workers=workers, progress=progress,
            )
        counts = split_counts(manifest)
        _check_expected(spec, counts, info.get("source", spec.name))
        write_manifest(manifest, tmp / C.MANIFEST_FILE)
        files = {C.MANIFEST_FILE: sha256_file(tmp / C.MANIFEST_FILE)}
        for store in (C.CACHE_FILE, C.PACK_FILE):
            if (tmp / store).exists():
                files[store] = sha256_file(tmp / store)
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
    return PrepareReport(spec.name, "prepared", time.perf_counter() - t0, counts,
                         describe_images(ready))


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
