"""Child process for the metric benchmark: runs one engine once, prints JSON (time, peak RSS).

Run in a fresh process so the peak resident memory belongs to that engine alone.

    python benchmarks/_run_engine.py ENGINE N DIM

ENGINE:
    gemm            plain float32 matmul over all N x N pairs in blocks (the floor an fp32
                    search cannot beat; no selection, no metrics)
    umlbench        P@1, R-Precision, MAP@R on the universal pool (what PML computes), default
                    backend (the candidate pass in the precision a short probe finds faster)
    umlbench-fp32   the same with the IEEE float32 candidate pass
    umlbench-bf16x3 the same with the split-bf16 candidate pass (needs bf16 units to be fast)
    faiss           the same with faiss.knn as the candidate search
    pml             pytorch-metric-learning's AccuracyCalculator, same three metrics
    umlbench-full   every metric, per dataset and universal (NMI/F1 included)
    umlbench-full-fp32  the same in float32 (its NMI/F1 must equal umlbench-full's)
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

THREE = ("precision@1", "r_precision", "map@r")


def _blas_info() -> dict:
    """Which BLAS kernels run: OPENBLAS_CORETYPE, and the core each OpenBLAS picked."""
    info = {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        import faiss  # noqa: F401  (loads faiss's bundled OpenBLAS)
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            if lib.get("internal_api") == "openblas":
                owner = "faiss" if "faiss" in lib["filepath"] else "numpy"
                info[f"openblas_{owner}"] = f"{lib['version']} {lib.get('architecture')}"
    except ImportError:
        pass
    return info


def _gemm_pass(emb: np.ndarray) -> dict:
    x = torch.from_numpy(emb / np.linalg.norm(emb, axis=1, keepdims=True))
    with torch.no_grad():
        for i in range(0, len(x), 1024):
            for j in range(0, len(x), 2048):
                x[i:i + 1024] @ x[j:j + 2048].T
    return {}


def main(engine: str, n: int, dim: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _universal_data import universal_embeddings

    torch.set_num_threads(int(os.environ.get("UMLBENCH_BENCH_THREADS", "2")))
    emb, labels, datasets, is_q, is_g = universal_embeddings(n, dim)
    # PML compares only equal labels: make labels globally unique per (dataset, label).
    _, glob = np.unique(np.stack([np.unique(datasets, return_inverse=True)[1], labels], 1),
                        axis=0, return_inverse=True)
    glob = glob.reshape(-1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    backend = None
    if engine == "gemm":
        out = _gemm_pass(emb)
    elif engine == "pml":
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

        backend = {"umlbench-fp32": "torch-fp32", "faiss": "faiss-cpu",
                   "umlbench-bf16x3": "torch-bf16x3",
                   "umlbench-full-fp32": "torch-fp32"}.get(engine)
        if engine.startswith("umlbench-full"):  # per dataset + universal, every metric
            res = evaluate(emb, labels, datasets, is_q, is_g, backend=backend)
            out = {**{k: v for k, v in res.universal.items() if not k.startswith("num_")},
                   **{f"{d}/{k}": v for d, m in res.per_dataset.items() for k, v in m.items()
                      if k in ("nmi", "f1")}}
        else:  # the same work as PML: universal, three metrics
            spec = MetricSpec.from_names(list(THREE))
            res = evaluate(emb, glob, np.full(len(glob), "all"), metrics=spec,
                           per_dataset=False, backend=backend)
            out = {k: v for k, v in res.universal.items() if not k.startswith("num_")}
        backend = res.backend
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"engine": engine, "n": len(emb), "seconds": seconds, "backend": backend,
                      "peak_rss_gb": peak / 2**20, "added_rss_gb": (peak - base) / 2**20,
                      "cpu_seconds": time.process_time(), "load_avg": os.getloadavg()[0],
                      "blas": _blas_info(), "metrics": out}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
