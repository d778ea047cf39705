"""The official PUMA few-shot training subsets: import once, then ``fewshot-train`` uses them.

The official repository publishes the exact K-shot subsets it trained on as
``few_shot/dataset_<DS>_shot_<K>.pkl`` (DS: Aircraft, CUB, Cars, Dogs, Flowers, Inshop,
NABird, SOP; K: 1, 2, 4, 8, 16). Each is a pickled dict of four equally long lists (written by
``All_dataset`` in the official ``dataset.py``):

- ``ys``: the image's class inside its dataset (0-based, official class order),
- ``I``: its index in the official loader (used there only to mask self-matches),
- ``im_paths``: the absolute path on the authors' machine,
- ``ds_ID``: the dataset's official id (CUB 0, Cars 1, SOP 2, In-shop 3, NABirds 4, Dogs 5,
  Flowers 6, Aircraft 7).

Every training class appears exactly K times; classes with fewer than K images were sampled
with replacement, so an image can appear more than once, and is then trained on that often.

Paths are matched to a prepared dataset by their **dataset-relative tail**, the part the
official loader appends to the dataset's folder (:data:`TAILS`): e.g.
``/home/…/Data/DML/CUB_200_2011/images/001.Black_footed_Albatross/x.jpg`` ->
``images/001.Black_footed_Albatross/x.jpg``, which must end a manifest path. Each match must
also carry the same class, so a subset can never silently train on the wrong labels. (One
quirk: the authors' CUB folder held Jupyter checkpoint copies of three images, which the
official loader listed as extra images; they are mapped to the files they copy.)
``import_subsets`` writes one JSON per (dataset, K) under ``<data root>/splits/fewshot-train/``;
:func:`load_subset` reads it back as manifest rows.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import time
from pathlib import Path

import numpy as np

from umlbench import const as C
from umlbench.data.prepare import Prepared, load_prepared, sha256_file
from umlbench.errors import DataError, UserError

__all__ = ["OFFICIAL", "TAILS", "import_subsets", "load_subset", "read_official_pickle",
           "subset_path"]

FORMAT = "umlbench-fewshot-subset"
VERSION = 1

# Official file name part -> (umlbench dataset, official ds_ID).
OFFICIAL: dict[str, tuple[str, int]] = {
    "CUB": ("cub", 0), "Cars": ("cars", 1), "SOP": ("sop", 2), "Inshop": ("inshop", 3),
    "NABird": ("nabirds", 4), "Dogs": ("dogs", 5), "Flowers": ("flowers", 6),
    "Aircraft": ("aircraft", 7),
}

# Number of trailing path components that identify an image inside its dataset: what the
# official dataset.py joins onto each dataset's folder (folder in brackets).
TAILS: dict[str, int] = {
    "cub": 3,  # [CUB_200_2011/] images/<class folder>/<file>
    "cars": 2,  # [cars196/] car_ims/<file>            (cars_annos.mat relative_im_path)
    "sop": 2,  # [Stanford_Online_Products/] <category>_final/<file>   (Ebay_*.txt path)
    "inshop": 5,  # [Inshop_Clothes/Img/] img/<gender>/<category>/<item id>/<file>
    "nabirds": 3,  # [nabirds/] images/<class dir>/<file>
    "dogs": 3,  # [dogs/] Images/<wnid-breed>/<file>     (file_list.mat)
    "flowers": 2,  # [flowers/] jpg/image_<5 digits>.jpg
    "aircraft": 2,  # [fgvc-aircraft-2013b/data/] images/<image id>.jpg
}

_NAME = re.compile(r"^dataset_([A-Za-z]+)_shot_(\d+)\.pkl$")
_KEYS = ("ys", "I", "im_paths", "ds_ID")

# Only containers, numbers and strings are expected. numpy arrays and scalars (what a subset
# regenerated with numpy-typed labels would hold) are admitted through numpy's own
# reconstructors; their contents pass through find_class again, so no other callable loads.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _plain(values, what: str, path: Path, kind: type) -> list:
    """A list/tuple/1-D array of ``kind`` values as a plain Python list."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise DataError(f"{path}: {what} must be one-dimensional, got shape {values.shape}")
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise DataError(f"{path}: {what} must be a list, got {type(values).__name__}")
    out = []
    for v in values:
        v = v.item() if isinstance(v, np.generic) else v
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise DataError(f"{path}: {what} must hold integers, got {v!r}")
        if kind is str and not isinstance(v, str):
            raise DataError(f"{path}: {what} must hold paths, got {v!r}")
        out.append(v)
    return out


def read_official_pickle(path: Path) -> dict[str, list]:
    """Read one official subset file with a restricted unpickler.

    Returns:
        {"ys": [int], "I": [int], "im_paths": [str], "ds_ID": [int]}, equally long.
    Raises:
        DataError: naming the file, when it is not such a dict (or tries to load code).
    """
    try:
        with open(path, "rb") as fh:
            data = _SafeUnpickler(fh).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as exc:
        raise DataError(f"{path}: not an official few-shot subset pickle ({exc})") from None
    if not isinstance(data, dict) or set(data) != set(_KEYS):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: expected a dict with keys {list(_KEYS)}, got {got}")
    out = {k: _plain(data[k], k, path, str if k == "im_paths" else int) for k in _KEYS}
    if len({len(v) for v in out.values()}) != 1 or not out["ys"]:
        raise DataError(f"{path}: ys, I, im_paths and ds_ID must be equally long and non-empty")
    return out


def subset_path(root: Path, dataset: str, shots: int) -> Path:
    return root / "splits" / "fewshot-train" / f"{dataset}-k{shots}.json"


def _tail(path: str, depth: int) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[\\/]+", path) if p)[-depth:]


def _original(path: str) -> str:
    """A Jupyter checkpoint copy -> the file it copies (``d/.ipynb_checkpoints/x-checkpoint.jpg``
    -> ``d/x.jpg``); other paths unchanged.

    The authors' CUB folder held such copies, and torchvision's ImageFolder, which walks class
    folders recursively, listed them as images: the official CUB 16-shot subset has three.
    """
    parts = re.split(r"[\\/]+", path)
    if len(parts) >= 2 and parts[-2] == ".ipynb_checkpoints":
        stem, dot, ext = parts[-1].rpartition(".")
        if stem.endswith("-checkpoint"):
            return "/".join(parts[:-2] + [stem.removesuffix("-checkpoint") + dot + ext])
    return path


def _match(data: dict[str, list], prep: Prepared, shots: int, source: Path) -> list[str]:
    """The manifest image ids of the subset's images, in the file's order (repeats kept)."""
    name = prep.name
    m = prep.manifest
    depth = TAILS[name]
    index: dict[tuple[str, ...], int] = {}
    for i, p in enumerate(m[C.PATH].tolist()):
        index.setdefault(_tail(p, depth), i)
    labels = m[C.LABEL].to_numpy()
    is_train = (m[C.SPLIT] == C.TRAIN).to_numpy()
    ids = m[C.IMAGE_ID].tolist()
    out, rows = [], []
    for path, y in zip(data["im_paths"], data["ys"]):
        row = index.get(_tail(_original(path), depth))
        if row is None:
            raise DataError(f"{source}: {path} matches no image of the prepared {name} "
                            f"(looked for a manifest path ending in "
                            f"{'/'.join(_tail(_original(path), depth))})")
        if not is_train[row]:
            raise DataError(f"{source}: {path} is not a training image of {name}")
        if labels[row] != y:
            raise DataError(f"{source}: {path} has class {y} in the subset but "
                            f"{labels[row]} in the prepared {name}")
        out.append(ids[row])
        rows.append(row)
    train_classes = np.unique(labels[is_train])
    classes, counts = np.unique(labels[rows], return_counts=True)
    if len(classes) != len(train_classes) or (counts != shots).any():
        raise DataError(f"{source}: expected {shots} images for each of the "
                        f"{len(train_classes)} training classes of {name}, got "
                        f"{len(classes)} classes with {counts.min()}-{counts.max()} images")
    return out


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def import_subsets(folder: Path, root: Path, datasets: list[str] | None = None) -> list[dict]:
    """Import every ``dataset_<DS>_shot_<K>.pkl`` in ``folder`` for the prepared datasets.

    Args:
        datasets: only these umlbench dataset names (default: all eight).
    Returns:
        one summary per (dataset, K) file written: path, dataset, shots, images (K x training
        classes), distinct (fewer when a class has under K images), checkpoint_copies.
    Raises:
        UserError: no official files in ``folder``; DataError: a file that does not fit the
        prepared dataset (naming the file and the first path that does not match).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--import {folder}: not a folder (give the official few_shot/ folder)")
    wanted = set(datasets) if datasets else {d for d, _ in OFFICIAL.values()}
    unknown = wanted - {d for d, _ in OFFICIAL.values()}
    if unknown:
        raise UserError(f"official few-shot subsets exist only for the uml datasets, not "
                        f"{sorted(unknown)}")
    files = []
    for path in sorted(folder.iterdir()):
        hit = _NAME.match(path.name)
        if hit and hit.group(1) in OFFICIAL and OFFICIAL[hit.group(1)][0] in wanted:
            files.append((OFFICIAL[hit.group(1)], int(hit.group(2)), path))
    if not files:
        raise UserError(f"--import {folder}: no dataset_<DS>_shot_<K>.pkl files for "
                        f"{', '.join(sorted(wanted))}")
    written = []
    for (name, ds_id), shots, path in files:
        data = read_official_pickle(path)
        bad = {d for d in data["ds_ID"] if d != ds_id}
        if bad:
            raise DataError(f"{path}: ds_ID {sorted(bad)} is not {name}'s official id {ds_id}")
        prep = load_prepared(root, name)
        image_ids = _match(data, prep, shots, path)
        out = subset_path(root, name, shots)
        summary = {"dataset": name, "shots": shots, "images": len(image_ids),
                   "distinct": len(set(image_ids)),
                   "checkpoint_copies": sum(_original(p) != p for p in data["im_paths"])}
        _write_json(out, {
            "format": FORMAT, "version": VERSION, **summary, "origin": "official",
            "source": str(path.resolve()), "source_sha256": sha256_file(path),
            "manifest_sha256": prep.ready.get("sha256", {}).get(C.MANIFEST_FILE),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "image_ids": image_ids,
        })
        written.append({**summary, "path": out})
    return written


def load_subset(root: Path, prep: Prepared, shots: int) -> np.ndarray | None:
    """Manifest rows (S,) int64 of the imported official K-shot subset of ``prep`` (repeats
    kept, in the file's order), or None when none was imported."""
    path = subset_path(root, prep.name, shots)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable few-shot subset ({exc})") from None
    if data.get("format") != FORMAT or data.get("version", 0) > VERSION:
        raise DataError(f"{path}: not a umlbench few-shot subset file of version <= {VERSION}")
    pos = {iid: i for i, iid in enumerate(prep.manifest[C.IMAGE_ID].tolist())}
    missing = [i for i in data["image_ids"] if i not in pos]
    if missing:
        raise DataError(f"{path}: image {missing[0]!r} is not in the prepared {prep.name} "
                        "(prepared again since the import?); run `umlbench prepare-splits "
                        "--protocol fewshot-train --import DIR` again")
    return np.array([pos[i] for i in data["image_ids"]], np.int64)
