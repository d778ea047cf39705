"""The reference similarity, rounding-error bounds, and exact comparisons.

**Reference.** Embeddings are L2-normalised in float64 and stored as float32 unit vectors ``x``.
The similarity of rows i and j is the *exact real number* ``sum_d x[i, d] * x[j, d]`` of those
float32 values; neighbours are ranked by it, and exactly equal similarities put the smaller
gallery index first. Nothing else is rounded, so the ranking does not depend on the BLAS kernel,
the number of threads, the block size or the device.

**How it is computed.** A fast pass (bf16 or fp32 GEMM, or faiss) gives approximations ``s_hat``
with a proven bound ``|s_hat - s| <= eps`` (:func:`dot_error_bound`). Two items whose
approximations differ by more than ``2 * eps`` are ordered by the approximation; only pairs closer
than that are compared with float64 dot products (bound :data:`U64`-based, ~1e-14), and the rare
pairs that float64 cannot separate either (exact duplicates, adversarial inputs) are compared in
integer arithmetic, which is exact.
"""

from __future__ import annotations

from fractions import Fraction

import math

import numpy as np

from umlbench.errors import UserError

__all__ = [
    "U32",
    "U64",
    "UBF16",
    "compare_pairs",
    "compare_to_value",
    "dot_error_bound",
    "duplicate_ids",
    "exact_dot",
    "exact_dots_scaled",
    "normalise",
    "ref_dots",
]

U32 = 2.0**-24  # unit roundoff of float32 (round to nearest)
UBF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
U64 = 2.0**-53
_TINY = 1e-30  # absorbs flushed subnormal products/sums (at most ~D * 2**-126)
_SCALE = 149  # every float32 is an integer multiple of 2**-149
_CHUNK_PAIRS = 4096


def _gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def dot_error_bound(dim: int, mode: str, norm_sq: float = 1.0) -> float:
    """Bound on ``|s_hat - s|`` for a dot product of two rows with squared norms <= ``norm_sq``.

    ``mode``: "fp32" (float32 products and float32 accumulation of float32 inputs, in any order
    and with or without FMA), "bf16" (inputs rounded to bfloat16 to nearest, exact products,
    float32 accumulation: oneDNN/AMX, TF32 and bf16 tensor cores all qualify), "bf16x3" (each
    input split into two bf16 parts, three of the four cross products summed the same way) or
    "fp64".
    Uses sum |x_d y_d| <= |x| |y| <= norm_sq.
    """
    if mode == "fp32":
        rel = (1 + U32) * (1 + _gamma(dim, U32)) - 1
    elif mode == "bf16":
        rel = (1 + UBF16) ** 2 * (1 + _gamma(dim, U32)) - 1
    elif mode == "bf16x3":
        # x = h + l + r with h = bf16(x), l = bf16(x - h), |r| <= u^2 |x|; the pass sums
        # h.h' + h.l' + l.h' (3 D exact products) in float32. The omitted terms are at most
        # 4.1 u^2 |x_d y_d|; the accumulation adds gamma_3D times the terms' magnitude.
        rel = 4.1 * UBF16**2 + _gamma(3 * dim, U32) * (1 + UBF16) ** 2 * (1 + 2.1 * UBF16)
    elif mode == "fp64":
        rel = (1 + U64) * (1 + _gamma(dim, U64)) - 1
    else:
        raise ValueError(f"unknown precision mode {mode!r}")
    return rel * norm_sq * (1 + 1e-12) + _TINY


def normalise(emb: np.ndarray, rows: np.ndarray | None = None,
              chunk: int = 1 << 15, unit: bool = True) -> np.ndarray:
    """(N, D) float array -> float32 unit rows (of ``rows``, in that order), normalised in
    float64 chunk by chunk.

    Each row is first divided by its largest absolute value (exact up to one rounding), so
    values near the float limits neither overflow nor underflow. NaN/inf and all-zero rows are
    a UserError that names the rows (by their index in ``emb``).

    ``unit=False`` keeps the rows' relative lengths (raw dot-product scoring): every row is
    multiplied by common powers of two, so that no row is longer than 1. That leaves every
    ranking of dot products unchanged and keeps float32 from overflowing. All-zero rows are
    then allowed.
    """
    emb = np.asarray(emb)
    rows = np.arange(len(emb)) if rows is None else np.asarray(rows)
    n = len(rows)
    out = np.empty((n, emb.shape[1]), np.float32)
    bad, zero = [], []
    if not unit:
        return _scaled(emb, rows, chunk, out)
    for start in range(0, n, chunk):
        block = emb[rows[start:start + chunk]].astype(np.float64)
        finite = np.isfinite(block).all(axis=1)
        bad.extend(rows[start + np.flatnonzero(~finite)].tolist())
        block[~finite] = 1.0
        peak = np.abs(block).max(axis=1, keepdims=True)
        zero.extend(rows[start + np.flatnonzero(peak[:, 0] == 0)].tolist())
        peak[peak == 0] = 1.0
        block /= peak
        norm = np.linalg.norm(block, axis=1, keepdims=True)
        norm[norm == 0] = 1.0
        block /= norm
        out[start:start + chunk] = block
    bad.sort()
    zero.sort()
    if bad:
        raise UserError(f"embeddings contain NaN or inf in {len(bad)} row(s): {_rows(bad)}")
    if zero:
        raise UserError(f"embeddings contain {len(zero)} all-zero row(s) (cosine similarity is "
                        f"undefined): {_rows(zero)}")
    return out


def _scaled(emb: np.ndarray, rows: np.ndarray, chunk: int, out: np.ndarray) -> np.ndarray:
    bad, peak = [], 0.0
    for start in range(0, len(rows), chunk):
        block = emb[rows[start:start + chunk]].astype(np.float64)
        finite = np.isfinite(block).all(axis=1)
        bad.extend(rows[start + np.flatnonzero(~finite)].tolist())
        if finite.any():
            peak = max(peak, float(np.abs(block[finite]).max()))
    if bad:
        raise UserError(f"embeddings contain NaN or inf in {len(bad)} row(s): {_rows(sorted(bad))}")
    # Powers of two scale exactly. The first brings every entry below 1 (no overflow in the
    # norms), the second every row's length to at most 1: dot products then lie in [-1, 1],
    # as the rank resolution assumes (``ranks.py``).
    first = math.ldexp(1.0, -math.frexp(peak)[1]) if peak > 0 else 1.0
    longest = 0.0
    for start in range(0, len(rows), chunk):
        block = emb[rows[start:start + chunk]].astype(np.float64) * first
        longest = max(longest, float(np.linalg.norm(block, axis=1).max(initial=0.0)))
        out[start:start + chunk] = block
    if longest > 0:
        second = math.ldexp(1.0, -math.frexp(longest)[1])
        for start in range(0, len(rows), chunk):
            out[start:start + chunk] = (emb[rows[start:start + chunk]].astype(np.float64)
                                        * first * second)
    return out


def _rows(rows: list[int], show: int = 8) -> str:
    head = ", ".join(str(r) for r in rows[:show])
    return f"rows {head}" + (f" and {len(rows) - show} more" if len(rows) > show else "")


def ref_dots(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 dot products of rows ``a[i]`` and ``b[i]`` of ``x`` (N, D) float32 -> (P,).

    The products of two float32 are exact in float64; the sum is within
    ``dot_error_bound(D, "fp64")`` of the exact value, whatever the kernel does."""
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), _CHUNK_PAIRS):  # small chunks: the gathered rows stay in cache
        out[s:s + _CHUNK_PAIRS] = np.einsum("ij,ij->i", x[a[s:s + _CHUNK_PAIRS]],
                                            x[b[s:s + _CHUNK_PAIRS]], dtype=np.float64)
    return out


def _int_row(v: np.ndarray) -> list[int]:
    # float32 -> integer multiple of 2**-149, exactly (float64 holds float32 and 2**149 exactly).
    return [int(f) for f in (v.astype(np.float64) * 2.0**_SCALE)]


def exact_dot(x: np.ndarray, i: int, j: int) -> Fraction:
    """The exact real dot product of float32 rows i and j of ``x``."""
    total = sum(p * q for p, q in zip(_int_row(x[i]), _int_row(x[j])))
    return Fraction(total, 1 << (2 * _SCALE))


def duplicate_ids(x: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """(N,) int64 id per row of ``x`` (N, D) float32: rows with equal ids are bit-identical, so
    their similarities to any query are exactly equal (ties by the gallery index rule).

    Rows are hashed in O(N D) (their bits times random odd 64-bit weights, wrapping) and every row
    is checked against its group's first row; should two distinct rows ever share a hash, the ids
    come from an exact sort instead. Bit-distinct rows with equal values (0.0 and -0.0) get
    distinct ids; the rank resolution then compares them exactly, which is still correct."""
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64)
    bits = np.ascontiguousarray(x).view(np.uint32)
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, x.shape[1], np.uint64) | 1
    h = np.empty(n, np.uint64)
    with np.errstate(over="ignore"):
        for s in range(0, n, chunk):
            h[s:s + chunk] = (bits[s:s + chunk].astype(np.uint64) * weights).sum(1)
    _, first, ids = np.unique(h, return_index=True, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    rep = first[ids]
    same = all(np.array_equal(bits[s:s + chunk], bits[rep[s:s + chunk]])
               for s in range(0, n, chunk))
    if not same:  # a hash collision: fall back to sorting the rows themselves
        ids = np.unique(bits, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return ids


def exact_dots_scaled(x: np.ndarray, q: np.ndarray, a: np.ndarray) -> list[int]:
    """Exact dot products of rows ``q[i]`` and ``a[i]`` of ``x``, as integers scaled by 2**298
    (equal integers mean equal similarities)."""
    return [sum(u * v for u, v in zip(_int_row(x[i]), _int_row(x[j])))
            for i, j in zip(q.tolist(), a.tolist())]


def compare_pairs(x: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray,
                  sa: np.ndarray, sb: np.ndarray, eps64: float) -> np.ndarray:
    """Sign of ``s(q, a) - s(q, b)`` (rows of ``x``), given float64 values ``sa``/``sb`` within
    ``eps64`` of the exact ones: (P,) int8 in {-1, 0, 1}. Pairs float64 cannot separate are
    settled exactly; identical rows are equal without arithmetic."""
    diff = sa - sb
    out = np.sign(diff).astype(np.int8)
    unsure = np.flatnonzero(np.abs(diff) <= 2 * eps64)
    for p in unsure.tolist():
        if a[p] == b[p] or np.array_equal(x[a[p]], x[b[p]]):
            out[p] = 0
            continue
        d = exact_dot(x, q[p], a[p]) - exact_dot(x, q[p], b[p])
        out[p] = (d > 0) - (d < 0)
    return out


def compare_to_value(x: np.ndarray, q: np.ndarray, a: np.ndarray, s: np.ndarray,
                     value: np.ndarray, eps64: float) -> np.ndarray:
    """Sign of ``s(q, a) - value`` (value float64, exact), given float64 ``s`` within ``eps64``."""
    diff = s - value
    out = np.sign(diff).astype(np.int8)
    for p in np.flatnonzero(np.abs(diff) <= eps64).tolist():
        d = exact_dot(x, q[p], a[p]) - Fraction(float(value[p]))
        out[p] = (d > 0) - (d < 0)
    return out
