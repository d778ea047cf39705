"""Import the ooDML reference split files (``datasplits/<dataset>_splits.pkl``).

Format (``shared/reference/oodml-official-code.md`` section 1.6): a pickled dict
``{split_id: {"train": [class names], "test": [...], "fid": float, "split_train": [...],
"split_val": [...], "test_episodes": {shots: {episode: ...}}}}`` where an episode is
``{class name: [support image file names]}`` (CUB, Cars) or a list of support class names (SOP).
Class names are matched to the prepared dataset's ``class_name`` column and image file names to
the base names of its image paths, so the published splits are reproduced exactly. The pickle is
read with an unpickler that only admits the numpy scalar types these files contain.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path



from umlbench import const as C
from umlbench.data.prepare import load_prepared
from umlbench.errors import DataError
from umlbench.protocols.oodml import SPLIT_FORMAT, SPLIT_VERSION, _write_json, split_path

__all__ = ["read_reference_pickle", "import_reference_splits"]

_ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "dtype"), ("builtins", "set"), ("builtins", "frozenset")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_reference_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = _SafeUnpickler(fh).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not an ooDML split pickle ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a dict of splits keyed by split id")
    return data


def _class_aliases(m, base) -> dict[str, int]:
    """Names under which the reference files may refer to a class: our class name, its part
    after a "NNN." prefix or a "category/" prefix, and (SOP) the product id that prefixes
    every file name of the class."""
    out: dict[str, int] = {}
    for name, lab in zip(m[C.CLASS_NAME], m[C.LABEL]):
        name = str(name)
        for alias in (name, name.split(".", 1)[-1], name.rsplit("/", 1)[-1]):
            out.setdefault(alias, int(lab))
    prefixes = base.str.split("_").str[0]
    per_class = prefixes.groupby(m[C.LABEL]).agg(lambda s: s.iloc[0] if s.nunique() == 1 else None)
    for lab, prefix in per_class.items():
        if prefix:
            out.setdefault(str(prefix), int(lab))
    return out


def import_reference_splits(path: Path, root: Path, dataset: str) -> Path:
    """Convert a reference split pickle into umlbench's split file for ``dataset``."""
    data = read_reference_pickle(path)
    prep = load_prepared(root, dataset)
    m = prep.manifest
    base = m[C.PATH].map(lambda p: Path(p).name)
    label_of = _class_aliases(m, base)
    file_ids = {(int(lab), str(b)): str(i) for lab, b, i in zip(m[C.LABEL], base, m[C.IMAGE_ID])}
    images_of = m.groupby(C.LABEL)[C.IMAGE_ID].apply(list).to_dict()

    def labels(names, where):
        out = []
        for n in names:
            key = str(n)
            if key not in label_of:
                raise DataError(f"{path}: {where} class {key!r} is not a class of {dataset}")
            out.append(label_of[key])
        return sorted(out)

    levels = []
    for split_id in sorted(data, key=int):
        entry = data[split_id]
        missing = {"train", "test", "fid"} - set(entry)
        if missing:
            raise DataError(f"{path}: split {split_id} lacks {sorted(missing)}")
        train = labels(entry["train"], f"split {split_id} train")
        test = labels(entry["test"], f"split {split_id} test")
        episodes = {}
        for shots, eps in (entry.get("test_episodes") or {}).items():
            out = []
            for ep_id in sorted(eps, key=int):
                ep = eps[ep_id]
                if isinstance(ep, dict):  # CUB/Cars: {class name: [file names]}
                    support, qc = [], []
                    for name, files in ep.items():
                        lab = label_of.get(str(name))
                        if lab is None:
                            raise DataError(f"{path}: episode class {name!r} unknown")
                        for f in files:
                            if (lab, str(f)) not in file_ids:
                                raise DataError(f"{path}: episode image {f!r} of {name!r} "
                                                f"is not in the prepared {dataset}")
                            support.append(file_ids[(lab, str(f))])
                        qc.append(lab)
                else:  # SOP: support classes; queries are the other test classes
                    sup = set(labels(ep, "episode"))
                    support = [i for c in sorted(sup) for i in images_of[c]]
                    qc = [c for c in test if c not in sup]
                out.append({"support": support, "query_classes": sorted(qc)})
            episodes[str(int(shots))] = out
        levels.append({
            "level": int(split_id), "key": f"ref-{int(split_id)}", "fid": float(entry["fid"]),
            "train": train, "test": test,
            "train_names": [str(n) for n in entry["train"]],
            "test_names": [str(n) for n in entry["test"]],
            "split_train": labels(entry.get("split_train", entry["train"]), "split_train"),
            "split_val": labels(entry.get("split_val", []), "split_val"),
            "episodes": episodes,
        })
    out = split_path(root, dataset)
    _write_json(out, {
        "format": SPLIT_FORMAT, "version": SPLIT_VERSION, "dataset": dataset,
        "backbone": "reference (ResNet-50, pretrainedmodels)", "seed": None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "default_level": None,
        "source": f"reference:{Path(path).name}", "levels": levels,
    })
    return out


