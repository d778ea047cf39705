"""Evaluation engine vs pytorch-metric-learning's AccuracyCalculator, in the same run.

Sizes: ``UMLBENCH_BENCH_N`` embeddings (default 50,000; the real universal pool is 146,665,
``UMLBENCH_BENCH_N=146665``; PML needs ~23 GB there) of dimension ``UMLBENCH_BENCH_DIM``
(default 128). Each engine runs in a fresh process; time and peak RSS are reported in
pytest-benchmark's extra_info and printed as ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

N = int(os.environ.get("UMLBENCH_BENCH_N", "50000"))
DIM = int(os.environ.get("UMLBENCH_BENCH_DIM", "128"))
HERE = Path(__file__).parent
_results: dict[str, dict] = {}


def _run(engine: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "_run_engine.py"), engine, str(N), str(DIM)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("engine", ["pml", "umlbench", "umlbench-full"])
def test_engine(benchmark, engine):
    if engine == "pml" and os.environ.get("UMLBENCH_BENCH_SKIP_PML"):
        pytest.skip("UMLBENCH_BENCH_SKIP_PML set")
    try:
        res = benchmark.pedantic(_run, args=(engine,), rounds=1, iterations=1)
    except subprocess.CalledProcessError as exc:
        if engine == "pml" and exc.returncode == -9:  # SIGKILL: the kernel's OOM killer
            pytest.skip(f"pytorch-metric-learning was killed (out of memory) at N={N}")
        raise
    benchmark.extra_info.update(res)
    _results[engine] = res
    print(f"\n{engine} at N={res['n']}, dim {DIM}: {res['seconds']:.1f}s, "
          f"peak RSS {res['peak_rss_gb']:.2f} GB")
    if engine != "pml" and "pml" in _results:
        ref = _results["pml"]
        if engine == "umlbench":  # the same computation: the numbers must agree
            for key in ("precision@1", "r_precision", "map@r"):
                assert res["metrics"][key] == pytest.approx(ref["metrics"][key], abs=1e-6)
        ratio_t = ref["seconds"] / res["seconds"]
        ratio_m = ref["peak_rss_gb"] / res["peak_rss_gb"]
        benchmark.extra_info.update({"speedup_vs_pml": ratio_t, "memory_ratio_vs_pml": ratio_m})
        print(f"\n{engine} at N={res['n']}: {res['seconds']:.1f}s vs PML {ref['seconds']:.1f}s "
              f"({ratio_t:.2f}x faster); peak RSS {res['peak_rss_gb']:.2f} GB vs "
              f"{ref['peak_rss_gb']:.2f} GB ({ratio_m:.1f}x less)")
