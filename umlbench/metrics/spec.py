"""Which metrics to compute, parsed from names such as ``recall@10`` or ``map@r``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from umlbench.errors import UserError

__all__ = ["DEFAULT_METRICS", "MAX_K", "RETRIEVAL_ONLY", "MetricSpec"]

MAX_K = 2**31 - 1  # largest K accepted in recall@K (deeper than any gallery)
_FLAGS = {"precision@1": "precision_at_1", "r_precision": "r_precision", "map@r": "map_at_r",
          "map@1000": "map_at_1000", "nmi": "nmi", "f1": "f1"}
_KNOWN = "recall@K, precision@1, r_precision, map@r, map@1000, nmi, f1"


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

    def __post_init__(self) -> None:
        for k in self.recall_ks:
            if not 1 <= int(k) <= MAX_K:
                raise UserError(f"recall@{k}: K must be between 1 and {MAX_K}")

    @classmethod
    def from_names(cls, names: Sequence[str]) -> MetricSpec:
        """Parse names such as ``["recall@1", "recall@10", "map@r", "nmi"]``."""
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
        return cls(recall_ks=tuple(sorted(set(ks))), **flags)

    def with_recall_ks(self, ks: Sequence[int]) -> MetricSpec:
        """The same metrics with ``ks`` added to the Recall@K list."""
        return MetricSpec(**{**self.__dict__,
                             "recall_ks": tuple(sorted(set(self.recall_ks) | set(ks)))})

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
