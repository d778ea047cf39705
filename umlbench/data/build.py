"""Build a real dataset's image store from its files: the pack (default) or the resized cache.

- :func:`build_pack` appends every original file unchanged to ``images.pack`` (full
  resolution, what the official pipeline crops from; see :mod:`umlbench.data.pack`). Each file
  is decoded once on the way, so a broken image is found while preparing, not hours into a
  run.
- :func:`build_cache` decodes every image once (JPEG draft mode), resizes its shorter side to
  ``image_size`` and appends the uint8 pixels to ``images.u8`` (:mod:`umlbench.data.cache`): a
  speed option that trades the full-resolution crops for no decoding at all.

Both keep manifest order and decode in ``workers`` processes.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from umlbench.data.cache import CacheWriter
from umlbench.data.download import ProgressFn, progress_task
from umlbench.data.pack import PackWriter
from umlbench.errors import DataError

__all__ = ["build_cache", "build_pack"]


def _resize(job: tuple[str, int]) -> np.ndarray | str:
    """Worker: image file -> (H, W, 3) uint8 with shorter side ``size``; an error message on
    failure (returned, not raised, so the parent reports it as a one-line DataError)."""
    from PIL import Image, UnidentifiedImageError

    path, size = job
    try:
        with Image.open(path) as im:
            w, h = im.size
            scale = size / min(w, h)
            tw, th = max(1, round(w * scale)), max(1, round(h * scale))
            # JPEG only: decode at 1/2, 1/4 or 1/8 scale when that is still >= the target size.
            # No EXIF transpose: PUMA feeds PIL's raw orientation too.
            im.draft("RGB", (tw, th))
            rgb = im.convert("RGB")
            if rgb.size != (tw, th):
                rgb = rgb.resize((tw, th), Image.Resampling.BICUBIC)
            return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        return f"{path}: image file not found"
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"{path}: cannot decode image ({exc})"


def _inspect(path: str) -> tuple[bytes, int, int, bool] | str:
    """Worker: the file's bytes, its height and width, and whether libjpeg-turbo (not PIL)
    will decode it at training time; an error message on failure.

    The whole image is decoded once with PIL (whose JPEG decoder is libjpeg-turbo as well), so
    truncated or corrupt files are found here; torch stays out of the workers, which keeps
    their start-up short.
    """
    from PIL import Image, UnidentifiedImageError

    from umlbench.data.pack import turbo_decodable

    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            w, h = im.size
    except FileNotFoundError:
        return f"{path}: image file not found"
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"{path}: cannot decode image ({exc})"
    return data, h, w, turbo_decodable(data)


def _run(worker: Callable, jobs: list, workers: int, consume: Callable[[Iterable], None],
         done: Callable[[], int]) -> None:
    """``consume(map(worker, jobs))`` in order, in a process pool when ``workers`` > 1."""
    workers = max(1, min(workers, len(jobs)))
    if workers > 1:
        # spawn: safe with the threads of torch/rich in the parent (start-up ~0.3 s); unlike
        # multiprocessing.Pool, the executor raises instead of hanging if a worker dies.
        chunk = max(1, min(64, len(jobs) // (workers * 8)))
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        try:
            consume(pool.map(worker, jobs, chunksize=chunk))
        except BrokenProcessPool:  # e.g. an unimportable __main__: go on in-process
            warnings.warn("image decoding workers failed to start; decoding in this "
                          "process", RuntimeWarning, stacklevel=3)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on an error: drop queued work
    consume(map(worker, jobs[done():]))


def build_cache(paths: list[Path], out: Path, image_size: int, workers: int,
                progress: ProgressFn | None = None, label: str = "cache") -> tuple[np.ndarray, ...]:
    """Decode ``paths`` into the uint8 cache file ``out`` in order.

    Args:
        paths: N image files.
        workers: decoding processes; <= 1 decodes in this process.
    Returns:
        offsets (N,) int64, heights (N,) int32, widths (N,) int32 (the resized sizes).
    Raises:
        DataError: naming the first image that is missing or cannot be decoded.
    """
    n = len(paths)
    offsets = np.empty(n, np.int64)
    heights = np.empty(n, np.int32)
    widths = np.empty(n, np.int32)
    done = 0
    with CacheWriter(out) as writer, progress_task(label, n, callback=progress) as advance:

        def consume(results: Iterable[np.ndarray | str]) -> None:
            nonlocal done
            for img in results:
                if isinstance(img, str):
                    raise DataError(img)
                offsets[done], heights[done], widths[done] = writer.append(img)
                done += 1
                advance(1)

        _run(_resize, [(str(p), image_size) for p in paths], workers, consume, lambda: done)
    return offsets, heights, widths


def build_pack(paths: list[Path], out: Path, workers: int, progress: ProgressFn | None = None,
               label: str = "pack") -> tuple[np.ndarray, ...]:
    """Append the files ``paths`` unchanged to the pack ``out``, in order.

    Returns:
        offsets (N,) int64, nbytes (N,) int64, heights (N,) int32, widths (N,) int32 (full
        resolution), turbo (N,) bool (False: the image is decoded by PIL; see data/pack.py).
    Raises:
        DataError: naming the first image that is missing or cannot be decoded.
    """
    n = len(paths)
    offsets = np.empty(n, np.int64)
    nbytes = np.empty(n, np.int64)
    heights = np.empty(n, np.int32)
    widths = np.empty(n, np.int32)
    turbo = np.empty(n, bool)
    done = 0
    with PackWriter(out) as writer, progress_task(label, n, callback=progress) as advance:

        def consume(results) -> None:
            nonlocal done
            for res in results:
                if isinstance(res, str):
                    raise DataError(res)
                data, heights[done], widths[done], turbo[done] = res
                offsets[done], nbytes[done] = writer.append(data)
                done += 1
                advance(1)

        _run(_inspect, [str(p) for p in paths], workers, consume, lambda: done)
    return offsets, nbytes, heights, widths, turbo
