"""Retrieval and clustering metrics, and the engine that computes them exactly."""

from umlbench.metrics.engine import EvalResult, class_codes, evaluate
from umlbench.metrics.spec import DEFAULT_METRICS, RETRIEVAL_ONLY, MetricSpec
from umlbench.metrics.paired import mean_ci95
from umlbench.metrics.summary import arithmetic_mean, harmonic_mean

__all__ = [
    "DEFAULT_METRICS",
    "RETRIEVAL_ONLY",
    "EvalResult",
    "MetricSpec",
    "arithmetic_mean",
    "class_codes",
    "evaluate",
    "harmonic_mean",
    "mean_ci95",
]
