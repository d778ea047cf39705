"""``fewshot-train`` (PUMA paper): the UML protocol with K training images per class.

Every training class of every dataset keeps K images, a fixed subset per seed (drawn without
replacement when a class has at least K images, with replacement otherwise). Evaluation is the
UML protocol's, on the full test sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from umlbench.config import RunConfig
from umlbench.errors import UserError
from umlbench.protocols import uml
from umlbench.protocols.base import ProtocolData

__all__ = ["build", "derived_defaults"]


def derived_defaults(shots: int | None) -> dict:
    """Config values that follow from the protocol (layered below the user's own settings)."""
    if shots is None:
        raise UserError("protocol fewshot-train needs --shots K (1, 2, 4, 8 or 16)")
    per = max(1, 32 // shots)  # official: epochs = 32/K + 1, evaluated every 32/K
    return {"train": {"epochs": per + 1, "eval_every": per}}


def build(cfg: RunConfig, root: Path) -> ProtocolData:
    k = cfg.protocol.shots
    if not k or k < 1:
        raise UserError("protocol fewshot-train needs --shots K >= 1")
    data = uml.build(cfg, root)
    rng = np.random.default_rng([cfg.seed, 11, k])
    parts = []
    for target, rows in data.train.groupby("target", sort=True):
        pick = rng.choice(len(rows), k, replace=len(rows) < k)
        parts.append(rows.iloc[np.sort(pick)])
    data.train = pd.concat(parts, ignore_index=True)
    data.name = "fewshot-train"
    data.info = {"name": "fewshot-train", "shots": k}
    return data
