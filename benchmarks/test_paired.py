"""Speed of the paired bootstrap (issue 23: 1,000 resamples over the 146,665 queries of the
full ``uml`` suite in at most 5 s on 2 cores).

Two cases, each in this process with BLAS limited to 2 threads (``threadpoolctl``):

- ``universal``: two rows, one seed each, the universal scope alone (146,665 queries);
- ``compare``: what ``umlbench compare`` bootstraps for two single runs of the full suite: the
  8 dataset scopes (their query counts partition 146,665) and universal, plus the harmonic
  mean, i.e. twice the queries of ``universal``.

Wall and CPU times go to pytest-benchmark's ``extra_info`` and are printed (run with ``-s``);
nothing asserts a time. The bootstrap is mostly single-threaded (drawing and gathering
indices), so on a shared machine the CPU time is the fairer figure:

    python -m pytest benchmarks/test_paired.py -s
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from umlbench.metrics import paired

N_UNIVERSAL = 146_665
RESAMPLES = int(os.environ.get("UMLBENCH_BENCH_RESAMPLES", "1000"))
# Query counts of the eight test sets (PUMA's universal suite); they sum to N_UNIVERSAL.
SIZES = {"cub": 5924, "cars": 8131, "sop": 60502, "inshop": 14218, "nabirds": 24633,
         "dogs": 8580, "flowers": 6149, "aircraft": 18528}
_times: dict[str, float] = {}


def _hits(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((1, n)) < p).astype(np.float64)


def _scopes(case: str) -> dict[str, list[np.ndarray]]:
    if case == "universal":
        return {"universal": [_hits(N_UNIVERSAL, 0.7, 0), _hits(N_UNIVERSAL, 0.71, 1)]}
    assert sum(SIZES.values()) == N_UNIVERSAL
    scopes = {d: [_hits(n, 0.7, 2 * i), _hits(n, 0.71, 2 * i + 1)]
              for i, (d, n) in enumerate(SIZES.items())}
    scopes["universal"] = [np.concatenate([s[r] for s in scopes.values()], axis=1)
                           for r in range(2)]
    return scopes


@pytest.mark.parametrize("case", ["universal", "compare"])
def test_bootstrap_speed(benchmark, case):
    scopes = _scopes(case)

    def run():
        with threadpool_limits(2):
            start, cpu = time.perf_counter(), time.process_time()
            reps = paired.bootstrap(scopes, resamples=RESAMPLES, seed=0)
            return reps, time.perf_counter() - start, time.process_time() - cpu

    reps, seconds, cpu = benchmark.pedantic(run, rounds=1, iterations=1)
    d = paired.difference(reps, "universal", 0, 1)
    assert d.low < d.estimate < d.high
    _times[case] = seconds
    load = os.getloadavg()[0]
    benchmark.extra_info.update({"seconds": seconds, "cpu_seconds": cpu, "resamples": RESAMPLES,
                                 "load_avg": load,
                                 "queries": sum(m[0].shape[1] for m in scopes.values())})
    print(f"\n{case}: {RESAMPLES} resamples over {benchmark.extra_info['queries']:,} query "
          f"draws per replicate: {seconds:.2f} s wall, {cpu:.2f} s CPU (load average "
          f"{load:.1f}; on a busy machine the wall time overstates the cost)")
