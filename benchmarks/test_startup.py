"""How long the CLI takes to answer when it has nothing heavy to do (issue 16: `list`, `--help`
and every user error must print in under a second).

Each case runs ``python -m umlbench ...`` in a fresh process, as a user would, and measures the
wall time until it exits. Beside them, in the same run, the baseline they used to pay: a fresh
interpreter importing torch, timm and faiss (what `umlbench list` did before the registries
became lazy). Times and the ratio to that baseline go to pytest-benchmark's ``extra_info`` and
are printed; the test asserts only that each case fails or succeeds as expected, never a time.

Run with ``python -m pytest benchmarks/test_startup.py -s`` (the main suite collects ``tests/``
only). Under load, compare the ratios, not the seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ROUNDS = int(os.environ.get("UMLBENCH_BENCH_ROUNDS", "5"))

# name -> (arguments, expected exit status)
CASES = {
    "help": (["--help"], 0),
    "run --help": (["run", "--help"], 0),
    "list": (["list"], 0),
    "unknown method": (["run", "--method", "nope"], 2),
    "--dataset under uml": (["run", "--method", "puma", "--dataset", "nosuch"], 2),
    "bad config key": (["run", "--method", "puma", "--set", "train.epoch=1"], 2),
    "negative seed": (["run", "--method", "puma", "--seed", "-1"], 2),
    "not prepared": (["run", "--method", "puma"], 2),
    "bad choice": (["leaderboard", "--format", "xml"], 2),
    "not an npz": (["evaluate", str(Path(__file__))], 2),
}
_seconds: dict[str, float] = {}


def _env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")]),
                UMLBENCH_DATA=str(tmp / "data"), UMLBENCH_WORK=str(tmp / "work"))


def _wall(cmd: list[str], env: dict[str, str], expect: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=env["UMLBENCH_DATA"])
    seconds = time.perf_counter() - t0
    assert proc.returncode == expect, proc.stderr
    assert "Traceback" not in proc.stderr
    return seconds


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("startup")
    (tmp / "data").mkdir()
    return _env(tmp)


def test_baseline_import_torch_timm_faiss(benchmark, env):
    cmd = [sys.executable, "-c", "import torch, timm, faiss"]
    times = []
    benchmark.pedantic(lambda: times.append(_wall(cmd, env, 0)), rounds=ROUNDS, iterations=1)
    _seconds["baseline"] = min(times)
    benchmark.extra_info["seconds_min"] = round(min(times), 3)


@pytest.mark.parametrize("name", list(CASES))
def test_startup(benchmark, env, name):
    args, expect = CASES[name]
    cmd = [sys.executable, "-m", "umlbench", *args]
    times = []
    benchmark.pedantic(lambda: times.append(_wall(cmd, env, expect)), rounds=ROUNDS,
                       iterations=1)
    best = min(times)
    _seconds[name] = best
    benchmark.extra_info["seconds_min"] = round(best, 3)
    if "baseline" in _seconds:
        ratio = best / _seconds["baseline"]
        benchmark.extra_info["ratio_to_import_torch_timm_faiss"] = round(ratio, 3)
        print(f"\n{name}: {best:.2f} s (min of {ROUNDS}), {ratio:.2f}x the torch+timm+faiss "
              f"import ({_seconds['baseline']:.2f} s)")
