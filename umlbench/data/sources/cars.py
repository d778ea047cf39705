"""Cars196 (Stanford Cars): 16,185 photos of 196 car models, in the ``car_ims`` layout.

Metric-learning split (PUMA ``dataset.py``): classes 1-98 train (8,054 images), 99-196 test
(8,131), all images from ``cars_annos.mat`` (its ``test`` flag is ignored). Label = class - 1.
The Stanford host is offline, so the files come from a mirror (see ``SPEC.manual``).

:func:`layout_names` maps the other common layout to ``car_ims``: the one of
Revisiting-DML/ooDML (``cars196/images/<class name>/<devkit file name>``), which the published
ooDML split files name images in. It is built from the devkit's ``cars_train/`` and
``cars_test/`` (8,144 + 8,041 images named ``00001.jpg``...), with class folders named as
``cars_meta.mat`` but '/' written '-' (``Ram C-V Cargo Van Minivan 2012``). A test image whose
number is also a training image of the same class is stored as ``<number>_2.jpg`` (46 such
pairs; every ``_2`` name in the shipped Cars pickle is one of them). umlbench reads the
un-suffixed name as the *train* image and ``_2`` as the *test* one (training images copied
first); the layout's build script is not published, so this is the one unverified assumption.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from umlbench import const as C
from umlbench.data.real import half_split, locate, rel_path
from umlbench.data.registry import DATASETS, DatasetSpec, Resource
from umlbench.errors import DataError

__all__ = ["SPEC", "parse", "layout_names", "class_folder"]


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


def class_folder(name: str) -> str:
    """The class folder name of the Revisiting-DML/ooDML layout ('/' cannot be in a folder)."""
    return name.replace("/", "-")


_BOX = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


def _boxes(path: Path, name_field: str) -> list[tuple[str, int, int | None, tuple[int, ...]]]:
    """(file name, class 1-based, test flag or None, bounding box) per entry of a Cars .mat."""
    from scipy.io import loadmat

    try:
        ann = np.atleast_1d(loadmat(path, squeeze_me=True)["annotations"])
        fields = ann.dtype.names or ()
        if "class" not in fields:
            raise DataError(f"{path}: no class labels (the devkit's cars_test_annos.mat has "
                            "none; use cars_test_annos_withlabels.mat)")
        test = ann["test"] if "test" in fields else [None] * len(ann)
        return [(str(n), int(c), None if t is None else int(t), tuple(int(b) for b in box))
                for n, c, t, *box in zip(ann[name_field], ann["class"], test,
                                         *(ann[f] for f in _BOX))]
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not an official Cars annotation file ({type(exc).__name__}: "
                        f"{exc})") from None


def layout_names(raw_dir: Path, devkit_dir: Path,
                 same_picture: Callable[[list[str]], bool] | None = None,
                 ) -> tuple[dict[tuple[int, str], str], dict[tuple[int, str], str]]:
    """Map (label, layout file name) to the ``car_ims`` image id, e.g. (13, "04399.jpg") ->
    "001234"; returns (mapped, unmapped) with a reason per unmapped name.

    Each devkit image (``cars_train_annos.mat`` / ``cars_test_annos_withlabels.mat``: file
    name, class, box) is matched to the ``cars_annos.mat`` entry with the same class, train/test
    flag and bounding box. Where several entries share all of them (one pair of test images in
    the official files), they are matched in order if ``same_picture(image ids)`` says the
    candidates show the same picture, and left unmapped otherwise.
    """
    from umlbench.data.real import locate

    # The cars_annos.mat the manifest was built from; the devkit folder's as a fallback.
    try:
        annos = locate(raw_dir, "cars_annos.mat", "cars196/cars_annos.mat", dataset="Cars196")
    except DataError:
        annos = locate(devkit_dir, "cars_annos.mat", dataset="Cars196")
    train = locate(devkit_dir, "cars_train_annos.mat", "devkit/cars_train_annos.mat",
                   dataset="Cars196 devkit")
    test = locate(devkit_dir, "cars_test_annos_withlabels.mat",
                  "devkit/cars_test_annos_withlabels.mat", dataset="Cars196 devkit")
    targets: dict[tuple, list[str]] = defaultdict(list)
    for rel, cls, flag, box in _boxes(annos, "relative_im_path"):
        targets[(cls, flag, box)].append(Path(rel).stem)
    sources: dict[tuple, list[tuple[int, str]]] = defaultdict(list)
    train_names: set[tuple[int, str]] = set()
    for flag, path in ((0, train), (1, test)):
        for fname, cls, _, box in _boxes(path, "fname"):
            name = fname
            if flag == 1 and (cls, fname) in train_names:
                name = f"{Path(fname).stem}_2{Path(fname).suffix}"
            elif flag == 0:
                train_names.add((cls, fname))
            sources[(cls, flag, box)].append((cls - 1, name))
    mapped, unmapped = {}, {}
    for key, names in sources.items():
        found = targets.get(key, [])
        cls, flag, box = key
        where = f"class {cls}, {'test' if flag else 'train'}, box {box}"
        if len(found) == len(names) and (len(found) == 1 or (same_picture is not None
                                                             and same_picture(found))):
            mapped.update(zip(names, found))
            continue
        reason = (f"no cars_annos.mat entry with {where}" if not found else
                  f"{len(found)} cars_annos.mat entries ({', '.join(found)}) share {where} "
                  f"with {len(names)} devkit image(s) and do not show the same picture")
        unmapped.update({n: reason for n in names})
    return mapped, unmapped


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
