"""Import the published ooDML split files (``datasplits/<dataset>_splits.pkl``).

Format, as ``create_dataset_splits.py`` writes it plus the few-shot fields of the shipped files:
a pickled dict ``{split id (1..N): {"train": [class], "test": [class], "fid": float,
"split_train": [class], "split_val": [class], "test_episodes": {shots: {episode id: ...}}}}``.
Classes are the image folder names for CUB (``001.Black_footed_Albatross``) and Cars
(``Ram C-V Cargo Van Minivan 2012``: the layout writes '/' as '-'; names are matched under that
normalisation). For SOP ``train``/``test`` hold product ids (the file-name prefix) while the
official loader reads ``split_train``/``split_val`` and the episodes as Ebay class ids
(integers). An episode is ``{class: [support file names]}`` (CUB, Cars: shots images of every
test class; the query is the rest of those classes) or a list of support classes (SOP: the
query is every other test class). CUB file names are those of ``images/<class>/``; Cars file
names are devkit names (``04399.jpg``, ``06189_2.jpg``), mapped to ``car_ims`` through the
devkit annotations (:func:`umlbench.data.sources.cars.layout_names`, ``--source DIR``).

The pickle is read with an unpickler that admits only the numpy scalar types these files hold;
anything else (code) is refused. A class or image that cannot be matched is a one-line error
naming it; nothing is written then.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umlbench import const as C
from umlbench.data.prepare import Prepared, load_prepared
from umlbench.errors import DataError, UserError
from umlbench.protocols.oodml import write_splits
from umlbench.protocols.oodml_splits import OFFICIAL_SCHEDULES

__all__ = ["read_reference_pickle", "import_reference_splits"]

_ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "dtype"), ("builtins", "set"), ("builtins", "frozenset")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


@dataclass(frozen=True)
class _Format:
    """How a dataset's published file names classes and images."""

    int_class_ids: bool = False  # integers are 1-based class ids (SOP's Ebay class_id)
    devkit_images: bool = False  # episode images are Cars devkit names (needs --source)


_FORMATS = {"sop": _Format(int_class_ids=True), "cars": _Format(devkit_images=True)}


def read_reference_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = _SafeUnpickler(fh).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError) as exc:
        raise DataError(f"{path}: not an ooDML split pickle ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a dict of splits keyed by split id")
    return data


def _norm(name: str) -> str:
    return str(name).replace("/", "-")


class _Classes:
    """Resolves the names (and, for SOP, integer ids) of a published file to labels; every
    unknown name is collected so that one error can list them all."""

    def __init__(self, prep: Prepared, fmt: _Format) -> None:
        m = prep.manifest
        self.fmt, self.labels = fmt, set(m[C.LABEL].astype(int))
        aliases: dict[str, set[int]] = {}
        for lab, name in m.groupby(C.LABEL)[C.CLASS_NAME].first().items():
            name = str(name)
            for alias in {name, name.split(".", 1)[-1], name.rsplit("/", 1)[-1]}:
                aliases.setdefault(_norm(alias), set()).add(int(lab))
        prefix = m[C.PATH].map(lambda p: Path(p).name.split("_")[0])
        for lab, prefixes in prefix.groupby(m[C.LABEL]).agg(set).items():
            if len(prefixes) == 1:  # SOP: the product id that prefixes every file of the class
                aliases.setdefault(_norm(next(iter(prefixes))), set()).add(int(lab))
        self.alias = {k: next(iter(v)) for k, v in aliases.items() if len(v) == 1}
        self.unknown: list[str] = []

    def one(self, value) -> int | None:
        if isinstance(value, (int, np.integer)) and self.fmt.int_class_ids:
            lab = int(value) - 1
            if lab in self.labels:
                return lab
        elif (lab := self.alias.get(_norm(value))) is not None:
            return lab
        shown = str(value) if isinstance(value, (str, np.str_)) else repr(value)
        if shown not in self.unknown:
            self.unknown.append(shown)
        return None

    def many(self, values) -> list[int]:
        out = [self.one(v) for v in values]
        return sorted(v for v in out if v is not None)


def _same_picture(prep: Prepared):
    row_of = {str(i): r for r, i in enumerate(prep.manifest[C.IMAGE_ID])}

    def same(ids: list[str]) -> bool:
        imgs = [prep.load_image(row_of[i]) for i in ids if i in row_of]
        return len(imgs) == len(ids) and all(
            im.shape == imgs[0].shape and np.array_equal(im, imgs[0]) for im in imgs[1:])
    return same


def _image_ids(prep: Prepared, fmt: _Format, source: Path | None, path: Path, example: str):
    """(label, file name) -> image id, plus the reasons for names that cannot be mapped."""
    m = prep.manifest
    if not fmt.devkit_images:
        base = m[C.PATH].map(lambda p: Path(p).name)
        return {(int(lab), str(b)): str(i)
                for lab, b, i in zip(m[C.LABEL], base, m[C.IMAGE_ID])}, {}
    if source is None:
        raise UserError(f"{path}: its few-shot episodes name Cars devkit images (e.g. "
                        f"{example!r}); pass --source DIR with the devkit's cars_train_annos.mat "
                        "and cars_test_annos_withlabels.mat")
    if prep.raw_dir is None:
        raise UserError(f"{prep.name}: prepared without its raw folder; cars_annos.mat is needed "
                        "to map devkit images (re-run prepare-data for cars)")
    from umlbench.data.sources.cars import layout_names

    return layout_names(prep.raw_dir, source, _same_picture(prep))


def _episode(ep, classes: _Classes, images, unmapped, test: list[int], where: str,
             path: Path) -> dict:
    if isinstance(ep, dict):  # CUB/Cars: {class: [support file names]}
        support, qc = [], []
        for name, files in ep.items():
            lab = classes.one(name)
            if lab is None:
                continue
            for f in files:
                iid = images.get((lab, str(f)))
                if iid is None:
                    why = unmapped.get((lab, str(f)), "no image of that name in that class")
                    raise DataError(f"{path}: {where}: image {str(f)!r} of class {str(name)!r} "
                                    f"cannot be mapped ({why})")
                support.append(iid)
            qc.append(lab)
        return {"support": support, "query_classes": sorted(qc)}
    sup = classes.many(ep)  # SOP: support classes; the query is every other test class
    chosen = set(sup)
    return {"support_classes": sup, "query_classes": [c for c in test if c not in chosen]}


def _first_image(data: dict) -> str | None:
    for entry in data.values():
        for eps in (entry.get("test_episodes") or {}).values():
            for ep in eps.values():
                if isinstance(ep, dict):
                    for files in ep.values():
                        return str(files[0]) if len(files) else None
    return None


def import_reference_splits(path: Path, root: Path, dataset: str,
                            source: Path | None = None) -> Path:
    """Convert a published split pickle into umlbench's split file for ``dataset``."""
    path = Path(path)
    data = read_reference_pickle(path)
    prep = load_prepared(root, dataset)
    fmt = _FORMATS.get(dataset, _Format())
    classes = _Classes(prep, fmt)
    example = _first_image(data)
    images, unmapped = ({}, {}) if example is None else _image_ids(
        prep, fmt, None if source is None else Path(source), path, example)
    try:
        ids = sorted(data, key=int)
    except (TypeError, ValueError):
        raise DataError(f"{path}: split ids must be integers, got {sorted(map(repr, data))}")
    table = OFFICIAL_SCHEDULES.get(dataset)
    keys = table.levels if table and len(table.levels) == len(ids) else None
    levels = []
    for n, split_id in enumerate(ids):
        entry = data[split_id]
        missing = {"train", "test", "fid"} - set(entry)
        if missing:
            raise DataError(f"{path}: split {split_id} lacks {sorted(missing)}")
        train, test = classes.many(entry["train"]), classes.many(entry["test"])
        episodes = {}
        for shots, eps in (entry.get("test_episodes") or {}).items():
            episodes[str(int(shots))] = [
                _episode(eps[e], classes, images, unmapped, test,
                         f"split {split_id}, {shots}-shot episode {e}", path)
                for e in sorted(eps, key=int)]
        levels.append({
            "level": int(split_id), "key": keys[n] if keys else f"ref-{int(split_id)}",
            "fid": float(entry["fid"]), "train": train, "test": test,
            "train_names": [str(x) for x in entry["train"]],
            "test_names": [str(x) for x in entry["test"]],
            "split_train": classes.many(entry.get("split_train", entry["train"])),
            "split_val": classes.many(entry.get("split_val", [])),
            "episodes": episodes,
        })
    if classes.unknown:
        shown = ", ".join(repr(u) for u in classes.unknown[:20])
        more = f" (+{len(classes.unknown) - 20} more)" if len(classes.unknown) > 20 else ""
        raise DataError(f"{path}: {len(classes.unknown)} class name(s) match no class of "
                        f"{dataset} (compared with '/' written as '-'): {shown}{more}")
    return write_splits(root, dataset, levels,
                        backbone="reference (ResNet-50, pretrainedmodels)", seed=None,
                        source=f"reference:{path.name}",
                        schedule="official" if keys else "reference", removal_rule="official")
