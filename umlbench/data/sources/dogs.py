"""Stanford Dogs: 20,580 ImageNet photos of 120 dog breeds.

Metric-learning split (PUMA ``dataset.py``): all images of ``lists/file_list.mat``; breeds 1-60
train (10,651 images), 61-120 test (9,929). Label = ``labels`` - 1 (breeds in sorted WordNet-id
order). The official 100-per-class ``train_list.mat`` split is not used.
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

_BASE_URL = "http://vision.stanford.edu/aditya86/ImageNetDogs/"


def _load_file_list(path: Path) -> tuple[list[str], np.ndarray]:
    """file_list.mat -> (file_list (N,) like ``n02085620-Chihuahua/n02085620_5927.jpg``,
    labels (N,) int 1..120). ``annotation_list`` (same names without .jpg) is not needed."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True)
        files = [str(f) for f in np.atleast_1d(mat["file_list"])]
        labels = np.atleast_1d(mat["labels"]).astype(np.int64)
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not the official file_list.mat ({type(exc).__name__}: "
                        f"{exc})") from None
    if len(files) != len(labels):
        raise DataError(f"{path}: {len(files)} files but {len(labels)} labels")
    return files, labels


def parse(raw_dir: Path) -> pd.DataFrame:
    """``file_list.mat`` (from lists.tar) + ``Images/`` (from images.tar) -> manifest rows."""
    file_list = locate(raw_dir, "file_list.mat", "lists/file_list.mat", "dogs/file_list.mat",
                       dataset="Stanford Dogs")
    # Images/ sits next to the lists (lists.tar unpacks without a folder) or one level up.
    near = [file_list.parent / "Images", file_list.parent.parent / "Images"]
    image_dir = next((d for d in near if d.is_dir()), None) or \
        locate(raw_dir, "Images", dataset="Stanford Dogs")
    files, raw_labels = _load_file_list(file_list)
    labels = raw_labels - 1
    return pd.DataFrame({
        C.IMAGE_ID: [Path(f).stem for f in files],
        C.PATH: [rel_path(raw_dir, image_dir / f) for f in files],
        C.LABEL: labels,
        # "n02085620-Chihuahua/..." -> "Chihuahua"
        C.CLASS_NAME: [f.split("/")[0].split("-", 1)[-1] for f in files],
        C.SPLIT: half_split(labels),
    })


SPEC = DatasetSpec(
    name="dogs",
    title="Stanford Dogs (120 breeds)",
    suite="uml",
    license="research use; ImageNet images under the ImageNet terms (wording unverified)",
    homepage=_BASE_URL,
    resources=(
        Resource(
            "images.tar", _BASE_URL + "images.tar",
            md5="1bb1f2a596ae7057f99d7d75860002ef",
            sha256="a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58",
            size=793_579_520,
        ),
        Resource(
            "lists.tar", _BASE_URL + "lists.tar",
            md5="edbb9f16854ec66506b5f09b583e0656",
            sha256="34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c",
            size=481_280,
        ),
    ),
    # Per-half counts computed from a per-breed listing that sums to 20,580 (see the notes).
    expected={C.TRAIN: (10_651, 60), C.TEST: (9_929, 60)},
    parse=parse,
    citation="A. Khosla, N. Jayadevaprakash, B. Yao, L. Fei-Fei. Novel Dataset for "
             "Fine-Grained Image Categorization: Stanford Dogs. CVPR Workshop on FGVC, 2011.",
)

DATASETS.register(SPEC.name, SPEC)
