"""The statistics of umlbench.metrics.paired, checked against simulations with a known truth,
scipy and brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from umlbench.metrics import mean_ci95, paired
from umlbench.metrics.summary import harmonic_mean


def _two_methods(rng, n, delta, seeds=1, seed_sd=0.0):
    """Hits of two methods on ``n`` queries drawn from a population where query i is solved by
    A with probability p_i ~ U(0.2, 0.7) and by B with p_i + delta (correlated, as real methods
    are: hard queries are hard for both); each seed shifts a method's probabilities by
    N(0, seed_sd). True difference of the expected means: delta."""
    p = rng.uniform(0.2, 0.7, n)
    a = [rng.random(n) < np.clip(p + rng.normal(0, seed_sd), 0, 1) for _ in range(seeds)]
    b = [rng.random(n) < np.clip(p + delta + rng.normal(0, seed_sd), 0, 1) for _ in range(seeds)]
    return np.array(a, float), np.array(b, float)


def _simulate(delta, reps, n, seeds=1, seed_sd=0.0, resamples=1000):
    rng = np.random.default_rng(2026)
    covered = rejected = 0
    for r in range(reps):
        a, b = _two_methods(rng, n, delta, seeds, seed_sd)
        d = paired.difference(paired.bootstrap({"x": [a, b]}, resamples=resamples, seed=r),
                              "x", 0, 1)
        covered += d.contains(delta)
        rejected += d.p_value < 0.05
    return covered / reps, rejected / reps


def test_simulation_coverage_and_false_positive_rate():
    # 1,000 repetitions of 300 queries (500 resamples each): the binomial standard error of a
    # 95% coverage or a 5% rejection rate is 0.7 points.
    coverage, power = _simulate(0.04, reps=1000, n=300, resamples=500)
    assert 0.92 <= coverage <= 0.98
    assert power > 0.1  # a 4-point gap on 300 queries is sometimes detected
    null_coverage, false_positives = _simulate(0.0, reps=1000, n=300, resamples=500)
    assert 0.92 <= null_coverage <= 0.98
    assert false_positives <= 0.065  # nominal 5% plus two standard errors


def test_two_level_bootstrap_covers_seed_variation():
    # Seeds that move a method by a few points: a bootstrap over queries alone (the seeds'
    # mean outcome per query, one level) misses that variation and under-covers; resampling
    # the seeds first covers it (two-level bootstraps are known to be conservative).
    rng = np.random.default_rng(7)
    two = one = 0
    reps = 150
    for r in range(reps):
        a, b = _two_methods(rng, 200, 0.05, seeds=4, seed_sd=0.04)
        d2 = paired.difference(paired.bootstrap({"x": [a, b]}, resamples=500, seed=r), "x", 0, 1)
        d1 = paired.difference(paired.bootstrap({"x": [a.mean(0, keepdims=True),
                                                       b.mean(0, keepdims=True)]},
                                                resamples=500, seed=r), "x", 0, 1)
        two += d2.contains(0.05)
        one += d1.contains(0.05)
    assert two / reps >= 0.92
    assert one / reps < two / reps


def test_bootstrap_spread_matches_the_analytic_standard_error():
    # The bootstrap distribution of a mean of n values has variance var_pop(x) / n (ddof 0).
    rng = np.random.default_rng(0)
    x = rng.random((1, 60))
    reps = paired.bootstrap({"s": [x]}, resamples=20000, seed=3)
    assert reps.draws["s"].std() == pytest.approx(x.std() / math.sqrt(60), rel=0.03)
    assert reps.draws["s"].mean() == pytest.approx(x.mean(), abs=3 * x.std() / math.sqrt(60e4))
    assert reps.estimate["s"][0] == pytest.approx(x.mean())


def test_fixed_seed_gives_identical_intervals():
    rng = np.random.default_rng(1)
    a, b = _two_methods(rng, 300, 0.02, seeds=3, seed_sd=0.01)
    scopes = {"d1": [a, b], "d2": [a[:, ::-1], b[:, ::-1]], "universal": [a, b]}
    one = paired.bootstrap(scopes, resamples=300, seed=5)
    two = paired.bootstrap(scopes, resamples=300, seed=5)
    other = paired.bootstrap(scopes, resamples=300, seed=6)
    for scope in ("d1", "d2", "universal", "harmonic_mean"):
        assert paired.difference(one, scope, 0, 1) == paired.difference(two, scope, 0, 1)
        assert paired.interval(one, scope, 1) == paired.interval(two, scope, 1)
        assert not np.array_equal(one.draws[scope], other.draws[scope])


def test_harmonic_mean_resamples_every_dataset_jointly():
    rng = np.random.default_rng(4)
    d1 = [rng.random((1, 80)), rng.random((1, 80))]
    d2 = [rng.random((1, 50)) * 0.5, rng.random((1, 50)) * 0.5]
    reps = paired.bootstrap({"d1": d1, "d2": d2, "universal": d1}, resamples=200, seed=0)
    for r in range(2):
        # Replicate b of the HM is the HM of replicate b of each dataset (same index).
        hm = 2 / (1 / reps.draws["d1"][:, r] + 1 / reps.draws["d2"][:, r])
        np.testing.assert_allclose(reps.draws["harmonic_mean"][:, r], hm)
        assert reps.estimate["harmonic_mean"][r] == pytest.approx(
            harmonic_mean([d1[r].mean(), d2[r].mean()]))


def test_harmonic_mean_with_seeds_averages_each_seeds_hm():
    rng = np.random.default_rng(9)
    d1, d2 = rng.random((3, 40)), rng.random((3, 30))
    reps = paired.bootstrap({"d1": [d1], "d2": [d2]}, resamples=10, seed=0)
    per_seed = [harmonic_mean([d1[s].mean(), d2[s].mean()]) for s in range(3)]
    assert reps.estimate["harmonic_mean"][0] == pytest.approx(np.mean(per_seed))


def test_two_level_with_one_seed_is_the_query_bootstrap():
    rng = np.random.default_rng(2)
    x = rng.random((1, 100))
    reps = paired.bootstrap({"s": [x]}, resamples=50, seed=11)
    # By hand: the same generator, no seed draw for one seed, then multinomial query counts.
    g = np.random.default_rng(11)
    idx = g.integers(0, 100, size=(50, 100), dtype=np.int32)
    np.testing.assert_allclose(reps.draws["s"][:, 0], x[0][idx].mean(1))


def test_many_columns_use_counts_with_the_same_draws():
    # Five rows (counts path) and each row alone (gather path) see the same query draws.
    rng = np.random.default_rng(5)
    rows = [rng.random((1, 120)) for _ in range(5)]
    together = paired.bootstrap({"s": rows}, resamples=70, seed=2)
    for r, x in enumerate(rows):
        alone = paired.bootstrap({"s": [x]}, resamples=70, seed=2)
        np.testing.assert_allclose(together.draws["s"][:, r], alone.draws["s"][:, 0],
                                   rtol=1e-12)


def _exact_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p-value at p = 1/2, summed by hand (the law is symmetric)."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("only_a,only_b,both,neither", [(3, 12, 50, 35), (20, 20, 10, 5),
                                                      (0, 7, 3, 0), (40, 25, 100, 20)])
def test_mcnemar_equals_the_exact_binomial_test(only_a, only_b, both, neither):
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * neither, float)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * neither, float)
    order = np.random.default_rng(0).permutation(len(a))
    p, na, nb = paired.mcnemar_exact(a[order], b[order])
    assert (na, nb) == (only_a, only_b)
    assert p == stats.binomtest(only_b, only_a + only_b, 0.5).pvalue
    assert p == pytest.approx(_exact_two_sided(only_b, only_a + only_b), rel=1e-12)


def test_mcnemar_without_discordant_queries():
    assert paired.mcnemar_exact(np.ones(5), np.ones(5)) == (1.0, 0, 0)


def test_holm_on_known_p_values():
    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04;
    # monotone: 0.02, 0.03, 0.06, 0.06.
    np.testing.assert_allclose(paired.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(paired.holm([0.5, 0.9]), [1.0, 1.0])
    out = paired.holm([0.01, float("nan"), 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_holm_matches_its_definition_on_random_p_values():
    rng = np.random.default_rng(3)
    p = rng.random(12) ** 3
    m = len(p)
    order = np.argsort(p)
    expected = np.empty(m)
    for rank, i in enumerate(order):  # max over the smaller ones of (m - j) p_(j), capped at 1
        expected[i] = min(1.0, max((m - j) * p[order[j]] for j in range(rank + 1)))
    np.testing.assert_allclose(paired.holm(p), expected)


def test_episode_interval_is_scipys_student_t():
    v = [0.61, 0.58, 0.66, 0.63, 0.59, 0.7]
    mean, half = mean_ci95(v)
    low, high = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert mean == pytest.approx(np.mean(v))
    assert (mean - half, mean + half) == pytest.approx((low, high))
    assert mean_ci95([0.5]) == (0.5, 0.0)
    assert all(math.isnan(x) for x in mean_ci95([]))


def test_p_value_agrees_with_the_interval():
    rng = np.random.default_rng(8)
    for r in range(30):
        a, b = _two_methods(rng, 150, 0.04)
        d = paired.difference(paired.bootstrap({"x": [a, b]}, resamples=999, seed=r), "x", 0, 1)
        excludes = not d.contains(0.0)
        assert excludes == (d.p_value < 0.05) or abs(d.p_value - 0.05) < 0.01
