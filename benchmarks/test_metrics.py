"""Evaluation engine vs pytorch-metric-learning vs a plain float32 GEMM pass, in the same run.

Sizes: ``UMLBENCH_BENCH_N``, comma-separated (default 50000; the real universal pool is
146,665: ``UMLBENCH_BENCH_N=50000,146665`` measures both in one run; PML needs ~23 GB there and
is skipped when the kernel kills it) of dimension ``UMLBENCH_BENCH_DIM`` (default 128).
``UMLBENCH_BENCH_FULL=1`` adds every metric per dataset and universally (NMI/F1 included), and
``UMLBENCH_BENCH_FULL=2`` also its float32 twin, whose values must be identical.

Each engine runs in a fresh process (``_run_engine.py``); time and peak RSS go to
pytest-benchmark's extra_info, and the last test prints the table with ratios (run with ``-s``):

    UMLBENCH_BENCH_N=50000,146665 python -m pytest benchmarks/test_metrics.py -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SIZES = [int(s) for s in os.environ.get("UMLBENCH_BENCH_N", "50000").split(",") if s]
DIM = int(os.environ.get("UMLBENCH_BENCH_DIM", "128"))
FULL = int(os.environ.get("UMLBENCH_BENCH_FULL", "0"))
ENGINES = ["gemm", "umlbench", "umlbench-fp32", "umlbench-bf16x3", "pml"] + \
    (["umlbench-full"] if FULL else []) + (["umlbench-full-fp32"] if FULL > 1 else [])
HERE = Path(__file__).parent
THREE = ("precision@1", "r_precision", "map@r")
_results: dict[tuple[int, str], dict] = {}


def _run(engine: str, n: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "_run_engine.py"), engine, str(n), str(DIM)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("engine", ENGINES)
def test_engine(benchmark, engine, n):
    if engine == "pml" and os.environ.get("UMLBENCH_BENCH_SKIP_PML"):
        pytest.skip("UMLBENCH_BENCH_SKIP_PML set")
    try:
        res = benchmark.pedantic(_run, args=(engine, n), rounds=1, iterations=1)
    except subprocess.CalledProcessError as exc:
        if engine == "pml" and exc.returncode == -9:  # SIGKILL: the kernel's OOM killer
            pytest.skip(f"pytorch-metric-learning was killed (out of memory) at N={n}")
        raise
    benchmark.extra_info.update(res)
    _results[(n, engine)] = res
    print(f"\n{engine} at N={res['n']}, dim {DIM}: {res['seconds']:.1f}s, "
          f"peak RSS {res['peak_rss_gb']:.2f} GB, load {res['load_avg']:.1f}")
    ours = _results.get((n, "umlbench"))
    if engine in ("umlbench-fp32", "umlbench-bf16x3") and ours:  # exact: identical
        assert res["metrics"] == ours["metrics"]
    if engine == "pml" and ours:  # PML ranks by float32 dot products; agrees to rounding
        for key in THREE:
            assert res["metrics"][key] == pytest.approx(ours["metrics"][key], abs=1e-5)
    full = _results.get((n, "umlbench-full"))
    if engine == "umlbench-full-fp32" and full:
        assert res["metrics"] == full["metrics"]


def test_table():
    """Print, per size, every engine's time and peak memory and the ratios."""
    if not _results:
        pytest.skip("no engine ran")
    for n in SIZES:
        gemm, pml = _results.get((n, "gemm")), _results.get((n, "pml"))
        lines = [f"\nN = {n:,} x {DIM}",
                 "| engine | metrics | backend | time | peak RSS | time / fp32 GEMM pass "
                 "| time / PML | RSS / PML |", "|---|---|---|---|---|---|---|---|"]
        for engine in ENGINES:
            r = _results.get((n, engine))
            if r is None:
                continue
            what = ("all pairs, no selection" if engine == "gemm" else
                    "all, per dataset + universal" if engine.startswith("umlbench-full") else
                    "P@1, R-Precision, MAP@R")
            ratio = (lambda ref, key: f"{r[key] / ref[key]:.2f}" if ref else "–")  # noqa: E731
            lines.append(f"| {engine} | {what} | {r['backend'] or '–'} | {r['seconds']:.1f} s "
                         f"| {r['peak_rss_gb']:.2f} GB | {ratio(gemm, 'seconds')} "
                         f"| {ratio(pml, 'seconds')} | {ratio(pml, 'peak_rss_gb')} |")
        any_run = next(iter(_results.values()))
        loads = ", ".join(f"{r['load_avg']:.1f}" for (m, _), r in _results.items() if m == n)
        lines.append(f"BLAS: {any_run['blas']}; load average during the runs: {loads}")
        print("\n".join(lines))
