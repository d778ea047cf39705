"""ooDML evaluation rows and few-shot episodes.

Retrieval roles. Most datasets are scored leave-one-out (every test image queries all other
test images). Datasets that come with query and gallery images (In-shop) keep query->gallery
retrieval at *every* level: a class that the shift moved from the training split into the test
set has no official roles, so its images get them by a fixed rule, alternately query and
gallery in image-id order (first image a query; a class with one image is gallery only), which
gives about the official In-shop ratio (14,218 query : 12,612 gallery). Validation classes
(taken from the training split) get roles the same way. One definition at every level keeps the
shift curve free of a change of protocol.

Few-shot episodes (fixed per level, drawn with the split file's seed). CUB/Cars style, as the
shipped ooDML files: ``shots`` support images of every test class that has more than ``shots``
images, the rest of the class is queried (In-shop: the rest keeps its query/gallery roles; a
query whose class has no gallery image left is excluded, as in every retrieval mean). SOP style (class-split, as the official loader builds
SOP episodes from a list of support classes): every image of a random set of test classes is
support and the *other* test classes are queried; the official generator of those lists is not
published, so umlbench draws ``shots`` x 2 % of the test classes (mini-SOP, 500 test classes:
20 / 50 / 100 support classes for 2 / 5 / 10 shots). A mini domain follows the dataset it
mirrors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from umlbench import const as C
from umlbench.data.prepare import Prepared

__all__ = ["SHOTS", "EPISODES", "CLASS_SPLIT_EPISODES", "SUPPORT_CLASSES_PER_SHOT",
           "make_episodes", "eval_rows", "roles"]

SHOTS = (2, 5, 10)
EPISODES = 10
CLASS_SPLIT_EPISODES = frozenset({"sop"})  # datasets whose episodes split by class
SUPPORT_CLASSES_PER_SHOT = 0.02  # class-split episodes: fraction of test classes per shot


def class_split(dataset: str) -> bool:
    return dataset.removeprefix("mini-") in CLASS_SPLIT_EPISODES


def make_episodes(rng: np.random.Generator, dataset: str, images_by_class: dict[int, list[str]],
                  classes: list[int]) -> dict[str, list[dict]]:
    """{str(shots): [episode, ...]} for every shot count in :data:`SHOTS`.

    Image episodes: {"support": [image ids], "query_classes": [labels]}; class-split episodes:
    {"support_classes": [labels], "query_classes": [labels]}."""
    by_class = class_split(dataset)
    out = {}
    for shots in SHOTS:
        eps = []
        for _ in range(EPISODES):
            if by_class:
                n = round(SUPPORT_CLASSES_PER_SHOT * shots * len(classes))
                n = int(min(max(n, 1), len(classes) - 1))
                sup = sorted(int(c) for c in rng.choice(classes, n, replace=False))
                chosen = set(sup)
                eps.append({"support_classes": sup,
                            "query_classes": [int(c) for c in classes if c not in chosen]})
                continue
            support, qc = [], []
            for c in classes:
                ids = images_by_class[c]
                if len(ids) > shots:
                    support += sorted(rng.choice(ids, shots, replace=False).tolist())
                    qc.append(int(c))
            eps.append({"support": support, "query_classes": qc})
        out[str(shots)] = eps
    return out


def roles(manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(is_query, is_gallery) per manifest row for a dataset with query/gallery images, or None
    when it has none (then everything is leave-one-out); see the module docstring."""
    split = manifest[C.SPLIT].to_numpy()
    if not np.isin(split, [C.QUERY, C.GALLERY]).any():
        return None
    is_q, is_g = split == C.QUERY, split == C.GALLERY
    free = ~(is_q | is_g)
    sub = manifest.loc[free, [C.LABEL, C.IMAGE_ID]].sort_values([C.LABEL, C.IMAGE_ID],
                                                               kind="stable")
    rank = sub.groupby(C.LABEL).cumcount().to_numpy()
    size = sub.groupby(C.LABEL)[C.IMAGE_ID].transform("size").to_numpy()
    query = (rank % 2 == 0) & (size > 1)
    idx = manifest.index.get_indexer(sub.index)
    is_q[idx], is_g[idx] = query, ~query
    return is_q, is_g


def eval_rows(prep: Prepared, labels: set, source: int = 0) -> pd.DataFrame:
    """Evaluation rows of the classes ``labels``: columns source, row, target, dataset,
    is_query, is_gallery."""
    m = prep.manifest
    idx = np.flatnonzero(m[C.LABEL].isin(labels).to_numpy())
    r = roles(m)
    is_q = np.ones(len(idx), bool) if r is None else r[0][idx]
    is_g = np.ones(len(idx), bool) if r is None else r[1][idx]
    return pd.DataFrame({"source": source, "row": idx, "target": m[C.LABEL].to_numpy()[idx],
                         "dataset": prep.name, "is_query": is_q, "is_gallery": is_g})
