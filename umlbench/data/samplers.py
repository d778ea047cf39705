"""Batch samplers of the official PUMA code, written for exact multi-process reproducibility.

Every sampler draws *global* batches from ``(seed, epoch)`` alone; under DDP each process takes
its contiguous slice, so all-gathering the per-process embeddings rebuilds the global batch in the
same order as a single process would see it. Each sample also gets its own augmentation seed
(see ``data/loading.py``), drawn from ``(seed, epoch, step)``.

``reshuffle=False`` draws the batches of epoch 0 again in every epoch (augmentations still
change): the official code never calls ``set_epoch`` on the ``DistributedSampler`` it uses for
IPC 0 (PUMA, Proxy-Anchor, ArcFace, ...), so those runs see one image order throughout; its
class samplers (IPC > 0) do get ``set_epoch``.

``replace_images=True`` draws a class's ``ipc`` images with replacement even when it has enough
(the official ``UniqueClassSampler`` always does), so two views of a class can be one image.

    uniform  images drawn uniformly without replacement (PUMA: a shuffled DistributedSampler)
    unique   B/ipc classes per batch, ipc images each (official UniqueClassSampler); distinct
             unless the dataset has fewer than B/ipc classes
    B is the batch of one optimiser step (``train.batch_size``, 720 on uml: the official 180 per
    GPU on 4 GPUs); each of P processes takes B/P of it.
    dcb      the same, with an equal number of classes from every dataset (official "DCB")
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from umlbench.errors import UserError

__all__ = ["GlobalBatchSampler", "UniformSampler", "ClassUniqueSampler",
           "DatasetClassBalancedSampler", "make_sampler"]


class GlobalBatchSampler(Sampler, abc.ABC):
    """Yields, per step, this process's list of ``(index, augmentation_seed)`` pairs."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, max_batches: int = 0, reshuffle: bool = True) -> None:
        if batch_size % world_size:
            raise UserError(f"batch size {batch_size} is not divisible by {world_size} processes")
        if n < batch_size:
            raise UserError(f"training set has {n} images, fewer than one batch ({batch_size})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.max_batches = max_batches
        self.reshuffle = reshuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches(self) -> int:
        full = self.n // self.batch_size
        return min(full, self.max_batches) if self.max_batches else full

    def __len__(self) -> int:
        return self._num_batches()

    def global_batches(self) -> list[np.ndarray]:
        """All global batches of the current epoch, each (batch_size,) int64."""
        rng = np.random.default_rng([self.seed, self.epoch if self.reshuffle else 0])
        return self._draw(rng)[: self._num_batches()]

    @abc.abstractmethod
    def _draw(self, rng: np.random.Generator) -> list[np.ndarray]:
        """The epoch's global batches drawn from ``rng``."""

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per = self.batch_size // self.world_size
        lo, hi = self.rank * per, (self.rank + 1) * per
        for step, batch in enumerate(self.global_batches()):
            seeds = np.random.SeedSequence([self.seed, self.epoch, step]).generate_state(
                self.batch_size
            )
            yield [(int(i), int(s)) for i, s in zip(batch[lo:hi], seeds[lo:hi])]


class UniformSampler(GlobalBatchSampler):
    def _draw(self, rng):
        perm = rng.permutation(self.n)
        nb = self.n // self.batch_size
        return list(perm[: nb * self.batch_size].reshape(nb, self.batch_size))


def _class_index(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    classes, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse))
    return classes, np.split(order, bounds[:-1])


def _take(rng, members: np.ndarray, k: int, always: bool = False) -> np.ndarray:
    """k images of a class: without replacement when it has enough, else (or ``always``) with."""
    return rng.choice(members, k, replace=always or len(members) < k)


class ClassUniqueSampler(GlobalBatchSampler):
    def __init__(self, labels: np.ndarray, batch_size: int, ipc: int,
                 replace_images: bool = False, **kw) -> None:
        super().__init__(len(labels), batch_size, **kw)
        self.replace_images = replace_images
        if ipc < 1 or batch_size % ipc:
            raise UserError(f"batch size {batch_size} must be a multiple of ipc {ipc}")
        self.ipc = ipc
        self.classes, self.members = _class_index(np.asarray(labels))

    def _draw(self, rng):
        per_batch = self.batch_size // self.ipc
        # A dataset with fewer classes than a step needs (CUB's 100 at 720 / 4 = 180) gets some
        # classes twice in a step, as in the official sampler, which draws classes with
        # replacement when the dataset has fewer than it asks for.
        replace = len(self.classes) < per_batch
        out = []
        for _ in range(self._num_batches()):
            chosen = rng.choice(len(self.classes), per_batch, replace=replace)
            out.append(np.concatenate([_take(rng, self.members[c], self.ipc, self.replace_images)
                                       for c in chosen]))
        return out


class DatasetClassBalancedSampler(GlobalBatchSampler):
    def __init__(self, labels: np.ndarray, groups: np.ndarray, batch_size: int, ipc: int,
                 replace_images: bool = False, **kw) -> None:
        super().__init__(len(labels), batch_size, **kw)
        self.replace_images = replace_images
        if ipc < 1 or batch_size % ipc:
            raise UserError(f"batch size {batch_size} must be a multiple of ipc {ipc}")
        self.ipc = ipc
        labels, groups = np.asarray(labels), np.asarray(groups)
        self.group_ids = np.unique(groups)
        self.group_members = []
        for g in self.group_ids:
            rows = np.flatnonzero(groups == g)
            _, members = _class_index(labels[rows])
            self.group_members.append([rows[m] for m in members])

    def _draw(self, rng):
        slots = self.batch_size // self.ipc
        base, extra = divmod(slots, len(self.group_ids))
        out = []
        for _ in range(self._num_batches()):
            # The remainder rotates over datasets so none is favoured.
            bonus = set(rng.choice(len(self.group_ids), extra, replace=False).tolist())
            parts = []
            for g, members in enumerate(self.group_members):
                k = base + (g in bonus)
                chosen = rng.choice(len(members), k, replace=len(members) < k)
                parts += [_take(rng, members[c], self.ipc, self.replace_images) for c in chosen]
            out.append(np.concatenate(parts))
        return out


def make_sampler(name: str, labels: np.ndarray, groups: np.ndarray, batch_size: int, ipc: int,
                 replace_images: bool = False, **kw) -> GlobalBatchSampler:
    if name == "uniform":
        return UniformSampler(len(labels), batch_size, **kw)
    if name == "unique":
        return ClassUniqueSampler(labels, batch_size, ipc or 4, replace_images, **kw)
    if name == "dcb":
        return DatasetClassBalancedSampler(labels, groups, batch_size, ipc or 4, replace_images,
                                           **kw)
    raise UserError(f"unknown sampler {name!r}; known: uniform, unique, dcb")
