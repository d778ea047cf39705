"""ooDML split construction: FID forms, the official swap/removal procedure, tables, levels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from umlbench.protocols.oodml_splits import (
    OFFICIAL_SCHEDULES,
    Split,
    auto_splits,
    frechet_distance,
    official_splits,
    removal_splits,
    select_levels,
    swap_splits,
)


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
    for form in ("auto", "lowrank", "dxd"):
        assert frechet_distance(a, b, form) == pytest.approx(direct_fid(a, b), rel=1e-6)


@pytest.mark.parametrize("shape", [(30, 25, 40), (90, 70, 40), (50, 120, 40), (41, 41, 40)])
def test_dxd_and_lowrank_forms_agree(shape):
    # Both exact: n < d (rank-deficient covariances), n > d, and mixed sizes. In the d x d
    # form the zero eigenvalues come out as rounding noise of ~1e-15, whose square roots add
    # ~1e-8 each: agreement to ~1e-8 relative is the float64 limit there.
    n1, n2, d = shape
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=(n1, d)) * np.linspace(0.2, 2.0, d)
    b = rng.normal(loc=0.3, size=(n2, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    low, dxd = frechet_distance(a, b, "lowrank"), frechet_distance(a, b, "dxd")
    assert dxd == pytest.approx(low, rel=1e-7)
    assert frechet_distance(a, b) == pytest.approx(low, rel=1e-9)


def test_fid_of_identical_sets_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 40))  # rank-deficient: fewer points than dimensions
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + 1.0) == pytest.approx(40.0, rel=1e-6)  # ||shift||^2
    with pytest.raises(ValueError, match="unknown form"):
        frechet_distance(a, a, "sqrtm")


# Facts computed offline with the official split_helpers.split_maker and
# split_maker_with_class_removal (Confusezius/Characterizing_Generalization_in_DeepMetric
# Learning @ e8a4171) on these features: classes 0-9 train, 10-19 test, class lists in list
# order (positions matter there), FIDs from its metric_fid (full-rank here, so exact).
def _toy():
    rng = np.random.default_rng(7)
    return rng.normal(size=(20, 4)) + np.linspace(0, 2, 20)[:, None]


def test_swaps_reproduce_the_official_split_maker():
    got = swap_splits(_toy(), list(range(10)), list(range(10, 20)), 4, 2, 2)
    assert [s.key for s in got] == ["0", "2", "4", "6"]
    assert got[1].train == [0, 1, 2, 3, 4, 5, 6, 7, 17, 10]
    assert got[1].test == [9, 11, 12, 13, 14, 15, 16, 8, 18, 19]
    assert got[2].train == [0, 1, 2, 11, 4, 5, 6, 7, 17, 9]
    assert got[3].train == [0, 15, 2, 11, 4, 5, 6, 7, 8, 9]
    assert got[3].test == [10, 3, 12, 13, 14, 1, 16, 17, 18, 19]
    fids = [10.246688, 9.628505, 6.839935, 6.301566]
    assert [s.fid for s in got] == pytest.approx(fids, abs=1e-6)


def test_inverse_swaps_reproduce_the_official_easier_splits():
    got = swap_splits(_toy(), list(range(10)), list(range(10, 20)), 3, 2, 3, inverse=True)
    assert [s.key for s in got] == ["0", "-2", "-4"]
    assert got[1].train == [0, 1, 2, 3, 18, 14, 6, 7, 8, 9]
    assert got[2].train == [13, 1, 16, 3, 18, 14, 6, 7, 8, 9]
    assert got[2].test == [10, 11, 12, 0, 5, 15, 2, 17, 4, 19]
    assert [s.fid for s in got] == pytest.approx([10.246688, 2.052396, 1.608036], abs=1e-6)


def test_removal_reproduces_the_official_rule():
    # Iterations 0, 4 and 5 raised the FID: undone, and the picked classes removed (official
    # `adjusted_fid >= fid`); iterations 1-3 lowered it: the swaps were kept.
    got = removal_splits(_toy(), list(range(10)), list(range(10, 20)), 7, 1, 2)
    assert [s.key for s in got] == [f"R{i}" for i in range(7)]
    assert got[1].train == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert got[1].test == [11, 12, 13, 14, 15, 16, 17, 18, 19]
    assert got[4].train == [0, 15, 2, 12, 4, 5, 6, 7, 17]
    assert got[4].test == [11, 3, 13, 14, 1, 16, 8, 18, 19]
    assert got[6].train == [0, 15, 2, 4, 5, 6, 7]
    assert got[6].test == [11, 13, 14, 1, 16, 18, 19]
    fids = [10.246688, 13.27596, 11.864382, 8.843252, 6.886872, 8.482988, 12.651416]
    assert [s.fid for s in got] == pytest.approx(fids, abs=1e-6)
    assert [s.key for s in removal_splits(_toy(), list(range(10)), list(range(10, 20)), 7, 1,
                                          2, until="R3")] == ["R0", "R1", "R2", "R3"]


def test_monotone_rule_only_keeps_swaps_that_raise_the_fid():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(60, 6)) + np.linspace(0, 3, 60)[:, None]
    got = removal_splits(feats, list(range(30)), list(range(30, 60)), 20, 2, 3, "monotone")
    fids = [s.fid for s in got]
    assert all(b >= a - 1e-9 for a, b in zip(fids, fids[1:]))
    assert len(got[-1].train) < 30  # some iterations removed classes
    for s in got:
        assert not set(s.train) & set(s.test) and len(s.train) == len(s.test)
    with pytest.raises(ValueError, match="unknown removal rule"):
        removal_splits(feats, list(range(30)), list(range(30, 60)), 2, 1, 1, "greedy")


def test_official_tables_are_those_of_create_dataset_splits():
    cub, cars, sop = (OFFICIAL_SCHEDULES[k] for k in ("cub", "cars", "sop"))
    assert cub.levels == ("-20", "-10", "0", "6", "10", "30", "R22", "R48", "R66")
    assert cars.levels == ("0", "6", "16", "20", "30", "R18", "R42", "R66")
    assert sop.levels == ("0", "1000", "2000", "3000", "4000", "5000", "R2000", "R6000")
    assert (cub.n_swaps, cub.swaps_iter, cub.history, cub.easy_history) == (25, 2, 5, 30)
    assert (sop.n_swaps, sop.swaps_iter) == (20, 1000)
    assert cub.removal_start == cars.removal_start == "48" and sop.removal_start == "19000"
    assert cars.published_fid[0] == 8.59 and cars.published_fid[-1] == 123.03


def test_official_cars_schedule_on_synthetic_class_means():
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(196, 16)) + np.linspace(0, 4, 196)[:, None] * rng.normal(size=16)
    train, test = list(range(98)), list(range(98, 196))
    got = official_splits(feats, train, test, OFFICIAL_SCHEDULES["cars"])
    assert [s.key for s in got] == list(OFFICIAL_SCHEDULES["cars"].levels)
    assert all(s.fid is not None for s in got)
    assert [len(s.train) for s in got[:5]] == [98] * 5
    assert got[0].train == train  # level 1 = the default split
    hard = swap_splits(feats, train, test, 25, 2, 5)
    start = next(s for s in hard if s.key == "48")
    ref = removal_splits(feats, start.train, start.test, 35, 2, 5)
    assert got[5].train == next(s for s in ref if s.key == "R18").train
    assert got[7].fid == pytest.approx(next(s for s in ref if s.key == "R66").fid)


def test_official_cub_schedule_has_easier_splits():
    rng = np.random.default_rng(6)
    feats = rng.normal(size=(200, 12)) + np.linspace(0, 4, 200)[:, None]
    got = official_splits(feats, list(range(100)), list(range(100, 200)),
                          OFFICIAL_SCHEDULES["cub"])
    assert [s.key for s in got][:3] == ["-20", "-10", "0"]
    assert got[0].fid < got[2].fid  # inverse swaps make the split easier


def test_auto_levels_are_strictly_increasing_with_removal_on_top():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(60, 6)) + np.linspace(0, 3, 60)[:, None] * rng.normal(size=6)
    got = auto_splits(feats, list(range(30)), list(range(30, 60)), 8)
    fids = [s.fid for s in got]
    assert len(got) == 8 and all(a < b for a, b in zip(fids, fids[1:]))
    assert "0" in [s.key for s in got]
    removal = [s for s in got if s.key.startswith("R")]
    assert all(s.fid > max(x.fid for x in got if not x.key.startswith("R")) for s in removal)
    assert all(len(s.train) >= 18 for s in got)  # keep_fraction 0.6 of 30


def test_select_levels_strictly_increasing_and_keeps_default():
    cands = [Split(str(k), [0], [1], fid) for k, fid in
             [(-4, 1.0), (-2, 3.0), (0, 5.0), (2, 6.0), (4, 9.0), (6, 9.0), (8, 12.0),
              (10, 13.0), (12, 20.0)]]
    chosen = select_levels(cands, 5)
    fids = [s.fid for s in chosen]
    assert len(chosen) == 5
    assert all(a < b for a, b in zip(fids, fids[1:]))
    assert fids[0] == 1.0 and fids[-1] == 20.0
    assert "0" in [s.key for s in chosen]
