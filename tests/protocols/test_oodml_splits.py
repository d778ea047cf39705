"""ooDML split construction: FID, class swapping, removal, level selection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from umlbench.protocols.oodml_splits import (frechet_distance, removal_splits, select_levels,
                                             swap_splits)


def direct_fid(a, b):
    """The textbook formula with scipy's matrix square root (full-rank inputs only)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(root))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_matches_direct_formula_on_small_gaussians(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(loc=0.7, size=(45, 5)) @ rng.normal(size=(5, 5))
    assert frechet_distance(a, b) == pytest.approx(direct_fid(a, b), rel=1e-6)


def test_fid_of_identical_sets_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 40))  # rank-deficient: fewer points than dimensions
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + 1.0) == pytest.approx(40.0, rel=1e-6)  # ||shift||^2


def test_swapping_exchanges_border_classes_first():
    # 1-D class means: train on the left, test on the right. The border classes are the
    # rightmost train class (x=4) and the leftmost test class (x=5): they swap first.
    feats = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [8.0], [9.0]])
    splits = swap_splits(feats, [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], iterations=2, per_iter=1,
                         history=1)
    assert [s.key for s in splits] == ["0", "1", "2"]
    assert sorted(splits[1].train) == [0, 1, 2, 3, 5]
    assert sorted(splits[1].test) == [4, 6, 7, 8, 9]
    # History blocks classes 4 and 5 from bouncing straight back; the next border pair moves.
    assert sorted(splits[2].train) == [0, 1, 2, 5, 6]


def test_swapping_raises_fid_and_inverse_lowers_it():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 8))
    train, test = list(range(20)), list(range(20, 40))
    hard = swap_splits(feats, train, test, 10, 2, history=3)
    easy = swap_splits(feats, train, test, 10, 2, history=3, inverse=True)
    assert hard[-1].fid > hard[0].fid
    assert min(s.fid for s in easy) <= easy[0].fid
    assert all(int(s.key) <= 0 for s in easy)
    for s in hard + easy:
        assert not set(s.train) & set(s.test)
        assert len(s.train) == len(s.test) == 20


def test_removal_continues_past_the_plateau():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(60, 6))
    hard = swap_splits(feats, list(range(30)), list(range(30, 60)), 40, 2, history=3)
    more = removal_splits(feats, hard[-1], 20, 2, history=3, min_classes=18)
    assert more, "removal produced no split"
    assert all(s.key.startswith("R") for s in more)
    assert all(len(s.train) >= 18 and not set(s.train) & set(s.test) for s in more)
    assert all(set(s.removed).isdisjoint(s.train + s.test) for s in more)


def test_select_levels_strictly_increasing_and_keeps_default():
    from umlbench.protocols.oodml_splits import Split

    cands = [Split(str(k), [0], [1], fid) for k, fid in
             [(-4, 1.0), (-2, 3.0), (0, 5.0), (2, 6.0), (4, 9.0), (6, 9.0), (8, 12.0),
              (10, 13.0), (12, 20.0)]]
    chosen = select_levels(cands, 5)
    fids = [s.fid for s in chosen]
    assert len(chosen) == 5
    assert all(a < b for a, b in zip(fids, fids[1:]))
    assert fids[0] == 1.0 and fids[-1] == 20.0
    assert "0" in [s.key for s in chosen]
