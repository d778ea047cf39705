"""Dataset specs and suites.

A :class:`DatasetSpec` is frozen data (timm ``default_cfgs`` / mteb ``TaskMetadata`` style): the
official files with their checksums, the license note, the expected counts per split, and the
function that turns the official layout (or the generator, for the `mini` suite) into manifest rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from umlbench.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Resource", "DatasetSpec", "DATASETS", "SUITES", "suite_datasets"]


@dataclass(frozen=True)
class Resource:
    """One official file: where it comes from and how to recognise it."""

    filename: str
    url: str | None  # None: the host needs a manual step (see DatasetSpec.manual)
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None  # bytes, when known
    extract: bool = True  # archives are unpacked into the raw folder; plain files are copied


@dataclass(frozen=True)
class DatasetSpec:
    """Everything umlbench knows about one dataset.

    ``expected`` maps split -> (number of images, number of classes) that the parsed official
    annotations must reproduce exactly; ``parse(raw_dir)`` returns manifest rows (columns
    image_id, path, label, class_name, split) with ``path`` relative to ``raw_dir``.
    For generated datasets, ``generate(seed, image_size)`` returns (rows, images).
    """

    name: str
    title: str
    suite: str
    license: str
    homepage: str = ""
    resources: tuple[Resource, ...] = ()
    manual: str | None = None  # exact instructions when the host cannot be downloaded from
    expected: dict[str, tuple[int, int]] = field(default_factory=dict)
    parse: Callable[[Path], pd.DataFrame] | None = None
    generate: Callable[..., tuple[pd.DataFrame, object]] | None = None
    citation: str = ""

    @property
    def generated(self) -> bool:
        return self.generate is not None


DATASETS: Registry[DatasetSpec] = Registry(
    "dataset",
    builtin_modules=(
        "umlbench.data.synthetic.suite",
        "umlbench.data.sources",
    ),
)

# Suites list datasets in the order the papers report them. (For training, the UML protocol
# concatenates them as the official code does, In-shop last; see protocols/uml.py.)
SUITES: dict[str, tuple[str, ...]] = {
    "mini": (
        "mini-cub",
        "mini-cars",
        "mini-sop",
        "mini-inshop",
        "mini-nabirds",
        "mini-dogs",
        "mini-flowers",
        "mini-aircraft",
    ),
    "uml": ("cub", "cars", "sop", "inshop", "nabirds", "dogs", "flowers", "aircraft"),
}


def suite_datasets(suite: str) -> tuple[str, ...]:
    from umlbench.errors import UserError

    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; known: {', '.join(sorted(SUITES))}")
    return SUITES[suite]
