"""One prepared script for an accelerator machine (and a smoke run on CPU).

    python benchmarks/gpu_check.py --steps 300 --batch 180          # on a GPU
    python benchmarks/gpu_check.py --device cpu --steps 2 --batch 4 --image 64 --knn 20000

1. Training throughput: PUMA and full fine-tuning (CurricularFace) on ViT-S/16 at 224 px with
   the trainer's precision path (``--amp``, default fp16 autocast + GradScaler as the official
   code and the ``uml`` suite), ``--steps`` steps of ``--batch`` random images; then the
   embeddings of one batch in fp32 (``eval.precision``). Prints images/s, peak GPU memory and the
   dtypes seen.
2. The evaluation engine on the device at ``--knn`` embeddings (comma-separated sizes, e.g.
   146665,1000000), universal scope: seconds, peak memory; on the first size every metric is
   compared with the CPU engine for equality (exact, not approximate), and once on a tie-heavy
   input (identical embeddings: the tie rule decides every rank).
Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def _train_throughput(method: str, device: str, steps: int, batch: int, image: int,
                      amp: str) -> dict:
    from baselines.common import EmbeddingNet
    from methods.puma.model import PumaModel
    from umlbench.models.backbones import create_backbone
    from umlbench.train.losses import CurricularFace
    from umlbench.train.precision import optimizer_step, resolve_precision

    backbone = create_backbone("vit_small_patch16_224", pretrained=False, img_size=image)
    model = PumaModel(backbone) if method == "puma" else EmbeddingNet(backbone, 128)
    model = model.to(device).train()
    loss_fn = CurricularFace(15952, 128).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    prec = resolve_precision(amp, "fp32", device)
    scaler = prec.scaler()
    cuda = device.startswith("cuda")
    seen = {}
    head = getattr(model, "head", None)
    if head is not None:  # the last matmul's dtype (the L2 normalisation after it runs in fp32)
        head.register_forward_hook(lambda m, i, o: seen.__setitem__("head", str(o.dtype)))
    x = torch.randn(batch, 3, image, image, device=device)
    y = torch.randint(0, 15952, (batch,), device=device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 3):  # three warm-up steps
        if i == 3:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with prec.train_autocast():
            emb = model(x)
            loss = loss_fn(emb, y)
            aux = model.aux_loss() if hasattr(model, "aux_loss") else None
            if aux is not None:
                loss = loss + aux
        optimizer_step(loss, opt, scaler, params, grad_clamp=1.0)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    train_head = seen.get("head")
    model.eval()
    with torch.no_grad(), prec.eval_autocast():
        eval_dtype = str(model(x[:8]).dtype)
    return {"measure": "train", "method": method, "device": device, "batch": batch,
            "image": image, "steps": steps, "amp": prec.train, "head_dtype_in_training": train_head,
            "embedding_dtype": str(emb.dtype),
            "eval_dtype": eval_dtype, "scaler": prec.uses_scaler,
            "final_loss": float(loss.detach()), "images_per_s": steps * batch / seconds,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def _knn(device: str, sizes: list[int], compare: bool = True):
    """Yields one row per size as soon as it is measured, then the CPU comparisons."""
    import numpy as np
    from _universal_data import universal_embeddings

    from umlbench.metrics import MetricSpec, evaluate

    spec = MetricSpec(nmi=False, f1=False)
    if device != "cpu":  # ties: identical rows, so only the tie rule (gallery index) decides
        labels = np.array([1, 0, 0, 1, 0, 1, 0, 1, 0, 1] * 30)
        emb = np.ones((len(labels), 16))
        datasets = np.array(["a"] * len(labels))
        a = evaluate(emb, labels, datasets, metrics=spec, device="cpu").universal
        b = evaluate(emb, labels, datasets, metrics=spec, device=device).universal
        yield {"measure": "ties", "device": device, "identical_to_cpu": a == b,
               "recall@1": b["recall@1"]}
    first = None
    for n in sizes:
        t0 = time.perf_counter()
        data = universal_embeddings(n, 128)
        made = time.perf_counter() - t0
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = evaluate(*data, metrics=spec, device=device)
        yield {"measure": "knn", "device": device, "n": len(data[0]),
               "seconds": time.perf_counter() - t0, "data_seconds": made,
               "backend": res.backend, "universal": res.universal,
               "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30
               if device.startswith("cuda") else None}
        if first is None:
            first = (data, res)
    if compare and device != "cpu" and first is not None:
        (data, res) = first
        t0 = time.perf_counter()
        ref = evaluate(*data, metrics=spec, device="cpu")
        yield {"measure": "knn-vs-cpu", "n": len(data[0]), "cpu_seconds":
               time.perf_counter() - t0, "identical_to_cpu": ref.universal == res.universal
               and ref.per_dataset == res.per_dataset}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=180)
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--knn", default="146665,1000000")
    ap.add_argument("--amp", default="fp16", choices=["fp16", "bf16", "off"])
    ap.add_argument("--steps-only", action="store_true", help="skip the k-NN part")
    ap.add_argument("--knn-only", action="store_true", help="skip the training part")
    ap.add_argument("--no-compare", action="store_true", help="no CPU comparison at the first size")
    args = ap.parse_args()
    for method in () if args.knn_only else ("puma", "finetune"):
        print(json.dumps(_train_throughput(method, args.device, args.steps, args.batch,
                                           args.image, args.amp)), flush=True)
    sizes = [] if args.steps_only else [int(s) for s in args.knn.split(",") if s]
    for row in _knn(args.device, sizes, compare=not args.no_compare):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
