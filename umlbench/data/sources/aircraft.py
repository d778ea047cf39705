"""FGVC-Aircraft 2013b: 10,000 photos of 100 aircraft variants (100 each).

Metric-learning split (PUMA ``dataset.py``): trainval + test images together; variant names
are sorted and ranked, ranks 0-49 train (5,000 images), 50-99 test (5,000). PUMA sorts the
names with spaces replaced by underscores (``'_'.join(line.split()[1:])``), which orders e.g.
``BAE-125`` before ``BAE 146-200``; the same key is used here. The copyright banner at the
bottom of each image is kept, as in PUMA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from umlbench import const as C
from umlbench.data.real import half_split, locate, read_columns, rel_path
from umlbench.data.registry import DATASETS, DatasetSpec, Resource
from umlbench.errors import DataError

__all__ = ["SPEC", "parse"]


def _sort_key(variant: str) -> str:
    return "_".join(variant.split())


def _read_variants(data_dir: Path) -> list[list[str]]:
    """``<7-digit id> <variant name>`` lines (names keep spaces and slashes, e.g. ``F/A-18``)
    of trainval then test; the ``trainvaltest`` union is used only if the two are missing."""
    trainval, test = data_dir / "images_variant_trainval.txt", data_dir / "images_variant_test.txt"
    if trainval.is_file() and test.is_file():
        return read_columns(trainval, 2) + read_columns(test, 2)
    union = data_dir / "images_variant_trainvaltest.txt"
    if union.is_file():
        return read_columns(union, 2)
    raise DataError(f"{trainval}: file not found (FGVC-Aircraft 2013b release)")


def parse(raw_dir: Path) -> pd.DataFrame:
    """``data/images_variant_{trainval,test}.txt`` + ``data/images/<id>.jpg`` -> manifest rows."""
    found = locate(raw_dir, "data/images_variant_test.txt", "images_variant_test.txt",
                   "data/images_variant_trainvaltest.txt", "images_variant_trainvaltest.txt",
                   dataset="FGVC-Aircraft 2013b")
    data_dir = found.parent
    image_dir = data_dir / "images"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: FGVC-Aircraft images folder not found")
    rows = _read_variants(data_dir)
    variants = sorted({v for _, v in rows}, key=_sort_key)
    rank = {v: i for i, v in enumerate(variants)}
    labels = np.array([rank[v] for _, v in rows], dtype=np.int64)
    return pd.DataFrame({
        C.IMAGE_ID: [i for i, _ in rows],
        C.PATH: [rel_path(raw_dir, image_dir / f"{i}.jpg") for i, _ in rows],
        C.LABEL: labels,
        C.CLASS_NAME: [v for _, v in rows],
        C.SPLIT: half_split(labels),
    })


SPEC = DatasetSpec(
    name="aircraft",
    title="FGVC-Aircraft 2013b (100 variants)",
    suite="uml",
    license="images for non-commercial research purposes only; photographers keep the copyright",
    homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
    resources=(
        Resource(
            "fgvc-aircraft-2013b.tar.gz",
            "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/"
            "fgvc-aircraft-2013b.tar.gz",
            md5="d4acdd33327262359767eeaa97a4f732",
        ),
    ),
    expected={C.TRAIN: (5_000, 50), C.TEST: (5_000, 50)},
    parse=parse,
    citation="S. Maji, E. Rahtu, J. Kannala, M. Blaschko, A. Vedaldi. Fine-Grained Visual "
             "Classification of Aircraft. arXiv:1306.5151, 2013.",
)

DATASETS.register(SPEC.name, SPEC)
