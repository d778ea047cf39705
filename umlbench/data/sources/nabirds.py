"""NABirds (Cornell Lab of Ornithology): 48,562 photos of 555 North-American bird classes.

Metric-learning split (PUMA ``dataset.py``): the 555 class ids that have images are sorted and
ranked; ranks 0-277 train, 278-554 test. The official ``train_test_split.txt`` is not used.
Downloading needs the Cornell form, so the archive is passed with ``--source``.
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


def parse(raw_dir: Path) -> pd.DataFrame:
    """``images.txt`` (``<uuid> <class:04d>/<uuid hex>.jpg``) + ``image_class_labels.txt``
    (``<uuid> <class id>``) + ``classes.txt`` (every taxonomy node, ``<id> <name>``)."""
    images_txt = locate(raw_dir, "image_class_labels.txt", "nabirds/image_class_labels.txt",
                        dataset="NABirds").parent / "images.txt"
    base = images_txt.parent
    image_dir = base / "images"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: NABirds images folder not found")
    images = read_columns(images_txt, 2)
    class_of = {k: int(v) for k, v in read_columns(base / "image_class_labels.txt", 2)}
    names = {int(k): v for k, v in read_columns(base / "classes.txt", 2)}
    try:
        class_ids = np.array([class_of[image_id] for image_id, _ in images], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"{base / 'image_class_labels.txt'}: no class for image {exc}") from None
    # Ids are non-contiguous taxonomy ids: rank among the sorted ids that have images.
    _, labels = np.unique(class_ids, return_inverse=True)
    return pd.DataFrame({
        C.IMAGE_ID: [image_id for image_id, _ in images],
        C.PATH: [rel_path(raw_dir, image_dir / name) for _, name in images],
        C.LABEL: labels.astype(np.int64),
        C.CLASS_NAME: [names.get(int(c), str(c)) for c in class_ids],
        C.SPLIT: half_split(labels),
    })


_MANUAL = (
    "NABirds is gated: go to https://dl.allaboutbirds.org/nabirds, give your email and accept "
    "the Cornell Lab terms of use, download nabirds.tar.gz "
    "(md5 df21a9e4db349a14e2b08adfd45873bd) and run `umlbench prepare-data --dataset nabirds "
    "--source /path/to/nabirds.tar.gz` (or put it in <data root>/_downloads/)."
)

SPEC = DatasetSpec(
    name="nabirds",
    title="NABirds (555 bird classes)",
    suite="uml",
    license="non-commercial research and education under the Cornell Lab terms of use accepted "
            "on the download form (exact wording unverified)",
    homepage="https://dl.allaboutbirds.org/nabirds",
    resources=(Resource("nabirds.tar.gz", None, md5="df21a9e4db349a14e2b08adfd45873bd"),),
    manual=_MANUAL,
    # 48,562 images in total; the per-half counts (22,909 / 25,653) are third-party, unverified.
    expected={C.TRAIN: (-1, 278), C.TEST: (-1, 277)},
    parse=parse,
    citation="G. Van Horn, S. Branson, R. Farrell, S. Haber, J. Barry, P. Ipeirotis, "
             "P. Perona, S. Belongie. Building a Bird Recognition App and Large Scale Dataset "
             "with Citizen Scientists. CVPR 2015.",
)

DATASETS.register(SPEC.name, SPEC)
