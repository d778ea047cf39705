"""The `mini` suite: eight generated datasets that mirror the structure of the UML benchmark.

Counts are scaled down from the real datasets while keeping their shape: disjoint train/test
class halves; an SOP-like domain with many classes of 2-12 images that dominates the union; an
In-shop-like domain with separate query and gallery images; small, imbalanced Flowers-like and
uniform Aircraft-like domains. Everything is a deterministic function of (seed, image size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from umlbench import const as C
from umlbench.data.registry import DATASETS, DatasetSpec
from umlbench.data.synthetic.domains import DOMAINS

__all__ = ["MiniLayout", "MINI_LAYOUTS", "generate_domain", "PRETRAIN_LAYOUT"]

DEFAULT_SEED = 0
DEFAULT_IMAGE_SIZE = 32
_RENDER_CHUNK = 2048  # images rendered at once; bounds peak memory of the float canvases


@dataclass(frozen=True)
class MiniLayout:
    """Class counts and images-per-class distribution of one generated dataset.

    ``per_class`` is (low, high) for a uniform draw, or "sop" for the long-tailed 2-12 law.
    ``query_gallery``: test images of each class are split into query and gallery (In-shop).
    """

    domain: str
    train_classes: int
    test_classes: int
    per_class: tuple[int, int] | str
    query_gallery: bool = False
    mirrors: str = ""

    @property
    def name(self) -> str:
        return f"mini-{self.domain}"


MINI_LAYOUTS: dict[str, MiniLayout] = {
    lay.name: lay
    for lay in (
        MiniLayout("cub", 20, 20, (24, 36), mirrors="CUB-200-2011 (100/100 classes, ~59/class)"),
        MiniLayout("cars", 20, 20, (30, 50), mirrors="Cars-196 (98/98 classes, ~82/class)"),
        MiniLayout("sop", 500, 500, "sop", mirrors="SOP (11,318/11,316 classes, 2-12/class)"),
        MiniLayout("inshop", 150, 150, (3, 10), query_gallery=True,
                   mirrors="In-shop (3,997/3,985 items, query/gallery)"),
        MiniLayout("nabirds", 40, 40, (10, 60), mirrors="NABirds (278/277 classes, imbalanced)"),
        MiniLayout("dogs", 12, 12, (25, 45), mirrors="Stanford Dogs (60/60 classes)"),
        MiniLayout("flowers", 10, 10, (20, 60), mirrors="Flowers-102 (51/51, imbalanced)"),
        MiniLayout("aircraft", 10, 10, (20, 20), mirrors="FGVC-Aircraft (50/50, 100/class)"),
    )
}

# The backbone's pre-training data: a ninth domain, never evaluated on.
PRETRAIN_LAYOUT = MiniLayout("pretrain", 400, 0, (25, 35))

_DOMAIN_INDEX = {name: i for i, name in enumerate(DOMAINS)}


def _images_per_class(rng: np.random.Generator, lay: MiniLayout, n_classes: int) -> np.ndarray:
    if lay.per_class == "sop":
        # SOP's long tail: most products have 2-6 photos, a few up to 12 (mean about 5).
        sizes = np.arange(2, 13)
        weights = 1.0 / (sizes - 1.0) ** 1.1
        return rng.choice(sizes, n_classes, p=weights / weights.sum())
    lo, hi = lay.per_class
    return rng.integers(lo, hi + 1, n_classes)


def generate_domain(
    lay: MiniLayout, seed: int = DEFAULT_SEED, image_size: int = DEFAULT_IMAGE_SIZE
) -> tuple[pd.DataFrame, np.ndarray]:
    """Generate one dataset.

    Returns:
        rows: manifest rows (image_id, path, label, class_name, split), label in 0..C-1 with
            the first ``train_classes`` labels for training (the official class-half rule).
        images: (N, image_size, image_size, 3) uint8, row i of ``images`` is row i of ``rows``.
    """
    domain = DOMAINS[lay.domain]
    key = _DOMAIN_INDEX[lay.domain]
    n_classes = lay.train_classes + lay.test_classes
    classes = domain.classes(np.random.default_rng([seed, key, 0]), n_classes)
    count_rng = np.random.default_rng([seed, key, 1])
    counts = _images_per_class(count_rng, lay, n_classes)
    if lay.query_gallery:
        counts[lay.train_classes :] += 2  # every test item needs >= 1 query and >= 1 gallery image
    labels = np.repeat(np.arange(n_classes), counts)
    split = np.where(labels < lay.train_classes, C.TRAIN, C.TEST).astype(object)
    if lay.query_gallery:
        # Within each test item, a random half (at least one each) are queries.
        for cls in range(lay.train_classes, n_classes):
            idx = np.flatnonzero(labels == cls)
            n_query = count_rng.integers(1, len(idx))
            split[idx] = C.GALLERY
            split[count_rng.choice(idx, n_query, replace=False)] = C.QUERY
    render_rng = np.random.default_rng([seed, key, 2])
    images = np.empty((len(labels), image_size, image_size, 3), np.uint8)
    for start in range(0, len(labels), _RENDER_CHUNK):
        chunk = labels[start : start + _RENDER_CHUNK]
        images[start : start + len(chunk)] = domain.render(render_rng, classes, chunk, image_size)
    rows = pd.DataFrame(
        {
            C.IMAGE_ID: [f"{i:06d}" for i in range(len(labels))],
            C.PATH: "",
            C.LABEL: labels.astype(np.int64),
            C.CLASS_NAME: [f"{lay.domain}-{c:04d}" for c in labels],
            C.SPLIT: split.astype(str),
        }
    )
    return rows, images


def _expected(lay: MiniLayout) -> dict[str, tuple[int, int]]:
    """Class counts per split (image counts are whatever the seed draws: reported, not fixed)."""
    out = {C.TRAIN: (-1, lay.train_classes)}
    if lay.query_gallery:
        out.update({C.QUERY: (-1, lay.test_classes), C.GALLERY: (-1, lay.test_classes)})
    else:
        out[C.TEST] = (-1, lay.test_classes)
    return out


def _title(lay: MiniLayout) -> str:
    """Its own shape first (counts are in the spec), then what it stands in for: the real
    dataset's counts must never read as this dataset's."""
    per = "2-12" if lay.per_class == "sop" else "-".join(dict.fromkeys(map(str, lay.per_class)))
    real = lay.mirrors.split(" (")[0]
    return f"generated, {per} images per class; stands in for {real}"


for _lay in MINI_LAYOUTS.values():
    DATASETS.register(
        _lay.name,
        DatasetSpec(
            name=_lay.name,
            title=_title(_lay),
            suite="mini",
            license="generated by umlbench; MIT",
            expected=_expected(_lay),
            generate=lambda seed, image_size, _l=_lay: generate_domain(_l, seed, image_size),
        ),
    )
