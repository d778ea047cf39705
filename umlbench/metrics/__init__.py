"""Retrieval and clustering metrics, and the engine that computes them exactly.

The engine (torch, faiss) is imported on first use of ``evaluate``, ``EvalResult``,
``QueryScores`` or ``class_codes``, so that the command line can read the statistics' defaults
(:mod:`umlbench.metrics.paired`) without paying for torch at startup."""

from umlbench.metrics.paired import mean_ci95
from umlbench.metrics.spec import DEFAULT_METRICS, RETRIEVAL_ONLY, MetricSpec
from umlbench.metrics.summary import arithmetic_mean, harmonic_mean

__all__ = [
    "DEFAULT_METRICS",
    "RETRIEVAL_ONLY",
    "EvalResult",
    "MetricSpec",
    "QueryScores",
    "arithmetic_mean",
    "class_codes",
    "evaluate",
    "harmonic_mean",
    "mean_ci95",
]
_ENGINE = ("EvalResult", "QueryScores", "class_codes", "evaluate")


def __getattr__(name: str):
    if name in _ENGINE:
        from umlbench.metrics import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
