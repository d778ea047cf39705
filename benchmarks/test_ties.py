"""Ties and collapsed embeddings (issue 22) against ordinary clustered embeddings of the same
size, in the same run: time, peak RSS, and values against the closed form where every row ties.

Cases (``UMLBENCH_TIES``, comma-separated CASE:N; default the issue's goals
``identical:10000,identical:100000,collapsed:50000``), each measured next to ``clustered`` at
the same N (``_run_ties.py``, one fresh process per run). Dimension ``UMLBENCH_BENCH_DIM``
(default 128). Run with ``-s`` for the table:

    UMLBENCH_TIES=identical:10000,collapsed:10000 python -m pytest benchmarks/test_ties.py -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = [(c.split(":")[0], int(c.split(":")[1])) for c in os.environ.get(
    "UMLBENCH_TIES", "identical:10000,identical:100000,collapsed:50000").split(",") if c]
RUNS = sorted({(case, n) for case, n in CASES} | {("clustered", n) for _, n in CASES},
              key=lambda cn: (cn[1], cn[0] != "clustered"))
DIM = int(os.environ.get("UMLBENCH_BENCH_DIM", "128"))
HERE = Path(__file__).parent
_results: dict[tuple[str, int], dict] = {}


def _run(case: str, n: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "_run_ties.py"), case, str(n), str(DIM)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("case", "n"), RUNS)
def test_ties(benchmark, case, n):
    res = benchmark.pedantic(_run, args=(case, n), rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    _results[(case, n)] = res
    print(f"\n{case} N={n}: {res['seconds']:.1f}s, peak RSS {res['peak_rss_gb']:.2f} GB "
          f"(+{res['added_rss_gb']:.2f} GB), load {res['load_avg']:.1f}")
    assert res["per_dataset_equal"]  # one dataset: both scopes are the same ranking
    if case == "identical":
        assert res["reference_equal"], res["metrics"]


def test_table():
    if not _results:
        pytest.skip("nothing ran")
    lines = ["\n| input | N | time | peak RSS (added by the evaluation) | time / clustered |"
             " values |", "|---|---|---|---|---|---|"]
    for case, n in RUNS:
        r = _results.get((case, n))
        if r is None:
            continue
        base = _results.get(("clustered", n))
        ratio = f"{r['seconds'] / base['seconds']:.2f}x" if base else "–"
        check = ("= closed form" if r.get("reference_equal") else
                 "exact engine" if case != "identical" else "DIFFERENT")
        lines.append(f"| {case} | {n:,} | {r['seconds']:.1f} s | {r['peak_rss_gb']:.2f} GB "
                     f"(+{r['added_rss_gb']:.2f}) | {ratio} | {check} |")
    loads = ", ".join(f"{r['load_avg']:.1f}" for r in _results.values())
    lines.append(f"load average during the runs: {loads}")
    print("\n".join(lines))
