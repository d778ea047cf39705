"""The packed image store: every original image file, byte for byte, in one indexed file.

The official PUMA pipeline decodes each full-resolution JPEG with PIL and crops
``RandomResizedCrop(224, scale=(0.2, 1))`` from it. The pack keeps exactly those pixels: files
are appended unchanged (no re-encode, no resize) and the manifest holds each one's byte offset
and length. Reading is a slice of a ``numpy.memmap``; decoding uses libjpeg-turbo through
``torchvision.io.decode_jpeg``, which gives the same pixels as PIL's decoder (Pillow's wheels
are built on libjpeg-turbo too; ``tests/data/test_pack.py`` checks it).

Images libjpeg-turbo should not decode the way PIL would are handed to PIL, one by one:
anything that is not an 8-bit Huffman-coded JPEG with 1 (grey) or 3 (YCbCr/RGB) components,
e.g. the CMYK JPEGs and the PNG saved as ``.jpg`` that ImageNet-derived sets such as Stanford
Dogs contain. :func:`decode` picks the route per image from the JPEG frame header (and gives
PIL any file libjpeg-turbo refuses).
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from umlbench.errors import DataError

if TYPE_CHECKING:  # torch is imported where images are decoded, not when the CLI starts
    import torch

__all__ = ["ImagePack", "PackWriter", "decode", "decode_file", "turbo_decodable"]

# Start-of-frame markers libjpeg-turbo decodes exactly as PIL does: baseline, extended
# sequential and progressive Huffman JPEG (arithmetic coding, lossless and hierarchical
# frames go to PIL).
_TURBO_FRAMES = {0xC0, 0xC1, 0xC2}
_NOT_FRAMES = {0xC4, 0xC8, 0xCC}  # DHT, JPG extension, DAC share the 0xC? range


class PackWriter:
    """Append encoded image files to a pack; returns (offset, nbytes) per image."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "ab")
        self._offset = self._fh.tell()

    def append(self, data: bytes) -> tuple[int, int]:
        offset = self._offset
        self._fh.write(data)
        self._offset += len(data)
        return offset, len(data)

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImagePack:
    """Read-only view of a pack file, opened lazily so DataLoader workers can share it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: image pack not found; run `umlbench prepare-data`")
        self._mm: np.memmap | None = None

    @property
    def data(self) -> np.memmap:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._mm

    def get(self, offset: int, nbytes: int) -> np.ndarray:
        """The encoded file at ``offset`` as a (nbytes,) uint8 view."""
        if offset < 0 or nbytes <= 0 or offset + nbytes > self.data.shape[0]:
            raise DataError(f"{self.path}: image at offset {offset} lies outside the pack")
        return self.data[offset : offset + nbytes]

    def __getstate__(self) -> dict:
        return {"path": self.path, "_mm": None}


def turbo_decodable(data: bytes | np.ndarray) -> bool:
    """True when ``data`` is an 8-bit Huffman JPEG with 1 or 3 components.

    Walks the marker segments up to the first start-of-frame (a few dozen bytes past any
    EXIF/ICC segments); anything unexpected answers False, i.e. "let PIL decode it".
    """
    mv = memoryview(data).cast("B")
    n = len(mv)
    if n < 4 or mv[0] != 0xFF or mv[1] != 0xD8:
        return False
    i = 2
    while i + 4 <= n:
        if mv[i] != 0xFF:
            return False
        marker = mv[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in _NOT_FRAMES:
            if i + 10 > n:
                return False
            precision, components = mv[i + 4], mv[i + 9]
            return marker in _TURBO_FRAMES and precision == 8 and components in (1, 3)
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            return False
        i += 2 + ((mv[i + 2] << 8) | mv[i + 3])
    return False


@functools.cache
def _turbo_decoder():
    """``torchvision.io.decode_jpeg`` in RGB mode, or None where torchvision no longer has it
    (then every image goes to PIL: the same pixels, about 1.5x slower)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def _pil_decode(data: bytes | np.ndarray) -> torch.Tensor:
    import torch
    from PIL import Image

    with Image.open(io.BytesIO(memoryview(data).cast("B"))) as im:
        rgb = np.asarray(im.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def decode(data: bytes | np.ndarray, where: str | os.PathLike[str] = "image") -> torch.Tensor:
    """Encoded image -> (3, H, W) uint8 RGB tensor, as PIL's ``open(...).convert("RGB")``.

    No EXIF rotation (the official pipeline applies none). ``where`` names the image in the
    one-line :class:`DataError` a broken file raises.
    """
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        turbo = _turbo_decoder() if turbo_decodable(data) else None
        if turbo is not None:
            # decode_jpeg wants a writable 1-D uint8 tensor; memmap slices are read-only.
            buf = torch.from_numpy(np.frombuffer(data, np.uint8).copy())
            try:
                with warnings.catch_warnings():
                    # torchvision 0.29 deprecates its image codecs in favour of TorchCodec;
                    # they still work, and the warning would repeat for every image.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return turbo(buf)
            except RuntimeError:
                pass  # whatever libjpeg-turbo refuses, PIL decodes or names
        return _pil_decode(data)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise DataError(f"{where}: cannot decode image ({msg})") from None


def decode_file(path: Path) -> torch.Tensor:
    """An image file -> (3, H, W) uint8 RGB tensor (see :func:`decode`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    return decode(data, path)
