"""Oxford Flowers-102: 8,189 photos of 102 flower categories.

Metric-learning split (PUMA ``dataset.py``): the union of ``trnid``, ``valid`` and ``tstid``
from ``setid.mat`` (all images), classes 1-51 train (3,493 images), 52-102 test (4,696).
Label = ``imagelabels.mat`` label - 1. The release ships no class names.
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

_BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"


def _mat(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True)
        return [np.atleast_1d(mat[k]).astype(np.int64) for k in keys]
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not the official file ({type(exc).__name__}: {exc})") from None


def parse(raw_dir: Path) -> pd.DataFrame:
    """``imagelabels.mat`` (``labels`` 1xN, 1..102) + ``setid.mat`` (``trnid``, ``valid``,
    ``tstid``: 1-based image ids) + ``jpg/image_%05d.jpg`` -> manifest rows."""
    labels_mat = locate(raw_dir, "imagelabels.mat", "flowers/imagelabels.mat",
                        dataset="Flowers-102")
    (image_labels,) = _mat(labels_mat, ("labels",))
    setid = labels_mat.parent / "setid.mat"
    if not setid.is_file():
        raise DataError(f"{setid}: file not found (Flowers-102 release)")
    ids = np.concatenate(_mat(setid, ("trnid", "valid", "tstid")))  # PUMA's order
    if ids.min() < 1 or ids.max() > len(image_labels) or len(np.unique(ids)) != len(ids):
        raise DataError(f"{setid}: image ids out of range or repeated")
    image_dir = labels_mat.parent / "jpg"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: Flowers-102 images folder not found (unpack "
                        "102flowers.tgz next to imagelabels.mat)")
    labels = image_labels[ids - 1] - 1
    names = [f"image_{i:05d}" for i in ids]
    return pd.DataFrame({
        C.IMAGE_ID: names,
        C.PATH: [rel_path(raw_dir, image_dir / f"{n}.jpg") for n in names],
        C.LABEL: labels,
        C.CLASS_NAME: [f"class_{c + 1:03d}" for c in labels],
        C.SPLIT: half_split(labels),
    })


SPEC = DatasetSpec(
    name="flowers",
    title="Oxford Flowers-102 (102 categories)",
    suite="uml",
    license="research use; no license stated in the release (unverified)",
    homepage=_BASE_URL,
    resources=(
        Resource(
            "102flowers.tgz", _BASE_URL + "102flowers.tgz",
            md5="52808999861908f626f3c1f4e79d11fa",
            sha256="2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246",
            size=344_862_509,
        ),
        Resource(
            "imagelabels.mat", _BASE_URL + "imagelabels.mat",
            md5="e0620be6f572b9609742df49c70aed4d",
            sha256="4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d",
            size=502, extract=False,
        ),
        Resource(
            "setid.mat", _BASE_URL + "setid.mat",
            md5="a5357ecc9cb78c4bef273ce3793fc85c",
            sha256="46b8678f91fd95d3c8f4feab80d271a6c834a1dd896fe29fd3e6ad9ce5c8dccd",
            size=14_989, extract=False,
        ),
    ),
    expected={C.TRAIN: (3_493, 51), C.TEST: (4_696, 51)},
    parse=parse,
    citation="M.-E. Nilsback, A. Zisserman. Automated Flower Classification over a Large "
             "Number of Classes. ICVGIP 2008.",
)

DATASETS.register(SPEC.name, SPEC)
