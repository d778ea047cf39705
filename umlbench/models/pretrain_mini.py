"""Reproduce the mini backbone's weights: ``python -m umlbench.models.pretrain_mini``.

The tiny ViT is pre-trained by plain supervised classification (cross-entropy with label
smoothing, like ImageNet pre-training) on the ninth generated domain, ``pretrain``: 400 classes of
abstract glyphs that share drawing primitives with the eight `mini` domains but none of their
classes. The committed file was produced by this script with its defaults on a 2-core CPU
(about 15 minutes); the run is deterministic for a given torch version and thread count.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from umlbench.data.synthetic.suite import PRETRAIN_LAYOUT, generate_domain
from umlbench.models.backbones import MINI_BACKBONE, MINI_WEIGHTS, create_backbone

__all__ = ["pretrain", "main"]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop (scale 0.35-1, aspect 3/4-4/3) and flip on a uint8 batch (B, 3, S, S)."""
    b, _, s, _ = x.shape
    scale = torch.empty(b).uniform_(0.35, 1.0, generator=gen)
    ratio = torch.exp(torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen))
    w = torch.sqrt(scale * ratio).clamp(max=1.0)
    h = torch.sqrt(scale / ratio).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, (b, 3, s, s), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def pretrain(
    out: Path = MINI_WEIGHTS,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 1234,
    log_every: int = 1,
) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rows, images = generate_domain(PRETRAIN_LAYOUT, seed=seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S) uint8
    y = torch.from_numpy(rows["label"].to_numpy())
    n_classes = int(y.max()) + 1
    model = create_backbone(MINI_BACKBONE, pretrained=False)
    head = nn.Linear(model.num_features, n_classes)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    steps_per_epoch = len(x) // batch_size
    total = epochs * steps_per_epoch
    warmup = steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / total))
    )
    history = []
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        correct = seen = 0
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            xb = (_augment(x[idx], gen) / 255.0 - 0.5) / 0.5
            logits = head(model(xb))
            loss = F.cross_entropy(logits, y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
            seen += len(idx)
        history.append({"epoch": epoch, "loss": loss_sum / seen, "acc": correct / seen})
        if log_every and epoch % log_every == 0:
            print(f"epoch {epoch:3d} loss {loss_sum / seen:.4f} acc {correct / seen:.3f} "
                  f"{time.time() - t0:.0f}s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = out.with_name(out.name + ".part")
    save_file(state, str(tmp), metadata={"seed": str(seed), "epochs": str(epochs)})
    tmp.replace(out)
    return {"history": history, "seconds": time.time() - t0, "out": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MINI_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    result = pretrain(args.out, args.epochs, args.batch_size, args.lr, args.seed)
    print(f"wrote {result['out']} in {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
