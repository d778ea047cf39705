"""Which rows a figure shows by default: the main methods, not their ablations.

An ablation is a row labelled ``Name (variant)`` beside a ``Name`` row of the same method id
(e.g. "PUMA (adapters only)" beside "PUMA"); published (reported) rows never are. Reads only
the long results frame of :mod:`umlbench.results.store`.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["ablation_labels", "main_methods"]


def ablation_labels(df: pd.DataFrame) -> set[str]:
    """Display names of ablation rows: ``Name (variant)`` where ``Name`` is also a display name
    of the same method (e.g. "PUMA (adapters only)" beside "PUMA"). "Fine-tuning, unified
    (ArcFace)" has no bare "Fine-tuning, unified" row, so it is a main method."""
    measured = df[df["source"] != "reported"]  # published rows are never ablations
    pairs = set(zip(measured["method"].astype(str), measured["display_name"].astype(str)))
    out = set()
    for method, name in pairs:
        base, sep, rest = name.partition(" (")
        if sep and rest.endswith(")") and (method, base) in pairs:
            out.add(name)
    return out


def main_methods(df: pd.DataFrame, methods: list[str] | None) -> pd.DataFrame:
    """``df`` without ablation rows, except those named explicitly in ``methods``."""
    hidden = ablation_labels(df) - set(methods or ())
    return df[~(df["display_name"].isin(hidden) & (df["source"] != "reported"))]
