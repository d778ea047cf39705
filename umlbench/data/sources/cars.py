"""Cars196 (Stanford Cars): 16,185 photos of 196 car models, in the ``car_ims`` layout.

Metric-learning split (PUMA ``dataset.py``): classes 1-98 train (8,054 images), 99-196 test
(8,131), all images from ``cars_annos.mat`` (its ``test`` flag is ignored). Label = class - 1.
The Stanford host is offline, so the files come from a mirror (see ``SPEC.manual``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from umlbench import const as C
from umlbench.data.real import half_split, locate, rel_path
from umlbench.data.registry import DATASETS, DatasetSpec, Resource
from umlbench.errors import DataError

__all__ = ["SPEC", "parse"]


def _load_annotations(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """cars_annos.mat -> (relative_im_path (N,), class (N,) 1-based, class_names (196,))."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True)
        ann = np.atleast_1d(mat["annotations"])
        files = [str(f) for f in ann["relative_im_path"]]
        classes = np.array([int(c) for c in ann["class"]], dtype=np.int64)
        names = [str(n) for n in np.atleast_1d(mat["class_names"])]
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not the official cars_annos.mat ({type(exc).__name__}: "
                        f"{exc})") from None
    return files, classes, names


def parse(raw_dir: Path) -> pd.DataFrame:
    """``cars_annos.mat`` (struct array ``annotations`` with fields relative_im_path,
    bbox_x1..bbox_y2, class, test; cell ``class_names``) -> manifest rows."""
    annos = locate(raw_dir, "cars_annos.mat", "cars196/cars_annos.mat", dataset="Cars196")
    files, classes, names = _load_annotations(annos)
    if not files:
        raise DataError(f"{annos}: lists no images")
    # relative_im_path is "car_ims/000001.jpg", relative to the folder holding the .mat file.
    bases = [annos.parent, raw_dir]
    base = next((b for b in bases if (b / files[0]).exists()), None)
    if base is None:
        raise DataError(f"{annos.parent / files[0]}: image not found; unpack car_ims.tgz next "
                        "to cars_annos.mat")
    labels = classes - 1
    return pd.DataFrame({
        C.IMAGE_ID: [Path(f).stem for f in files],
        C.PATH: [rel_path(raw_dir, base / f) for f in files],
        C.LABEL: labels,
        C.CLASS_NAME: [names[c] if 0 <= c < len(names) else str(c + 1) for c in labels],
        C.SPLIT: half_split(labels),
    })


_MANUAL = (
    "The Stanford host of Cars196 (ai.stanford.edu/~jkrause/cars) is offline. Get car_ims.tgz "
    "(md5 d5c8f0aa497503f355e17dc7886c3f14) and cars_annos.mat "
    "(md5 b407c6086d669747186bd1d764ff9dbc) from a mirror, e.g. "
    "https://huggingface.co/datasets/XiN0919/FGVC (car_ims.tgz; unverified to be byte-identical), "
    "put both files in one folder and run `umlbench prepare-data --dataset cars --source "
    "FOLDER` (a folder with car_ims/ unpacked next to cars_annos.mat works too)."
)

SPEC = DatasetSpec(
    name="cars",
    title="Cars196 / Stanford Cars (196 car models)",
    suite="uml",
    license="research use; ImageNet-style web images, no explicit license found (unverified)",
    homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
    resources=(
        Resource("car_ims.tgz", None, md5="d5c8f0aa497503f355e17dc7886c3f14"),
        Resource("cars_annos.mat", None, md5="b407c6086d669747186bd1d764ff9dbc", extract=False),
    ),
    manual=_MANUAL,
    expected={C.TRAIN: (8_054, 98), C.TEST: (8_131, 98)},
    parse=parse,
    citation="J. Krause, M. Stark, J. Deng, L. Fei-Fei. 3D Object Representations for "
             "Fine-Grained Categorization. ICCV Workshops (3dRR), 2013.",
)

DATASETS.register(SPEC.name, SPEC)
