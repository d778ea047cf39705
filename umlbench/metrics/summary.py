"""Summaries over datasets and over repeated runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["arithmetic_mean", "harmonic_mean"]


def harmonic_mean(values: Iterable[float]) -> float:
    """n / sum(1/v), the PUMA paper's summary of per-dataset R@1. Zero if any value is zero."""
    v = np.asarray(list(values), dtype=np.float64)
    if len(v) == 0 or np.isnan(v).any():
        return float("nan")
    if (v <= 0).any():
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


def arithmetic_mean(values: Iterable[float]) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.mean()) if len(v) else float("nan")


def per_dataset_summary(per_dataset: Mapping[str, Mapping[str, float]], metric: str) -> dict:
    """Harmonic and arithmetic mean of ``metric`` over datasets."""
    vals = [m[metric] for m in per_dataset.values() if metric in m]
    return {"harmonic_mean": harmonic_mean(vals), "arithmetic_mean": arithmetic_mean(vals)}
