"""Derive ``cars196_splits_reduced.pkl`` from the published ooDML Cars split file.

    git -C <ooDML repo> show HEAD:datasplits/cars196_splits.pkl > /tmp/cars196_splits.pkl
    python tests/protocols/data/make_reduced_cars_pickle.py /tmp/cars196_splits.pkl

Kept as published: the dict layout and value types (numpy str/float64 scalars, int keys), the
eight splits' ``train``/``test``/``split_train``/``split_val`` class names (all 196 real names,
'/' written '-') and FIDs. Reduced: ``test_episodes`` keeps the 2-shot episodes 0 and 1, and
every support image is drawn from a pool of at most three real support-image names of its class
taken from the published episodes (a class's ``NNNNN_2.jpg`` name first, if it has one), with
no image number shared between classes, so a small devkit fixture can hold every named image.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np


def reduce(data: dict, pool_size: int = 3, seed: int = 0) -> dict:
    names: dict[str, list[str]] = {}
    for entry in data.values():
        for eps in entry["test_episodes"].values():
            for ep in eps.values():
                for cls, files in ep.items():
                    names.setdefault(str(cls), [])
                    names[str(cls)] += [f for f in files if f not in names[str(cls)]]
    pools: dict[str, list[str]] = {}
    used: set[str] = set()
    for cls in sorted(names):
        ordered = sorted(names[cls], key=lambda f: ("_2" not in f, f))
        pool = []
        for f in ordered:
            number = f.split(".")[0].split("_")[0]
            if number in used or len(pool) == pool_size:
                continue
            pool.append(f)
            used.add(number)
        pools[cls] = pool
    rng = np.random.default_rng(seed)
    out = {}
    for key, entry in data.items():
        eps = {}
        for e in (0, 1):
            ep = {}
            for cls in entry["test_episodes"][2][e]:
                pick = rng.choice(len(pools[str(cls)]), 2, replace=False)
                ep[cls] = [pools[str(cls)][i] for i in sorted(pick)]
            eps[e] = ep
        out[key] = {k: entry[k] for k in ("train", "test", "fid", "split_train", "split_val")}
        out[key]["test_episodes"] = {2: eps}
    return out


if __name__ == "__main__":
    src = Path(sys.argv[1])
    with open(src, "rb") as fh:
        reduced = reduce(pickle.load(fh))
    dst = Path(__file__).with_name("cars196_splits_reduced.pkl")
    dst.write_bytes(pickle.dumps(reduced))
    print(f"wrote {dst} ({dst.stat().st_size} bytes)")
