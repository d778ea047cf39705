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


def identical_reference(labels: np.ndarray) -> dict[str, float]:
    """Means of every metric when all rows tie: query i ranks gallery row j (j != i) at
    ``j + 1 - [j > i]``. Per class, a (r+1, r+1) table of (query, member) pairs."""
    sums = {f"recall@{k}": 0.0 for k in KS}
    sums.update({"precision@1": 0.0, "r_precision": 0.0, "map@r": 0.0, "map@1000": 0.0})
    count = 0
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        r = len(m) - 1
        if r < 1:
            continue
        a = np.arange(len(m))
        after = a[None, :] > a[:, None]  # member k lies after query a in the class
        pos = m[None, :] + 1 - after
        j = a[None, :] + 1 - after
        other = a[None, :] != a[:, None]
        first = np.where(other, pos, np.iinfo(np.int64).max).min(1)
        for k in KS:
            sums[f"recall@{k}"] += float((first <= k).sum())
        sums["precision@1"] += float((first == 1).sum())
        within = other & (pos <= r)
        sums["r_precision"] += float(within.sum(1).sum() / r)
        sums["map@r"] += float((np.where(within, j / pos, 0).sum(1) / r).sum())
        deep = other & (pos <= 1000)
        sums["map@1000"] += float((np.where(deep, j / pos, 0).sum(1) / (r + 1)).sum())
        count += len(m)
    return {k: v / count for k, v in sums.items()}


def main(case: str, n: int, dim: int) -> None:
    from umlbench.metrics import MetricSpec, evaluate

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
        ref = identical_reference(labels)
        out["reference_equal"] = all(abs(got[k] - ref[k]) <= 1e-12 * max(1.0, abs(ref[k]))
                                     for k in names)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
