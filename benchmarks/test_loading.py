"""Image loading throughput: the uint8 cache vs decoding the original JPEGs with PIL.

``UMLBENCH_BENCH_IMAGES`` JPEGs (default 300) are written at a real dataset's photo size
(500x375, typical of CUB and Stanford Dogs): fixture-like small images upscaled, with noise so
they compress like photos. The cache is built from them by the real code path
(:func:`umlbench.data.real.build_cache`, shorter side 256). Each benchmark reads every image the
way :class:`umlbench.data.loading.ImageTable` does in that mode (PIL decode + RGB for
``--no-cache``; for the cache a memmap slice, copied so that its bytes are really read, as the
transforms would). Both read from the warm page cache. Images per second
and the cache/PIL ratio are printed and stored in pytest-benchmark's ``extra_info``.

Runs only with ``pytest benchmarks/`` (the main suite collects ``tests/`` only).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from umlbench.data.cache import ImageCache
from umlbench.data.prepare import decode_image
from umlbench.data.real import build_cache

N = int(os.environ.get("UMLBENCH_BENCH_IMAGES", "300"))
SIZE = (500, 375)  # (width, height) of the written JPEGs
_rates: dict[str, float] = {}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[Path], ImageCache, np.ndarray, np.ndarray, np.ndarray]:
    d = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        big = np.asarray(Image.fromarray(small).resize(SIZE, Image.Resampling.BICUBIC))
        noisy = np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
        paths.append(d / f"{i:05d}.jpg")
        Image.fromarray(noisy).save(paths[-1], quality=90)
    offsets, heights, widths = build_cache(paths, d / "images.u8", 256, workers=1,
                                           progress=lambda *a: None)
    return paths, ImageCache(d / "images.u8"), offsets, heights, widths


def _timed(fn, *args) -> tuple[callable, list[float]]:
    times: list[float] = []

    def run():
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)

    return run, times


def _read_pil(paths: list[Path]) -> None:
    for p in paths:
        decode_image(p)


def _read_cache(cache: ImageCache, offsets, heights, widths) -> None:
    for o, h, w in zip(offsets.tolist(), heights.tolist(), widths.tolist()):
        cache.get(o, h, w).copy()  # the slice alone is a view: copying reads the bytes


@pytest.mark.benchmark(group="loading")
def test_pil_jpeg_decode(benchmark, corpus):
    paths = corpus[0]
    run, times = _timed(_read_pil, paths)
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _rates["pil"] = N / min(times)
    benchmark.extra_info["images_per_s"] = _rates["pil"]
    print(f"\nPIL decode of {SIZE[0]}x{SIZE[1]} JPEGs: {_rates['pil']:.0f} images/s")


@pytest.mark.benchmark(group="loading")
def test_cache_read(benchmark, corpus):
    paths, cache, offsets, heights, widths = corpus
    run, times = _timed(_read_cache, cache, offsets, heights, widths)
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    rate = N / min(times)
    if "pil" not in _rates:  # run on its own: time the PIL side once here
        pil_run, pil_times = _timed(_read_pil, paths)
        pil_run()
        _rates["pil"] = N / pil_times[0]
    ratio = rate / _rates["pil"]
    benchmark.extra_info.update({"images_per_s": rate, "speedup_vs_pil": ratio})
    print(f"\ncache read: {rate:.0f} images/s, {ratio:.1f}x PIL decoding")
    assert ratio > 1
