"""Which metrics to compute, parsed from names such as ``recall@10`` or ``map@r``."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from umlbench.errors import UserError

__all__ = ["CLUSTER_ROWS", "DEFAULT_METRICS", "MAX_K", "RETRIEVAL_ONLY", "MetricSpec"]

MAX_K = 2**31 - 1  # largest K accepted in recall@K (deeper than any gallery)
_FLAGS = {"precision@1": "precision_at_1", "r_precision": "r_precision", "map@r": "map_at_r",
          "map@1000": "map_at_1000", "nmi": "nmi", "f1": "f1"}
_KNOWN = "recall@K, precision@1, r_precision, map@r, map@1000, nmi, f1"
# Which rows NMI/F1 cluster when query and gallery rows differ (In-shop): "all" (every query
# and gallery row, umlbench's default) or "queries" (the query rows only, as
# pytorch-metric-learning's AccuracyCalculator). Leave-one-out datasets give the same either way.
CLUSTER_ROWS = ("all", "queries")


@dataclass(frozen=True)
class MetricSpec:
    """Which metrics to compute. Keys in results: recall@K, precision@1, r_precision, map@r,
    map@1000, nmi, f1."""

    recall_ks: tuple[int, ...] = (1, 2, 4, 8)
    precision_at_1: bool = True
    r_precision: bool = True
    map_at_r: bool = True
    map_at_1000: bool = True
    nmi: bool = True
    f1: bool = True
    # Extra Recall@K per dataset, scored in that dataset's scope only (the literature's lists:
    # ``data.registry.DatasetSpec.recall_ks``): ((dataset, (K, ...)), ...).
    dataset_recall_ks: tuple[tuple[str, tuple[int, ...]], ...] = ()
    cluster_rows: str = "all"  # see CLUSTER_ROWS

    def __post_init__(self) -> None:
        for k in self.recall_ks + tuple(k for _, ks in self.dataset_recall_ks for k in ks):
            # 1.5 would be truncated to recall@1 under the name recall@1.5; "max" is no K.
            if isinstance(k, bool) or not isinstance(k, numbers.Integral):
                raise UserError(f"recall@{k}: K must be an integer between 1 and {MAX_K}, "
                                f"got {k!r} ({type(k).__name__})")
            if not 1 <= int(k) <= MAX_K:
                raise UserError(f"recall@{k}: K must be between 1 and {MAX_K}")
        if self.cluster_rows not in CLUSTER_ROWS:
            raise UserError(f"cluster_rows must be one of {', '.join(CLUSTER_ROWS)}, got "
                            f"{self.cluster_rows!r}")

    @classmethod
    def from_names(cls, names: Sequence[str], cluster_rows: str = "all") -> MetricSpec:
        """Parse names such as ``["recall@1", "recall@10", "map@r", "nmi"]``; ``cluster_rows``:
        which rows NMI/F1 cluster (:data:`CLUSTER_ROWS`)."""
        ks, flags = [], dict.fromkeys(_FLAGS.values(), False)
        for name in names:
            name = name.strip().lower()
            if name.startswith("recall@") and name[7:].isdigit():
                k = int(name[7:])
                if not 1 <= k <= MAX_K:
                    raise UserError(f"metric {name!r}: K must be between 1 and {MAX_K}")
                ks.append(k)
            elif name in _FLAGS:
                flags[_FLAGS[name]] = True
            else:
                raise UserError(f"unknown metric {name!r}; known: {_KNOWN}")
        return cls(recall_ks=tuple(sorted(set(ks))), cluster_rows=cluster_rows, **flags)

    def with_dataset_recall_ks(self, lists: Mapping[str, Sequence[int]]) -> MetricSpec:
        """The same metrics plus, in each dataset's own scope, the Recall@K of ``lists``."""
        extra = tuple(sorted((d, tuple(sorted(set(ks)))) for d, ks in lists.items()))
        return replace(self, dataset_recall_ks=extra) if self.retrieval_names else self

    def for_dataset(self, dataset: str) -> MetricSpec:
        """The metrics of one dataset's scope: the spec's plus its own Recall@K list."""
        extra = dict(self.dataset_recall_ks).get(dataset, ())
        return replace(self, recall_ks=tuple(sorted(set(self.recall_ks) | set(extra))),
                       dataset_recall_ks=())

    @property
    def all_recall_ks(self) -> tuple[int, ...]:
        """Every K any scope scores."""
        extra = {k for _, ks in self.dataset_recall_ks for k in ks}
        return tuple(sorted(set(self.recall_ks) | extra))

    def names(self) -> list[str]:
        out = [f"recall@{k}" for k in self.recall_ks]
        out += [name for name, flag in _FLAGS.items() if getattr(self, flag)]
        return out

    @property
    def needs_r(self) -> bool:
        return self.r_precision or self.map_at_r

    @property
    def retrieval_names(self) -> list[str]:
        return [n for n in self.names() if n not in ("nmi", "f1")]


DEFAULT_METRICS = MetricSpec()
RETRIEVAL_ONLY = MetricSpec(nmi=False, f1=False)
