"""Datasets and DataLoaders over prepared manifests, with the official PUMA transforms.

Train: RandomResizedCrop(input, scale=(0.2, 1)) + horizontal flip; eval: resize to
input * 256/224 + centre crop; both normalised with the backbone's mean/std (from timm).

Augmentation randomness is tied to the sample, not to the worker: a batch sampler may yield
``(index, seed)`` pairs and the dataset then draws that sample's crop/flip from ``seed``. The
crops of a run are therefore the same whatever the number of workers or DDP processes, and a
resumed run sees exactly the crops the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from umlbench import const as C
from umlbench.data.pack import decode, decode_file
from umlbench.data.prepare import Prepared

__all__ = ["TransformConfig", "build_transform", "ImageTable", "eval_loader", "collate"]

_INTERP = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class TransformConfig:
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_scale: tuple[float, float] = (0.2, 1.0)
    resize_ratio: float = 256 / 224


def build_transform(cfg: TransformConfig, train: bool) -> T.Compose:
    """uint8 (3, H, W) tensor -> normalised float32 (3, input, input) tensor."""
    interp = _INTERP.get(cfg.interpolation, InterpolationMode.BICUBIC)
    if train:
        ops = [
            T.RandomResizedCrop(cfg.input_size, scale=tuple(cfg.crop_scale), interpolation=interp,
                                antialias=True),
            T.RandomHorizontalFlip(),
        ]
    else:
        ops = [
            T.Resize(int(round(cfg.input_size * cfg.resize_ratio)), interpolation=interp,
                     antialias=True),
            T.CenterCrop(cfg.input_size),
        ]
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(cfg.mean, cfg.std)]
    return T.Compose(ops)


class ImageTable(Dataset):
    """Rows of one or more prepared datasets, with a label per row.

    Args:
        sources: prepared datasets, referenced by ``source`` codes in ``rows``.
        rows: DataFrame with columns ``source`` (index into ``sources``), ``row`` (manifest row
            inside that source) and ``target`` (the int label the model is trained/scored on).
        transform: applied to each uint8 (3, H, W) tensor.
    Items are ``(image, target, position)`` where ``position`` is the row's index in ``rows``.
    Pixels come from the source's store (:attr:`Prepared.image_source`): a packed original
    decoded by libjpeg-turbo (PIL for the few images it should not decode), a uint8 cache
    slice, or the original file.
    """

    def __init__(self, sources: Sequence[Prepared], rows: pd.DataFrame, transform) -> None:
        self.sources = list(sources)
        self.src = rows["source"].to_numpy(np.int64)
        self.row = rows["row"].to_numpy(np.int64)
        self.target = rows["target"].to_numpy(np.int64)
        self.transform = transform
        # Plain arrays (not DataFrames) so workers index them cheaply.
        self._meta = [
            (
                s.manifest[C.OFFSET].to_numpy(np.int64),
                s.manifest[C.HEIGHT].to_numpy(np.int64),
                s.manifest[C.WIDTH].to_numpy(np.int64),
                s.manifest[C.NBYTES].to_numpy(np.int64),
                s.manifest[C.PATH].to_numpy(str),
            )
            for s in self.sources
        ]

    def __len__(self) -> int:
        return len(self.row)

    def image(self, i: int) -> torch.Tensor:
        """Row ``i``'s image as a (3, H, W) uint8 tensor."""
        s, r = self.src[i], self.row[i]
        src = self.sources[s]
        offset, height, width, nbytes, path = (m[r] for m in self._meta[s])
        if src.pack is not None and offset >= 0 and nbytes > 0:
            where = src.raw_dir / path if src.raw_dir is not None else f"{src.name}:{path}"
            return decode(src.pack.get(int(offset), int(nbytes)), where)
        if src.cache is not None and offset >= 0:
            # A copy: cache images are read-only memmap views.
            img = np.array(src.cache.get(int(offset), int(height), int(width)))
            return torch.from_numpy(img).permute(2, 0, 1)
        return decode_file(src.raw_dir / path)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        img = self.image(i)
        if seed is None:
            out = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                out = self.transform(img)
        return out, int(self.target[i]), int(i)


def collate(batch):
    images, targets, positions = zip(*batch)
    return torch.stack(images), torch.tensor(targets), torch.tensor(positions)


def eval_loader(table: ImageTable, batch_size: int, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    return DataLoader(table, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, collate_fn=collate,
                      persistent_workers=num_workers > 0)
