"""Summaries of metric-vs-shift curves (ooDML).

The area under the Recall@1-vs-level curve is normalised so that it reads like an average
Recall@1: levels 1..L are placed evenly on [0, 1] (x = (level - 1) / (L - 1)) and the trapezoid
area is taken; a method with the same Recall@1 r at every level scores exactly r. (The ooDML
repository ships no AUC code, so this normalisation is ours; it is independent of the FID scale,
which differs between datasets.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["normalised_auc"]


def normalised_auc(levels: Sequence[int], values: Sequence[float]) -> float:
    """Trapezoid area of ``values`` over evenly spaced ``levels``; NaN if any value is missing."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or np.isnan(v).any():
        return float("nan")
    if len(v) == 1:
        return float(v[0])
    order = np.argsort(np.asarray(levels))
    x = np.linspace(0.0, 1.0, len(v))
    y = v[order]
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
