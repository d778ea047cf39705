"""The UML protocol of the PUMA paper (official code: dataset.py, helpers.py).

Training: the union of every dataset's training half. Datasets are concatenated in the official
order (the suite order with In-shop moved last) and class ids are offset cumulatively, so the
unified set has one id per training class (15,952 on the real suite).

Evaluation: per dataset (query and gallery restricted to that dataset; In-shop: its query split
against its gallery split, all others leave-one-out) and universal (the union of all queries
against the union of all galleries). Classes are (dataset, label) pairs, so unlike the official
code (see README, "Differences from the official code") labels of different datasets never
collide in the universal score.

With ``train.select=val`` a fraction of each dataset's training classes is held out as a
validation set (leave-one-out retrieval), so checkpoint selection never looks at test data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from umlbench import const as C
from umlbench.config import RunConfig
from umlbench.data.prepare import Prepared, load_prepared
from umlbench.data.registry import suite_datasets
from umlbench.errors import UserError
from umlbench.protocols.base import ProtocolData, eval_rows, rows_for

__all__ = ["build", "training_order", "load_sources", "unify_train"]


def training_order(names: list[str]) -> list[str]:
    """The official concatenation order: In-shop always last."""
    shop = [n for n in names if n.endswith("inshop")]
    return [n for n in names if n not in shop] + shop


def load_sources(cfg: RunConfig, root: Path) -> list[Prepared]:
    names = list(cfg.data.datasets) or list(suite_datasets(cfg.suite))
    unknown = set(names) - set(suite_datasets(cfg.suite))
    if unknown:
        raise UserError(f"datasets {sorted(unknown)} are not in suite {cfg.suite!r}")
    return [load_prepared(root, n) for n in training_order(names)]


def unify_train(parts: list[pd.DataFrame]) -> tuple[pd.DataFrame, int]:
    """Concatenate per-dataset training rows; ``target`` = cumulative class id."""
    out, offset = [], 0
    for df in parts:
        classes = np.unique(df["label"].to_numpy())
        local = np.searchsorted(classes, df["label"].to_numpy())
        out.append(df.assign(target=local + offset))
        offset += len(classes)
    train = pd.concat(out, ignore_index=True) if out else pd.DataFrame()
    return train, offset


def build(cfg: RunConfig, root: Path) -> ProtocolData:
    sources = load_sources(cfg, root)
    rng = np.random.default_rng([cfg.seed, 7])
    train_parts, val_parts, test_parts = [], [], []
    for s, prep in enumerate(sources):
        m = prep.manifest
        is_train = (m[C.SPLIT] == C.TRAIN).to_numpy()
        if cfg.train.select == "val":
            classes = np.unique(m.loc[is_train, C.LABEL].to_numpy())
            n_val = max(2, int(round(len(classes) * cfg.train.val_fraction)))
            if n_val >= len(classes):
                raise UserError(f"{prep.name}: too few training classes for a validation split")
            val_cls = set(rng.choice(classes, n_val, replace=False).tolist())
            in_val = m[C.LABEL].isin(val_cls).to_numpy() & is_train
            val_parts.append(eval_rows(s, prep, val_cls, leave_one_out_splits=(C.TRAIN,)))
            is_train = is_train & ~in_val  # pandas arrays may be read-only
        train_parts.append(rows_for(s, prep, is_train))
        test_parts.append(eval_rows(s, prep))
    train, num_classes = unify_train(train_parts)
    return ProtocolData(
        name="uml",
        sources=sources,
        train=train,
        test=pd.concat(test_parts, ignore_index=True),
        val=pd.concat(val_parts, ignore_index=True) if val_parts else None,
        num_classes=num_classes,
        info={"name": "uml"},
    )
