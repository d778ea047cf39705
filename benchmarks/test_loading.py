"""Training-image throughput: the pack and the resized cache against PIL ImageFolder.

``UMLBENCH_BENCH_IMAGES`` JPEGs (default 300) are written at a real dataset's photo size
(500x375, typical of CUB and Stanford Dogs): small random images upscaled, with noise so they
compress like photos, in ImageFolder's ``<class>/<file>.jpg`` layout. Three ways of producing the
training tensors are timed, each on every image, in this process (one DataLoader worker's work):

- ``pil_imagefolder``: the official pipeline, ``torchvision.datasets.ImageFolder`` (PIL decode
  + RGB) with RandomResizedCrop(224, scale=(0.2, 1), bicubic), flip, ToTensor, Normalize;
- ``packed``: umlbench's default store, the original files in one pack decoded by
  libjpeg-turbo, then the same transforms on the uint8 tensor (:class:`ImageTable`);
- ``resized``: the uint8 cache at shorter side 256 (no decoding), same transforms.

A second group times decoding alone (PIL, pack, cache slice). Images per second and the ratio
to the PIL pipeline are printed and stored in pytest-benchmark's ``extra_info``. Ratios are what
to compare across machines; absolute rates depend on the CPU and its load. Torch runs one thread,
as in a DataLoader worker.

Runs only with ``pytest benchmarks/`` (the main suite collects ``tests/`` only).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from umlbench import const as C
from umlbench.data.build import build_cache, build_pack
from umlbench.data.cache import ImageCache
from umlbench.data.loading import ImageTable, TransformConfig, build_transform
from umlbench.data.manifest import make_manifest
from umlbench.data.pack import ImagePack, decode
from umlbench.data.prepare import Prepared, decode_image

N = int(os.environ.get("UMLBENCH_BENCH_IMAGES", "300"))
SIZE = (500, 375)  # (width, height) of the written JPEGs
_rates: dict[str, float] = {}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as in a DataLoader worker process (PyTorch sets it there)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        big = np.asarray(Image.fromarray(small).resize(SIZE, Image.Resampling.BICUBIC))
        noisy = np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
        paths.append(d / "images" / f"{i % 10:03d}" / f"{i:05d}.jpg")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(paths[-1], quality=90)
    rows = {C.IMAGE_ID: [p.stem for p in paths], C.PATH: [p.relative_to(d).as_posix()
                                                         for p in paths],
            C.LABEL: [i % 10 for i in range(N)], C.CLASS_NAME: "x", C.DATASET: "bench",
            C.SPLIT: C.TRAIN}
    quiet = lambda *a: None
    off, nb, h, w, _ = build_pack(paths, d / C.PACK_FILE, workers=1, progress=quiet)
    packed = Prepared("bench", d, make_manifest({**rows, C.OFFSET: off, C.NBYTES: nb,
                                                 C.HEIGHT: h, C.WIDTH: w}),
                      {"image_source": C.PACKED}, None, d, ImagePack(d / C.PACK_FILE))
    off, h, w = build_cache(paths, d / C.CACHE_FILE, 256, workers=1, progress=quiet)
    resized = Prepared("bench", d, make_manifest({**rows, C.OFFSET: off, C.HEIGHT: h,
                                                  C.WIDTH: w}),
                       {"image_source": C.RESIZED, "image_size": 256},
                       ImageCache(d / C.CACHE_FILE), d, None)
    return {"dir": d, "paths": paths, "packed": packed, "resized": resized}


def _timed(fn, *args) -> tuple[callable, list[float]]:
    times: list[float] = []

    def run():
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)

    return run, times


def _report(benchmark, name: str, times: list[float], base: str) -> None:
    rate = N / min(times)
    _rates[name] = rate
    benchmark.extra_info["images_per_s"] = rate
    line = f"\n{name}: {rate:.0f} images/s"
    if base in _rates and base != name:
        benchmark.extra_info[f"x_{base}"] = rate / _rates[base]
        line += f", {rate / _rates[base]:.2f}x {base}"
    print(line)


# ---- the whole training transform ------------------------------------------------------------


def _imagefolder(folder: Path) -> None:
    from torchvision import datasets
    from torchvision import transforms as TV

    tf = TV.Compose([
        TV.RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=TV.InterpolationMode.BICUBIC),
        TV.RandomHorizontalFlip(), TV.ToTensor(), TV.Normalize((0.5,) * 3, (0.5,) * 3)])
    ds = datasets.ImageFolder(str(folder), transform=tf)
    for i in range(len(ds)):
        ds[i]


def _table(prep: Prepared) -> None:
    m = prep.manifest
    rows = pd.DataFrame({"source": 0, "row": np.arange(len(m)), "target": m[C.LABEL]})
    cfg = TransformConfig(224, (0.5,) * 3, (0.5,) * 3, "bicubic", (0.2, 1.0))
    table = ImageTable([prep], rows, build_transform(cfg, train=True))
    for i in range(len(table)):
        table[i]


@pytest.mark.benchmark(group="train-transform")
def test_pil_imagefolder(benchmark, corpus):
    torch.manual_seed(0)
    run, times = _timed(_imagefolder, corpus["dir"] / "images")
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _report(benchmark, "pil_imagefolder", times, "pil_imagefolder")


@pytest.mark.benchmark(group="train-transform")
@pytest.mark.parametrize("kind", ["packed", "resized"])
def test_image_table(benchmark, corpus, kind):
    if "pil_imagefolder" not in _rates:  # run on its own: time the PIL side once here
        run, times = _timed(_imagefolder, corpus["dir"] / "images")
        run()
        _rates["pil_imagefolder"] = N / times[0]
    torch.manual_seed(0)
    run, times = _timed(_table, corpus[kind])
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _report(benchmark, kind, times, "pil_imagefolder")
    assert _rates[kind] > 0.5 * _rates["pil_imagefolder"]  # never much slower than official


# ---- decoding alone ----------------------------------------------------------------------


def _decode_pil(paths: list[Path]) -> None:
    for p in paths:
        decode_image(p)


def _decode_pack(prep: Prepared) -> None:
    m = prep.manifest
    for o, n in zip(m[C.OFFSET].tolist(), m[C.NBYTES].tolist()):
        decode(prep.pack.get(o, n))


def _read_cache(prep: Prepared) -> None:
    m = prep.manifest
    for o, h, w in zip(m[C.OFFSET].tolist(), m[C.HEIGHT].tolist(), m[C.WIDTH].tolist()):
        prep.cache.get(o, h, w).copy()  # the slice alone is a view: copying reads the bytes


@pytest.mark.benchmark(group="decode")
@pytest.mark.parametrize("kind", ["pil", "pack", "cache"])
def test_decode(benchmark, corpus, kind):
    fn, arg = {"pil": (_decode_pil, corpus["paths"]), "pack": (_decode_pack, corpus["packed"]),
               "cache": (_read_cache, corpus["resized"])}[kind]
    run, times = _timed(fn, arg)
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _report(benchmark, f"decode_{kind}", times, "decode_pil")
