"""The uint8 image cache: every image decoded once, stored raw in one memory-mapped file.

Images are stored back to back as HxWx3 uint8; the manifest holds each image's byte offset,
height and width. Reading an image is a slice of a ``numpy.memmap`` (no decoding), which is what
makes the cache many times faster than decoding JPEGs (see ``benchmarks/test_loading.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from umlbench.errors import DataError

__all__ = ["CacheWriter", "ImageCache"]


class CacheWriter:
    """Append images to a cache file; returns (offset, height, width) per image."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "ab")
        self._offset = self._fh.tell()

    def append(self, image: np.ndarray) -> tuple[int, int, int]:
        """``image``: (H, W, 3) uint8 array."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"cache images must be HxWx3 uint8, got {image.dtype} {image.shape}")
        offset = self._offset
        data = np.ascontiguousarray(image).tobytes()
        self._fh.write(data)
        self._offset += len(data)
        return offset, image.shape[0], image.shape[1]

    def append_batch(self, images: np.ndarray) -> np.ndarray:
        """``images``: (N, H, W, 3) uint8, all one size. Returns offsets (N,) int64."""
        n, h, w, _ = images.shape
        offsets = self._offset + np.arange(n, dtype=np.int64) * (h * w * 3)
        self._fh.write(np.ascontiguousarray(images).tobytes())
        self._offset += n * h * w * 3
        return offsets

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageCache:
    """Read-only view of a cache file. Opened lazily so it can be shared with DataLoader workers."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: image cache not found; run `umlbench prepare-data`")
        self._mm: np.memmap | None = None

    @property
    def data(self) -> np.memmap:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._mm

    def get(self, offset: int, height: int, width: int) -> np.ndarray:
        """One image as an (H, W, 3) uint8 array view."""
        n = height * width * 3
        if offset < 0 or offset + n > self.data.shape[0]:
            raise DataError(f"{self.path}: image at offset {offset} lies outside the cache")
        return self.data[offset : offset + n].reshape(height, width, 3)

    def get_many(self, offsets: np.ndarray, height: int, width: int) -> np.ndarray:
        """Equal-size images stacked: (N, H, W, 3) uint8 (a copy)."""
        n = height * width * 3
        idx = np.asarray(offsets, dtype=np.int64)[:, None] + np.arange(n, dtype=np.int64)[None]
        return self.data[idx].reshape(len(offsets), height, width, 3)

    def __getstate__(self) -> dict:
        return {"path": self.path, "_mm": None}
