"""Exactness on adversarial near-tie inputs: index for index equal to the exact search.

The reference (``reference.knn_bruteforce``) ranks by the exact rational dot product of the
float32 unit rows, ties to the smaller gallery index. Plain float32 search cannot resolve these
inputs (their similarities differ by less than its rounding error); every umlbench backend must.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.metrics.reference import knn_bruteforce, unit_rows
from umlbench.metrics.exact import dot_error_bound, normalise
from umlbench.metrics.knn import BACKENDS, exact_knn

CPU_BACKENDS = [b for b in BACKENDS if b != "faiss-gpu"]


def _near_duplicates(rng, n=40, dim=16):
    """One direction plus relative perturbations of ~1e-6: similarities within ~1e-7 of each
    other, below bf16's resolution and at float32's."""
    base = rng.normal(size=dim)
    return (base[None] * (1 + 1e-6 * rng.integers(-3, 4, size=(n, dim)))).astype(np.float32)


def _permuted_ties(rng, n=40, dim=12):
    """Rows that are permutations of each other, and queries with repeated coordinates: many
    similarities are exactly equal as real numbers but sum in different float orders."""
    vals = rng.normal(size=dim).astype(np.float32)
    x = np.stack([rng.permutation(vals) for _ in range(n)])
    x[: n // 4] = np.repeat(rng.normal(size=(n // 4, 3)).astype(np.float32), 4, axis=1)
    return x


def _duplicates_and_scale(rng, n=40, dim=8):
    """Exact duplicates, and the same direction at magnitudes 1e-30 .. 1e30."""
    x = rng.normal(size=(n // 2, dim)).astype(np.float32)
    x = np.concatenate([x, x[rng.integers(0, n // 2, n - n // 2)]])
    return (x * (10.0 ** rng.integers(-30, 31, n))[:, None]).astype(np.float32)


def _cancellation(rng, n=40, dim=16):
    """Large opposite components whose sum is tiny: float32 products round away the answer."""
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, :4] = np.float32(1e3) * np.sign(rng.normal(size=(n, 4)))
    x[:, 4:] *= np.float32(1e-3)
    return x


CASES = {"near-duplicates": _near_duplicates, "permuted-ties": _permuted_ties,
         "duplicates-and-scale": _duplicates_and_scale, "cancellation": _cancellation}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exact_knn_index_for_index(case, backend):
    rng = np.random.default_rng(sorted(CASES).index(case))
    emb = CASES[case](rng)
    x = normalise(emb)
    assert np.array_equal(x, unit_rows(emb))
    n, k = len(x), 12
    want = knn_bruteforce(emb, k, np.arange(n), np.arange(n))
    for block in (None, (5, 7)):
        idx, _ = exact_knn(x, k, backend=backend, block=block)
        assert np.array_equal(idx, want), (case, backend, block)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exact_knn_query_gallery_split(backend):
    rng = np.random.default_rng(9)
    emb = _near_duplicates(rng, 50)
    x = normalise(emb)
    qrow, grow = np.arange(0, 30), np.arange(20, 50)  # rows 20..29 are both
    idx, _ = exact_knn(x, 25, qrow, grow, backend=backend, block=(4, 6))
    assert np.array_equal(idx, knn_bruteforce(emb, 25, qrow, grow))


def test_plain_float32_search_gets_these_wrong():
    # The inputs are hard: a float32 GEMM ranks some near-ties in the wrong order.
    rng = np.random.default_rng(0)
    emb = _cancellation(rng, 40)
    x = normalise(emb)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    plain = np.argsort(-s, axis=1, kind="stable")[:, :12]
    assert not np.array_equal(plain, knn_bruteforce(emb, 12, np.arange(40), np.arange(40)))


@pytest.mark.parametrize("mode", ["fp32", "bf16", "bf16x3"])
def test_error_bound_holds_on_random_and_adversarial_rows(mode):
    import torch

    from umlbench.metrics.blockpass import matmul_precision, operand

    rng = np.random.default_rng(1)
    cpu = torch.device("cpu")
    for emb in (rng.normal(size=(300, 128)), _cancellation(rng, 300, 128),
                _near_duplicates(rng, 300, 128)):
        x = normalise(emb)
        xt = torch.from_numpy(x)
        with matmul_precision(mode, cpu):
            approx = (operand(xt, mode) @ operand(xt, mode, 1).T).double().numpy()
        exact = x.astype(np.float64) @ x.astype(np.float64).T
        err = np.abs(approx - exact).max()
        assert err <= dot_error_bound(128, mode, 1.0 + 1e-6)
        if mode == "bf16x3":  # the split is what makes the bound 100x tighter than bf16
            assert dot_error_bound(128, mode) < dot_error_bound(128, "bf16") / 90
