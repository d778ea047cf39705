"""Child process for the tie benchmark: one input, one evaluation, JSON (time, peak RSS, values).

    python benchmarks/_run_ties.py CASE N DIM

CASE:
    identical   N identical rows, 100 classes (labels at random), leave-one-out
    collapsed   N rows of 1 + 0.01 N(0, 1), 100 classes: every similarity within the bf16
                error bound of every other
    clustered   N rows of class centres plus noise, 100 classes: the ordinary case, same size

Every retrieval metric (Recall@1,2,4,8, P@1, R-Precision, MAP@R, MAP@1000), universal and per
dataset (one dataset). For ``identical`` the values are checked against the closed form: every
similarity ties, so each query's list is the gallery in index order.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

KS = (1, 2, 4, 8)
CLASSES = 100


def inputs(case: str, n: int, dim: int):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, n)
    if case == "identical":
        emb = np.ones((n, dim), np.float32)
    elif case == "collapsed":
        emb = (1 + 0.01 * rng.normal(size=(n, dim))).astype(np.float32)
    else:
        centres = rng.normal(size=(CLASSES, dim)).astype(np.float32)
        emb = centres[labels] + 1.1 * rng.normal(size=(n, dim)).astype(np.float32)
    return emb, labels


def main(case: str, n: int, dim: int) -> None:
    from umlbench.metrics import MetricSpec, evaluate

    sys.path.insert(0, str(Path(__file__).parents[1]))  # the repository: the tests' references
    from tests.metrics.reference import all_tied_reference

    torch.set_num_threads(int(os.environ.get("UMLBENCH_BENCH_THREADS", "2")))
    emb, labels = inputs(case, n, dim)
    names = [f"recall@{k}" for k in KS] + ["precision@1", "r_precision", "map@r", "map@1000"]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = evaluate(emb, labels, np.full(n, "all"), metrics=MetricSpec.from_names(names))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = {k: v for k, v in res.universal.items() if not k.startswith("num_")}
    out = {"case": case, "n": n, "seconds": seconds, "backend": res.backend,
           "peak_rss_gb": peak / 2**20, "added_rss_gb": (peak - base) / 2**20,
           "load_avg": os.getloadavg()[0], "metrics": got,
           "per_dataset_equal": res.per_dataset["all"] == res.universal}
    if case == "identical":
        ref = all_tied_reference(labels, KS)
        out["reference_equal"] = all(abs(got[k] - ref[k]) <= 1e-12 * max(1.0, abs(ref[k]))
                                     for k in names)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
