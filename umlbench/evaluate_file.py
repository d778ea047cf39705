"""`umlbench evaluate`: score embeddings saved by any model in an .npz file."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from umlbench.errors import UserError

if TYPE_CHECKING:
    from umlbench.metrics import EvalResult

__all__ = ["OPTIONAL", "REQUIRED", "evaluate_npz", "json_ready", "load_npz"]

REQUIRED = ("embeddings", "labels", "datasets")
OPTIONAL = ("is_query", "is_gallery")
_NPZ_HINT = "save one with numpy.savez(path, embeddings=..., labels=..., datasets=...)"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; anything else is a one-line UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):  # .npz is a zip archive; np.load would try pickle next
        raise UserError(f"{path}: not an .npz of arrays; {_NPZ_HINT}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):  # an object array inside the archive
            raise UserError(f"{path}: holds object (pickled) arrays; store strings as a plain "
                            "string array, e.g. np.array(names, dtype=str)") from None
        raise UserError(f"{path}: not an .npz of arrays ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserError(f"{path}: not an .npz of arrays ({exc})") from None


def evaluate_npz(path: Path, device: str = "cpu", metrics: list[str] | None = None,
                 progress=None, backend: str | None = None,
                 cluster_rows: str = "all") -> EvalResult:
    """Load ``path`` and evaluate; every input problem is a one-line UserError naming the file."""
    arrays = load_npz(Path(path))
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise UserError(f"{path}: missing array(s) {missing}; need {list(REQUIRED)}")
    emb = arrays["embeddings"]
    if emb.dtype.kind not in "fiu":
        raise UserError(f"{path}: embeddings must be numeric, got dtype {emb.dtype}")
    labels = arrays["labels"]
    if labels.dtype.kind not in "biufUS":
        raise UserError(f"{path}: labels must be integers or strings, got dtype {labels.dtype}")
    flags = {}
    for key in OPTIONAL:
        if key in arrays:
            if arrays[key].dtype != bool:
                raise UserError(f"{path}: {key} must be a bool array, got {arrays[key].dtype}")
            flags[key] = arrays[key]
    from dataclasses import replace

    from umlbench.metrics import DEFAULT_METRICS, MetricSpec, evaluate  # after the input checks

    spec = MetricSpec.from_names(metrics, cluster_rows) if metrics else \
        replace(DEFAULT_METRICS, cluster_rows=cluster_rows)
    try:
        # Not cast to float32 here: the engine normalises in float64, so float64 values beyond
        # float32's range still score correctly.
        return evaluate(emb, labels, arrays["datasets"].astype(str), flags.get("is_query"),
                        flags.get("is_gallery"), metrics=spec, device=device, backend=backend,
                        progress=progress)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def json_ready(value):
    """``EvalResult.to_dict()`` with NaN (a scope whose every query was excluded) as None, so
    that the output is valid JSON; the scope's ``num_excluded_queries`` says why."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
