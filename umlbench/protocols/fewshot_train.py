"""``fewshot-train`` (PUMA paper): the UML protocol with K training images per class.

Every training class of every dataset keeps K images (drawn without replacement when a class
has at least K images, with replacement otherwise, as the official ``dataset.py``). The subset
comes from the official pickles when they were imported (``umlbench prepare-splits --protocol
fewshot-train --import DIR``, see :mod:`umlbench.protocols.fewshot_subsets`), otherwise it is
drawn from the run's seed; ``protocol.subsets`` chooses (``auto``: official where imported).
Evaluation is the UML protocol's, on the full test sets.

``protocol.exclude_train`` lists datasets that are evaluated but contribute no training
images: the official few-shot loader of Aircraft reads its subset and never appends it, so
the official few-shot models never trained on Aircraft (PUMA's few-shot config sets
``[aircraft]``; see README, "Few-shot training").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from umlbench.config import RunConfig
from umlbench.errors import UserError
from umlbench.protocols import uml
from umlbench.protocols.base import ProtocolData
from umlbench.protocols.fewshot_subsets import load_subset, subset_path

__all__ = ["build", "derived_defaults", "official_schedule"]

SUBSETS = ("auto", "official", "seeded")


def official_schedule(shots: int) -> tuple[int, int]:
    """(epochs, evaluation interval) of the official few-shot command: 32/K + 1 epochs,
    evaluated every 32/K (bash integer division), i.e. once, after the last epoch."""
    per = max(1, 32 // shots)
    return per + 1, per


def derived_defaults(shots: int | None) -> dict:
    """Config values that follow from the protocol (layered below the user's own settings).

    The official loop evaluates after 0-based epoch ``e`` when ``e % (32/K) == 0 and e > 0``:
    with 32/K + 1 epochs that is once, after the last one, and that model is the result. Here:
    no evaluation during training (``eval_every: 0``) and the last epoch is the model
    (``select: last``), which the runner then scores.
    """
    if shots is None:
        raise UserError("protocol fewshot-train needs --shots K (1, 2, 4, 8 or 16)")
    if shots < 1:
        raise UserError(f"protocol fewshot-train needs --shots K >= 1, got {shots}")
    epochs, _ = official_schedule(shots)
    return {"train": {"epochs": epochs, "eval_every": 0, "select": "last"}}


def _seeded(train: pd.DataFrame, k: int, rng: np.random.Generator) -> pd.DataFrame:
    parts = []
    for _, rows in train.groupby("target", sort=True):
        pick = rng.choice(len(rows), k, replace=len(rows) < k)
        parts.append(rows.iloc[np.sort(pick)])
    return pd.concat(parts, ignore_index=True) if parts else train.iloc[:0]


def _official(train: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """The training rows of manifest ``rows`` (repeats kept); classes held out of ``train``
    (``train.select=val``) are dropped."""
    by_row = train.set_index("row")
    keep = rows[np.isin(rows, by_row.index.to_numpy())]
    return by_row.loc[keep].reset_index()[train.columns]


def build(cfg: RunConfig, root: Path) -> ProtocolData:
    p = cfg.protocol
    k = p.shots
    if not k or k < 1:
        raise UserError("protocol fewshot-train needs --shots K >= 1")
    if p.subsets not in SUBSETS:
        raise UserError(f"protocol.subsets must be one of {', '.join(SUBSETS)}, "
                        f"got {p.subsets!r}")
    data = uml.build(cfg, root)
    unknown = set(p.exclude_train) - set(data.datasets)
    if unknown:
        raise UserError(f"protocol.exclude_train names {sorted(unknown)}, which this run does "
                        f"not use (datasets: {', '.join(data.datasets)})")
    rng = np.random.default_rng([cfg.seed, 11, k])
    official, seeded, used, files = [], [], {}, {}
    for s, prep in enumerate(data.sources):
        train = data.train[data.train["source"] == s]
        if prep.name in p.exclude_train:
            used[prep.name] = "excluded"
            continue
        rows = load_subset(root, prep, k) if p.subsets != "seeded" else None
        if rows is None and p.subsets == "official":
            raise UserError(f"no official {k}-shot subset of {prep.name} under {root}; run "
                            "`umlbench prepare-splits --protocol fewshot-train --import DIR` "
                            "with the official few_shot/ folder, or set protocol.subsets=seeded")
        if rows is None:
            seeded.append(train)
            used[prep.name] = "seeded"
        else:
            official.append(_official(train, rows))
            used[prep.name] = "official"
            files[prep.name] = subset_path(root, prep.name, k)
    drawn = _seeded(pd.concat(seeded), k, rng) if seeded else data.train.iloc[:0]
    train = pd.concat([*official, drawn]).sort_values(["source", "target"], kind="stable")
    if train.empty:
        raise UserError("protocol fewshot-train has no training images left "
                        f"(protocol.exclude_train={list(p.exclude_train)})")
    # Class ids stay those of the full unified set minus excluded datasets, renumbered so that
    # they are contiguous (the official loader never counts the classes it drops).
    classes, target = np.unique(train["target"].to_numpy(), return_inverse=True)
    data.train = train.assign(target=target).reset_index(drop=True)
    data.num_classes = len(classes)
    data.name = "fewshot-train"
    data.info = {"name": "fewshot-train", "shots": k, "subsets": used}
    # The subset files read: their hashes belong to the records' data identity.
    data.split_files = {**getattr(data, "split_files", {}), **files}
    return data
