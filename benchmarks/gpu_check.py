"""One prepared script for an accelerator machine (and a smoke run on CPU).

    python benchmarks/gpu_check.py --steps 300 --batch 180          # on a GPU
    python benchmarks/gpu_check.py --device cpu --steps 2 --batch 4 --image 64 --knn 20000

1. Training throughput: PUMA and full fine-tuning (CurricularFace) on ViT-S/16 at 224 px with
   mixed precision, ``--steps`` steps of ``--batch`` random images; prints images/s and the peak
   GPU memory of each.
2. The evaluation engine's k-NN path on the device at ``--knn`` embeddings (comma-separated
   sizes, e.g. 146665,1000000), universal scope: seconds, peak memory, and the CPU/GPU
   difference of every metric on the first size.
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


def _train_throughput(method: str, device: str, steps: int, batch: int, image: int) -> dict:
    from baselines.common import EmbeddingNet
    from methods.puma.model import PumaModel
    from umlbench.models.backbones import create_backbone
    from umlbench.train.losses import CurricularFace

    backbone = create_backbone("vit_small_patch16_224", pretrained=False, img_size=image)
    model = PumaModel(backbone) if method == "puma" else EmbeddingNet(backbone, 128)
    model = model.to(device).train()
    loss_fn = CurricularFace(15952, 128).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    x = torch.randn(batch, 3, image, image, device=device)
    y = torch.randint(0, 15952, (batch,), device=device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 3):  # three warm-up steps
        if i == 3:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=cuda):
            emb = model(x)
        loss = loss_fn(emb.float(), y)
        aux = model.aux_loss() if hasattr(model, "aux_loss") else None
        if aux is not None:
            loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in params:
            if p.grad is not None:
                p.grad.clamp_(-1, 1)
        opt.step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"measure": "train", "method": method, "device": device, "batch": batch,
            "image": image, "steps": steps, "images_per_s": steps * batch / seconds,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def _knn(device: str, sizes: list[int]) -> list[dict]:
    from _universal_data import universal_embeddings

    from umlbench.metrics import MetricSpec, evaluate

    spec = MetricSpec(nmi=False, f1=False)
    out = []
    for i, n in enumerate(sizes):
        emb, labels, datasets, q, g = universal_embeddings(n, 128)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = evaluate(emb, labels, datasets, q, g, metrics=spec, device=device)
        row = {"measure": "knn", "device": device, "n": len(emb), "seconds":
               time.perf_counter() - t0, "backend": res.backend,
               "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30
               if device.startswith("cuda") else None}
        if i == 0 and device != "cpu":
            ref = evaluate(emb, labels, datasets, q, g, metrics=spec, device="cpu")
            row["max_abs_diff_vs_cpu"] = max(
                abs(ref.universal[k] - res.universal[k]) for k in spec.names())
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=180)
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--knn", default="146665,1000000")
    args = ap.parse_args()
    for method in ("puma", "finetune"):
        print(json.dumps(_train_throughput(method, args.device, args.steps, args.batch,
                                           args.image)), flush=True)
    sizes = [int(s) for s in args.knn.split(",") if s]
    for row in _knn(args.device, sizes):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
