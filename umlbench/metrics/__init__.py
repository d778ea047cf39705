"""Retrieval and clustering metrics, and the engine that computes them in bounded memory."""

from umlbench.metrics.engine import DEFAULT_METRICS, RETRIEVAL_ONLY, EvalResult, MetricSpec, evaluate
from umlbench.metrics.summary import arithmetic_mean, harmonic_mean, mean_ci95

__all__ = [
    "DEFAULT_METRICS",
    "RETRIEVAL_ONLY",
    "EvalResult",
    "MetricSpec",
    "evaluate",
    "harmonic_mean",
    "arithmetic_mean",
    "mean_ci95",
]
