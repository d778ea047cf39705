"""Why `reproduce` of a frozen-backbone record differs by ~1e-6 on another CPU (issue 22, s. 4).

The off-the-shelf mini run embeds the test images with the frozen ViT in float32 on the CPU;
torch runs its matmuls through MKL (sgemm) and oneDNN, which pick their kernels at run time from
the CPU (AVX2, AVX-512, AMX; Intel vs AMD dispatch) and the thread count. Different kernels
accumulate the same dot products in a different order, so the embeddings differ in their last
float32 bits. The evaluation is exact for the embeddings it is given, so the only way those bits
reach the metrics is through rank flips between near-tied gallery items.

This script embeds the mini suite's test rows several times in fresh processes, each with a
different kernel path on *this* machine (default; MKL and oneDNN limited to AVX2; one thread),
and also perturbs the default embeddings by float32 rounding-level noise (each value times
1 + u, |u| <= 2^-23). It prints, per variant, the largest embedding difference and the metrics
that differ from the default run, with the largest difference. Run:

    PYTHONPATH=. python benchmarks/cross_machine_noise.py --data-root DIR   # a prepared mini suite

Not a pytest-benchmark test (it measures numerical noise, not speed); README "Reproducing a
record on another machine" quotes its output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

VARIANTS = {
    "default": {},
    "mkl+onednn avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "1 thread": {"UMLBENCH_NOISE_THREADS": "1"},
}


def _embed(data_root: str, out: str) -> None:
    """(in a fresh process) Off-the-shelf embeddings of the mini test rows -> ``out`` (.npz)."""
    import torch
    from rich.console import Console

    from umlbench.methods import DataInfo
    from umlbench.runner import build_config, load_protocol, method_class
    from umlbench.train.distributed import DistInfo
    from umlbench.train.trainer import Trainer

    torch.set_num_threads(int(os.environ.get("UMLBENCH_NOISE_THREADS", "2")))
    cfg = build_config("off-the-shelf", "mini", None, [f"data_root={data_root}"])
    data = load_protocol(cfg, Path(data_root))
    method = method_class(cfg.method)(cfg)
    info = DataInfo(num_classes=data.num_classes, datasets=tuple(data.datasets),
                    class_dataset=np.zeros(0), suite=cfg.suite)
    model = method.build(info)
    trainer = Trainer(cfg, "cpu", Path(tempfile.mkdtemp()), DistInfo(), Console(quiet=True))
    emb = trainer.embed(method, model, data, data.test)
    t = data.test
    np.savez(out, embeddings=emb, labels=t["target"].to_numpy(),
             datasets=t["dataset"].to_numpy().astype(str), is_query=t["is_query"].to_numpy(),
             is_gallery=t["is_gallery"].to_numpy())


def _scores(arrays) -> dict[str, float]:
    from umlbench.metrics import evaluate
    from umlbench.results.identity import flatten

    res = evaluate(arrays["embeddings"], arrays["labels"], arrays["datasets"],
                   arrays["is_query"], arrays["is_gallery"])
    flat = flatten({"per_dataset": res.per_dataset, "universal": res.universal,
                    "summary": res.summary})
    return {k: v for k, v in flat.items() if "num_" not in k}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--noise-trials", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="umlbench-noise-"))
    arrays = {}
    for name, env in VARIANTS.items():
        out = work / f"{name.replace(' ', '_').replace('+', '_')}.npz"
        subprocess.run([sys.executable, __file__, "--embed", args.data_root, str(out)],
                       check=True, env={**os.environ, **env})
        arrays[name] = dict(np.load(out))
    base = arrays["default"]
    ref = _scores(base)
    rng = np.random.default_rng(0)
    for trial in range(args.noise_trials):
        e = base["embeddings"]
        u = rng.uniform(-2.0**-23, 2.0**-23, size=e.shape).astype(np.float64)
        noisy = (e.astype(np.float64) * (1 + u)).astype(np.float32)
        arrays[f"float32 noise #{trial}"] = {**base, "embeddings": noisy}
    report = {}
    for name, arr in arrays.items():
        if name == "default":
            continue
        diff = np.abs(arr["embeddings"].astype(np.float64) - base["embeddings"])
        # Relative to each row's largest entry (entries near 0 would make any ratio huge).
        scale = np.abs(base["embeddings"]).astype(np.float64).max(axis=1, keepdims=True)
        rel = float((diff / np.maximum(scale, 1e-30)).max())
        got = _scores(arr)
        changed = {k: got[k] - ref[k] for k in ref if got[k] != ref[k]}
        recall = [k for k in changed if "recall@" in k or "precision@1" in k]
        report[name] = {"embeddings_identical": bool((diff == 0).all()),
                        "max_rel_embedding_diff": rel,
                        "metrics_compared": len(ref), "metrics_differing": len(changed),
                        "recall_or_p1_differing": recall,
                        "max_abs_metric_diff": max(map(abs, changed.values()), default=0.0)}
        print(f"{name:22s} embeddings max diff / row max {rel:.2e}; {len(changed)}/{len(ref)} "
              f"metrics differ, max |diff| {report[name]['max_abs_metric_diff']:.2e}; "
              f"Recall@K/P@1 differing: {recall or 'none'}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--embed":
        _embed(sys.argv[2], sys.argv[3])
    else:
        main()
