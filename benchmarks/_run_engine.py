"""Child process for the metric benchmark: runs one engine once, prints JSON (time, peak RSS).

Run in a fresh process so the peak resident memory belongs to that engine alone.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import torch


def main(engine: str, n: int, dim: int) -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _universal_data import universal_embeddings

    torch.set_num_threads(2)
    emb, labels, datasets, is_q, is_g = universal_embeddings(n, dim)
    # PML compares only equal labels: make labels globally unique per (dataset, label).
    _, glob = np.unique(np.stack([np.unique(datasets, return_inverse=True)[1], labels], 1),
                        axis=0, return_inverse=True)
    glob = glob.reshape(-1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if engine == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        x = torch.from_numpy(emb / np.linalg.norm(emb, axis=1, keepdims=True))
        calc = AccuracyCalculator(include=("precision_at_1", "r_precision",
                                           "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
        res = calc.get_accuracy(x, torch.from_numpy(glob))
        out = {"precision@1": res["precision_at_1"], "r_precision": res["r_precision"],
               "map@r": res["mean_average_precision_at_r"]}
    else:
        from umlbench.metrics import MetricSpec, evaluate

        if engine == "umlbench":  # the same work as PML: universal, three metrics
            spec = MetricSpec(recall_ks=(), precision_at_1=True, r_precision=True,
                              map_at_r=True, map_at_1000=False, nmi=False, f1=False)
            res = evaluate(emb, glob, np.full(len(glob), "all"), metrics=spec,
                           per_dataset=False)
        else:  # "umlbench-full": per-dataset + universal, every retrieval metric
            spec = MetricSpec(nmi=False, f1=False)
            res = evaluate(emb, labels, datasets, is_q, is_g, metrics=spec)
        out = {k: v for k, v in res.universal.items() if not k.startswith("num_")}
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"engine": engine, "n": len(emb), "seconds": seconds,
                      "peak_rss_gb": peak / 2**20, "added_rss_gb": (peak - base) / 2**20,
                      "metrics": out}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
