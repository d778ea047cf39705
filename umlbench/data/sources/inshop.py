"""In-shop Clothes Retrieval (DeepFashion): 52,712 shop photos of 7,982 clothing items.

Official split (``Eval/list_eval_partition.txt``): 25,882 train images of 3,997 items;
14,218 query and 12,612 gallery images of the other 3,985 items. Labels (PUMA ``dataset.py``):
train items are ranked by their item number (``id_00000001`` -> 1) to 0..3,996; query and
gallery items, together, to 3,997..7,981.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from umlbench import const as C
from umlbench.data.real import locate, read_columns, rel_path
from umlbench.data.registry import DATASETS, DatasetSpec, Resource
from umlbench.errors import DataError

__all__ = ["SPEC", "parse"]

_HEADER = ["image_name", "item_id", "evaluation_status"]
_STATUS = (C.TRAIN, C.QUERY, C.GALLERY)


def _read_partition(path: Path) -> list[list[str]]:
    """Line 1: number of images; line 2: header; then ``<image_name> <item_id> <status>``
    with columns padded by runs of spaces."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        count, header = fh.readline().strip(), fh.readline().split()
    if not count.isdigit() or header != _HEADER:
        raise DataError(f"{path}: expected a count line and the header {' '.join(_HEADER)!r}")
    rows = read_columns(path, 3, skip=2)
    if len(rows) != int(count):
        raise DataError(f"{path}: lists {len(rows)} images but its first line says {count}")
    bad = {r[2] for r in rows} - set(_STATUS)
    if bad:
        raise DataError(f"{path}: unknown evaluation status {sorted(bad)}")
    return rows


def _image_root(raw_dir: Path, partition: Path, first: str) -> Path:
    """The folder that holds ``img/`` (the official layout has it in ``Img/``)."""
    top = first.split("/")[0]
    candidates = [partition.parent.parent / "Img", partition.parent / "Img", partition.parent,
                  raw_dir / "Img", raw_dir]
    for cand in candidates:
        if (cand / top).is_dir():
            return cand
    raise DataError(f"{partition.parent}: In-shop image folder {top}/ not found; unzip "
                    "Img/img.zip (or pass the folder that contains img/)")


def _item_number(item_id: str) -> int:
    try:
        return int(item_id.split("_")[-1])
    except ValueError:
        raise DataError(f"In-shop: malformed item id {item_id!r}") from None


def parse(raw_dir: Path) -> pd.DataFrame:
    """``list_eval_partition.txt`` -> manifest rows; ``image_id`` is the official image name."""
    partition = locate(raw_dir, "Eval/list_eval_partition.txt", "list_eval_partition.txt",
                       "Inshop_Clothes/Eval/list_eval_partition.txt", dataset="In-shop")
    rows = _read_partition(partition)
    root = _image_root(raw_dir, partition, rows[0][0])
    split = np.array([r[2] for r in rows])
    numbers = np.array([_item_number(r[1]) for r in rows], dtype=np.int64)
    is_train = split == C.TRAIN
    labels = np.empty(len(rows), dtype=np.int64)
    # np.unique sorts numerically, like PUMA's conversion tables.
    train_items, train_rank = np.unique(numbers[is_train], return_inverse=True)
    _, eval_rank = np.unique(numbers[~is_train], return_inverse=True)
    labels[is_train] = train_rank
    labels[~is_train] = len(train_items) + eval_rank
    return pd.DataFrame({
        C.IMAGE_ID: [r[0] for r in rows],
        C.PATH: [rel_path(raw_dir, root / r[0]) for r in rows],
        C.LABEL: labels,
        C.CLASS_NAME: [r[1] for r in rows],
        C.SPLIT: split,
    })


_MANUAL = (
    "In-shop is shared through Google Drive: open "
    "https://drive.google.com/drive/folders/0B7EVK8r0v71pVDZFQXRsMDZCX1E"
    "?resourcekey=0-4R4v6zl4CWhHTsUGOsTstw (linked from "
    "http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html) and download "
    "Img/img.zip and Eval/list_eval_partition.txt (or the whole benchmark folder). If the zip "
    "asks for a password, request it with the DeepFashion agreement form on the project page "
    "and unzip it yourself. Then run `umlbench prepare-data --dataset inshop --source FOLDER` "
    "with the folder that holds both files (Img/ and Eval/ sub-folders are fine), or put both "
    "files in <data root>/_downloads/."
)

SPEC = DatasetSpec(
    name="inshop",
    title="In-shop Clothes Retrieval (DeepFashion, 7,982 items)",
    suite="uml",
    license="non-commercial research and educational use only (DeepFashion terms); the authors "
            "do not own the image copyrights",
    homepage="http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html",
    resources=(
        Resource("img.zip", None),  # no published checksum (unverified); contents are checked
        Resource("list_eval_partition.txt", None, extract=False),
    ),
    manual=_MANUAL,
    # Every test item has both query and gallery images (3,985 each; unverified on the file).
    expected={C.TRAIN: (25_882, 3_997), C.QUERY: (14_218, 3_985), C.GALLERY: (12_612, 3_985)},
    recall_ks=(1, 10, 20, 30),
    parse=parse,
    citation="Z. Liu, P. Luo, S. Qiu, X. Wang, X. Tang. DeepFashion: Powering Robust Clothes "
             "Recognition and Retrieval with Rich Annotations. CVPR 2016.",
)

DATASETS.register(SPEC.name, SPEC)
