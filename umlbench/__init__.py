"""umlbench: a benchmark suite and leaderboard toolkit for Unified Metric Learning."""

__version__ = "0.1.0"
__all__ = ["__version__"]
