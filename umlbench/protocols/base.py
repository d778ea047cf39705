"""What a protocol hands to a method: prepared sources, train/val/test rows, class counts."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from umlbench import const as C

if TYPE_CHECKING:  # numpy/pandas load with the data, so that checking a config stays instant
    import numpy as np
    import pandas as pd

    from umlbench.data.prepare import Prepared

__all__ = ["ProtocolData", "rows_for", "eval_rows", "image_ids", "PROTOCOLS",
           "PROTOCOL_SELECTORS", "check_protocol_config", "protocol_defaults"]


@dataclass
class ProtocolData:
    """Rows reference ``sources`` by position; see ``data/loading.ImageTable``.

    train: columns source, row, target (global training class id), dataset.
    val/test: columns source, row, target (label inside its dataset), dataset, is_query,
        is_gallery. ``val`` exists only when the protocol holds out validation classes.
    """

    name: str
    sources: list[Prepared]
    train: pd.DataFrame
    test: pd.DataFrame
    val: pd.DataFrame | None = None
    num_classes: int = 0
    info: dict = field(default_factory=dict)
    # Split files read (dataset -> path): their SHA-256 goes into the records' data identity.
    split_files: dict[str, Path] = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        return [s.name for s in self.sources]

    def class_dataset(self) -> np.ndarray:
        """(num_classes,) index into ``datasets`` of each training class."""
        import numpy as np

        out = np.zeros(self.num_classes, np.int64)
        out[self.train["target"].to_numpy()] = self.train["source"].to_numpy()
        return out


def rows_for(source: int, prepared: Prepared, mask: np.ndarray) -> pd.DataFrame:
    """Manifest rows selected by ``mask`` as (source, row, label, dataset) columns."""
    import numpy as np
    import pandas as pd

    m = prepared.manifest
    idx = np.flatnonzero(mask)
    return pd.DataFrame({
        "source": source,
        "row": idx,
        "label": m[C.LABEL].to_numpy()[idx],
        "dataset": prepared.name,
    })


def eval_rows(source: int, prepared: Prepared, labels: set | None = None,
              leave_one_out_splits=(C.TEST,)) -> pd.DataFrame:
    """Evaluation rows of one dataset: "test" rows are query and gallery (leave-one-out),
    "query"/"gallery" rows are one or the other. ``labels`` restricts to those classes;
    ``leave_one_out_splits`` names the splits whose rows are both query and gallery."""
    import numpy as np

    m = prepared.manifest
    split = m[C.SPLIT].to_numpy()
    mask = np.isin(split, list(leave_one_out_splits) + [C.QUERY, C.GALLERY])
    if labels is not None:
        mask = mask & m[C.LABEL].isin(labels).to_numpy()
    df = rows_for(source, prepared, mask)
    s = split[df["row"].to_numpy()]
    loo = np.isin(s, list(leave_one_out_splits))
    df["is_query"] = loo | (s == C.QUERY)
    df["is_gallery"] = loo | (s == C.GALLERY)
    return df.rename(columns={"label": "target"})


def image_ids(sources: list[Prepared], rows: pd.DataFrame) -> np.ndarray:
    """(len(rows),) str: the manifest ``image_id`` of each row (``source``, ``row`` columns);
    with the ``dataset`` column it names the image a query's outcome belongs to."""
    import numpy as np

    out = np.empty(len(rows), dtype=object)
    src, row = rows["source"].to_numpy(), rows["row"].to_numpy()
    for s in np.unique(src):
        at = src == s
        out[at] = sources[int(s)].manifest[C.IMAGE_ID].to_numpy()[row[at]]
    return out.astype(str)


PROTOCOLS: dict[str, str] = {
    "uml": "umlbench.protocols.uml:build",
    "oodml": "umlbench.protocols.oodml:build",
    "fewshot": "umlbench.protocols.fewshot:build",
    "fewshot-train": "umlbench.protocols.fewshot_train:build",
}


# The optional selectors (``protocol.<field>``, CLI ``--<field>``) each protocol reads. Giving
# one that the protocol ignores is an error: otherwise `run --dataset X` under `uml` would run
# the full benchmark and write a record that looks like an answer to the question asked.
PROTOCOL_SELECTORS: dict[str, tuple[str, ...]] = {
    "uml": (),
    "oodml": ("dataset", "level"),
    "fewshot": ("dataset", "level", "shots"),
    "fewshot-train": ("shots",),
}


def check_protocol_config(protocol, suite: str) -> None:
    """Validate a :class:`~umlbench.config.ProtocolConfig` (or any object with its fields)
    against the protocol's selectors and the suite, before anything runs.

    Raises:
        UserError: unknown protocol, a selector the protocol ignores, a dataset outside the
            suite, or a level/shot count below 1.
    """
    from umlbench.data.registry import suite_datasets
    from umlbench.errors import UserError

    name = protocol.name
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    uses = PROTOCOL_SELECTORS.get(name, ("dataset", "level", "shots"))
    for field_name in ("dataset", "level", "shots"):
        if getattr(protocol, field_name, None) is None or field_name in uses:
            continue
        users = [p for p, sel in PROTOCOL_SELECTORS.items() if field_name in sel]
        raise UserError(f"--{field_name} (protocol.{field_name}) is not used by protocol "
                        f"{name!r}; it applies to --protocol {' or '.join(users)}")
    datasets = suite_datasets(suite)
    if protocol.dataset is not None and protocol.dataset not in datasets:
        raise UserError(f"unknown dataset {protocol.dataset!r} for suite {suite!r}; known: "
                        + ", ".join(datasets))
    for field_name in ("level", "shots"):
        value = getattr(protocol, field_name, None)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UserError(f"--{field_name} must be an integer >= 1, got {value!r}")
    # fewshot-train's own options (protocols/fewshot_train.py): never silently ignored.
    for key, default in (("subsets", "auto"), ("exclude_train", ())):
        value = getattr(protocol, key, default)
        if name != "fewshot-train" and value != default:
            raise UserError(f"protocol.{key} applies to --protocol fewshot-train, not {name!r}")
    if getattr(protocol, "subsets", "auto") not in ("auto", "official", "seeded"):
        raise UserError("protocol.subsets must be auto, official or seeded, got "
                        f"{protocol.subsets!r}")


def protocol_defaults(name: str, shots: int | None) -> dict:
    """Config values a protocol implies (its module's ``derived_defaults``), or {} if none.

    An unknown protocol name gives {} here; building its data later names the problem."""
    if name not in PROTOCOLS:
        return {}
    module = importlib.import_module(PROTOCOLS[name].split(":")[0])
    fn = getattr(module, "derived_defaults", None)
    return fn(shots) if fn else {}
