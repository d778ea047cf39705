"""A Cars196 fixture in both official layouts, for the ooDML split-file import.

``make_cars_devkit(dir, episode_images)`` writes what ``prepare-data --dataset cars`` reads
(``car_ims.tgz`` + ``cars_annos.mat``, structures as the official files) and, next to it, the
devkit annotations the ooDML layout was built from (``devkit/cars_train_annos.mat``,
``devkit/cars_test_annos_withlabels.mat``: fields bbox_x1..bbox_y2, class, fname). The classes
are the 196 real class names given (``cars_annos.mat`` writes ``Ram C/V ...`` with its '/'),
ordered alphabetically; ``episode_images`` names, per class, the layout file names that must
exist (``04399.jpg``: a devkit image of that class; ``06189_2.jpg``: the test image 06189 of a
class whose training image 06189 is the same class, so both exist). Every class also gets one
unnamed image, and one class a pair of test images with identical class, box and picture (the
official files have one such pair). Boxes are otherwise distinct, so the ground truth of the
mapping is known by construction and returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import savemat

from tests.data.fixtures import pack_tar, write_jpeg

__all__ = ["CarsDevkit", "make_cars_devkit", "mat_name"]

_BOX = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


def mat_name(layout_name: str) -> str:
    """The class name as cars_annos.mat writes it (the layout wrote its '/' as '-')."""
    return layout_name.replace("Ram C-V", "Ram C/V")


@dataclass
class CarsDevkit:
    downloads: Path  # --source of prepare-data: car_ims.tgz + cars_annos.mat
    devkit: Path  # --source of prepare-splits --import
    expected: dict[str, tuple[int, int]]
    truth: dict[tuple[int, str], str] = field(default_factory=dict)  # (label, name) -> car_ims id
    duplicates: tuple[str, str] = ("", "")  # car_ims ids of the identical pair


def _struct(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, r in enumerate(rows):
        ann[0, i] = tuple(np.array([r[f]]) if isinstance(r[f], str)
                          else np.array([[r[f]]], np.uint16) for f in fields)
    return ann


def make_cars_devkit(d: Path, classes: list[str],
                     episode_images: dict[str, set[str]]) -> CarsDevkit:
    stage, out, devkit = d / "stage", d / "downloads", d / "devkit"
    out.mkdir(parents=True)
    devkit.mkdir(parents=True)
    classes = sorted(classes)
    images: list[tuple[int, str, int]] = []  # (class 1-based, devkit fname, test flag)
    spare = 9000  # numbers of the unnamed images, outside the published range
    for c, name in enumerate(classes, 1):
        for f in sorted(episode_images.get(name, ())):
            number = f.split(".")[0].split("_")[0]
            if f.endswith("_2.jpg"):
                images += [(c, f"{number}.jpg", 0), (c, f"{number}.jpg", 1)]
            else:
                images.append((c, f, int(number) % 2))
        images.append((c, f"{spare:05d}.jpg", spare % 2))
        spare += 1
    # The identical pair: two test images of class 1, same box, same picture.
    dup_class = 1
    images += [(dup_class, "09990.jpg", 1), (dup_class, "09991.jpg", 1)]
    images.sort(key=lambda r: (r[0], r[2], r[1]))
    annos, train, test = [], [], []
    fx = CarsDevkit(out, devkit, {})
    dups = []
    for i, (c, fname, flag) in enumerate(images):
        rel = f"car_ims/{i + 1:06d}.jpg"
        dup = fname in ("09990.jpg", "09991.jpg")
        box = (3, 4, 50, 40) if dup else (1 + i % 97, 1 + i // 97, 31 + i % 97, 21 + i // 97)
        write_jpeg(stage / rel, 5 if dup else 1000 + i, (12, 10))
        row = dict(zip(_BOX, box), **{"class": c})
        annos.append({**row, "relative_im_path": rel, "test": flag})
        (test if flag else train).append({**row, "fname": fname})
        layout = fname
        if flag and any(r["fname"] == fname and r["class"] == c for r in train):
            layout = fname.replace(".jpg", "_2.jpg")
        fx.truth[(c - 1, layout)] = f"{i + 1:06d}"
        if dup:
            dups.append(f"{i + 1:06d}")
    fx.duplicates = tuple(dups)
    names = np.empty((1, len(classes)), dtype=object)
    names[0, :] = [mat_name(n) for n in classes]
    savemat(out / "cars_annos.mat", {
        "annotations": _struct(annos, ("relative_im_path",) + _BOX + ("class", "test")),
        "class_names": names})
    savemat(devkit / "cars_train_annos.mat", {"annotations": _struct(train, _BOX + ("class",
                                                                                  "fname"))})
    savemat(devkit / "cars_test_annos_withlabels.mat",
            {"annotations": _struct(test, _BOX + ("class", "fname"))})
    pack_tar(stage, ["car_ims"], out / "car_ims.tgz")
    half = len(classes) // 2
    n_train = sum(1 for c, _, _ in images if c <= half)
    fx.expected = {"train": (n_train, half), "test": (len(images) - n_train, len(classes) - half)}
    return fx
