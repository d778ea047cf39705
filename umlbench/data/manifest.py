"""The Parquet manifest: one file per prepared dataset, one row per image.

Columns are fixed (:data:`umlbench.const.MANIFEST_COLUMNS`); the real datasets and the generated
`mini` suite write the same schema, so everything downstream is identical.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from umlbench import const as C
from umlbench.errors import DataError

__all__ = ["SCHEMA", "make_manifest", "write_manifest", "read_manifest", "validate_manifest"]

SCHEMA = pa.schema(
    [
        (C.IMAGE_ID, pa.string()),
        (C.PATH, pa.string()),
        (C.LABEL, pa.int64()),
        (C.CLASS_NAME, pa.string()),
        (C.DATASET, pa.string()),
        (C.SPLIT, pa.string()),
        (C.OFFSET, pa.int64()),
        (C.HEIGHT, pa.int32()),
        (C.WIDTH, pa.int32()),
        (C.NBYTES, pa.int64()),
    ]
)


def make_manifest(rows: dict[str, list] | pd.DataFrame) -> pd.DataFrame:
    """Build a manifest DataFrame with the fixed column order and dtypes."""
    df = pd.DataFrame(rows)
    for col in (C.OFFSET, C.HEIGHT, C.WIDTH, C.NBYTES):
        if col not in df:
            df[col] = -1 if col == C.OFFSET else 0
    if C.PATH not in df:
        df[C.PATH] = ""
    df = df[list(C.MANIFEST_COLUMNS)].copy()
    df[C.LABEL] = df[C.LABEL].astype("int64")
    df[C.OFFSET] = df[C.OFFSET].astype("int64")
    df[C.NBYTES] = df[C.NBYTES].astype("int64")
    df[C.HEIGHT] = df[C.HEIGHT].astype("int32")
    df[C.WIDTH] = df[C.WIDTH].astype("int32")
    for col in (C.IMAGE_ID, C.PATH, C.CLASS_NAME, C.DATASET, C.SPLIT):
        df[col] = df[col].astype(str)
    return df.reset_index(drop=True)


def validate_manifest(df: pd.DataFrame, source: str | os.PathLike[str] = "manifest") -> None:
    """Raise :class:`DataError` naming ``source`` when the manifest breaks the schema rules."""
    missing = [c for c in C.MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing columns {missing}")
    bad_splits = set(df[C.SPLIT].unique()) - set(C.SPLITS)
    if bad_splits:
        raise DataError(f"{source}: unknown split names {sorted(bad_splits)}")
    if df[C.IMAGE_ID].duplicated().any():
        dup = df.loc[df[C.IMAGE_ID].duplicated(), C.IMAGE_ID].iloc[0]
        raise DataError(f"{source}: duplicate image_id {dup!r}")
    train = set(df.loc[df[C.SPLIT] == C.TRAIN, C.LABEL])
    evals = set(df.loc[df[C.SPLIT].isin(C.EVAL_SPLITS), C.LABEL])
    if train & evals:
        raise DataError(
            f"{source}: {len(train & evals)} classes are in both train and eval splits "
            "(UML splits must have disjoint train/test classes)"
        )


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write atomically (temp file then rename); byte-identical output for identical input."""
    validate_manifest(df, path)
    table = pa.Table.from_pandas(make_manifest(df), schema=SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata(None)  # pandas metadata would embed versions/indexes
    tmp = path.with_name(path.name + ".part")
    pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    os.replace(tmp, path)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read and validate a manifest; a damaged file raises a one-line :class:`DataError`."""
    try:
        df = pq.read_table(path).to_pandas()
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found") from None
    except Exception as exc:
        raise DataError(f"{path}: unreadable manifest ({type(exc).__name__}: {exc})") from None
    if C.NBYTES not in df:  # prepared before packs existed: nothing in it is packed
        df[C.NBYTES] = 0
    validate_manifest(df, path)
    return df
