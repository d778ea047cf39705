"""Stanford Online Products (SOP): 120,053 eBay photos of 22,634 products in 12 categories.

Official split (``Ebay_train.txt`` / ``Ebay_test.txt``): 59,551 images of classes 1-11,318
train, 60,502 images of classes 11,319-22,634 test. Label = class_id - 1 (PUMA ``dataset.py``).

Images are keyed by their path (``bicycle_final/111085122871_0.JPG``), not by the files'
``image_id`` column: the official files happen to number train and test images consecutively,
but a re-numbered copy (each file counting from 1) must prepare the same dataset.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from umlbench import const as C
from umlbench.data.real import locate, read_columns, rel_path
from umlbench.data.registry import DATASETS, DatasetSpec, Resource
from umlbench.errors import DataError

__all__ = ["SPEC", "parse"]

_HEADER = ["image_id", "class_id", "super_class_id", "path"]


def _read(path: Path) -> list[list[str]]:
    """One Ebay_*.txt: a header line, then ``image_id class_id super_class_id path``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().split()
    if header != _HEADER:
        raise DataError(f"{path}: header is {header}, expected {_HEADER}")
    return read_columns(path, 4, skip=1)


def parse(raw_dir: Path) -> pd.DataFrame:
    """``Ebay_train.txt`` + ``Ebay_test.txt`` -> manifest rows; ``image_id`` is the listed path
    (``bicycle_final/111085122871_0.JPG``, relative to the ``Stanford_Online_Products`` folder),
    and a path listed twice is a :class:`DataError` naming it."""
    train_txt = locate(raw_dir, "Ebay_train.txt", "Stanford_Online_Products/Ebay_train.txt",
                       dataset="Stanford Online Products")
    base = train_txt.parent
    frames = []
    for split, path in ((C.TRAIN, train_txt), (C.TEST, base / "Ebay_test.txt")):
        rows = _read(path)
        frames.append(pd.DataFrame({
            C.IMAGE_ID: [r[3] for r in rows],
            C.PATH: [rel_path(raw_dir, base / r[3]) for r in rows],
            C.LABEL: [int(r[1]) - 1 for r in rows],
            # "bicycle_final/111085122871_0.JPG", class 1 -> "bicycle/1"
            C.CLASS_NAME: [f"{r[3].split('/')[0].removesuffix('_final')}/{r[1]}" for r in rows],
            C.SPLIT: split,
        }))
    first = raw_dir / frames[0][C.PATH].iloc[0]
    if not first.parent.is_dir():
        raise DataError(f"{first.parent}: SOP image folder not found")
    return pd.concat(frames, ignore_index=True)


SPEC = DatasetSpec(
    name="sop",
    title="Stanford Online Products (22,634 products)",
    suite="uml",
    license="research use; see the LICENSE file inside the zip (content unverified)",
    homepage="https://cvgl.stanford.edu/projects/lifted_struct/",
    resources=(
        Resource(
            "Stanford_Online_Products.zip",
            # The authors' Google Drive copy (the FTP link on the project page is often
            # blocked); confirm=t skips Drive's large-file interstitial page.
            "https://drive.usercontent.google.com/download?id=1TclrpQOF_ullUP99wk_gjGN8pKvtErG8"
            "&export=download&authuser=0&confirm=t",
            md5="7f73d41a2f44250d4779881525aea32e",
            sha256="b04fa78210e69fab050ce73939550e1cd0f96890bdd98ec9fee732c3b756ef48",
            size=3_083_860_082,
        ),
    ),
    expected={C.TRAIN: (59_551, 11_318), C.TEST: (60_502, 11_316)},
    recall_ks=(1, 10, 100, 1000),
    parse=parse,
    citation="H. O. Song, Y. Xiang, S. Jegelka, S. Savarese. Deep Metric Learning via Lifted "
             "Structured Feature Embedding. CVPR 2016.",
)

DATASETS.register(SPEC.name, SPEC)
