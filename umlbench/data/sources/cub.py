"""CUB-200-2011: 11,788 photos of 200 North-American bird species (Caltech).

Metric-learning split (PUMA ``dataset.py``): classes 1-100 train (5,864 images), classes
101-200 test (5,924). The official ``train_test_split.txt`` is ignored, as in PUMA.
Label = class id - 1, the order of torchvision's ImageFolder over ``images/`` that PUMA uses.
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
    """``images.txt`` + ``image_class_labels.txt`` + ``classes.txt`` -> manifest rows.

    Files (official README): ``<image_id> <image_name>``, ``<image_id> <class_id>``,
    ``<class_id> <class_name>``, space-separated, 1-based ids, no header.
    """
    images_txt = locate(raw_dir, "images.txt", "CUB_200_2011/images.txt", dataset="CUB-200-2011")
    base = images_txt.parent
    image_dir = base / "images"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: CUB images folder not found")
    images = read_columns(images_txt, 2)
    class_of = dict(read_columns(base / "image_class_labels.txt", 2))
    names = {int(k): v for k, v in read_columns(base / "classes.txt", 2)}
    try:
        class_ids = np.array([int(class_of[image_id]) for image_id, _ in images])
    except KeyError as exc:
        raise DataError(f"{base / 'image_class_labels.txt'}: no class for image {exc}") from None
    labels = class_ids - 1  # ids are 1..200, contiguous
    return pd.DataFrame({
        C.IMAGE_ID: [image_id for image_id, _ in images],
        C.PATH: [rel_path(raw_dir, image_dir / name) for _, name in images],
        C.LABEL: labels,
        # The image folder name, e.g. "001.Black_footed_Albatross" (ooDML's split files use it).
        C.CLASS_NAME: [names.get(c, str(c)) for c in class_ids],
        C.SPLIT: half_split(labels),
    })


SPEC = DatasetSpec(
    name="cub",
    title="CUB-200-2011 (birds, 200 species)",
    suite="uml",
    license="research use; Flickr images, no explicit license in the release (unverified)",
    homepage="https://data.caltech.edu/records/65de6-vp158",
    resources=(
        Resource(
            "CUB_200_2011.tgz",
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
            md5="97eceeb196236b17998738112f37df78",
            sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
            size=1_150_585_339,
        ),
    ),
    expected={C.TRAIN: (5_864, 100), C.TEST: (5_924, 100)},
    parse=parse,
    citation="C. Wah, S. Branson, P. Welinder, P. Perona, S. Belongie. The Caltech-UCSD "
             "Birds-200-2011 Dataset. Caltech CNS-TR-2011-001, 2011.",
)

DATASETS.register(SPEC.name, SPEC)
