"""What one optimiser step of PUMA at the official 720 images holds for its backward pass.

Issue 21, item 1: the `uml` default is 720 images per step whatever --nproc is, so on one GPU
all 720 go through ViT-S/16 (224 px, [CLS] + 8 prompts + 196 patches = 205 tokens) with the 24
adapters and the prompt pool in one step. The memory that grows with the batch is what autograd
saves for backward (the backbone is frozen, but the adapters in every block and the prompt at
the input make the whole forward differentiable). This counts it, with
``torch.autograd.graph.saved_tensors_hooks`` (distinct storages, the model's own fp32
parameters left out), under CPU autocast in bfloat16 (2 bytes, as fp16) at two small batches;
the per-image slope is extrapolated to 720 and to 180 (one of 4 processes). No GPU is needed;
the CUDA fp16 kernels save slightly different tensors (see README for the analytic count).

    PYTHONPATH=$PWD python -m pytest benchmarks/test_train_memory.py -s
"""

from __future__ import annotations

import torch

from methods.puma.model import PumaModel
from umlbench.models.backbones import create_backbone


def _saved_bytes(model: torch.nn.Module, batch: int) -> int:
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    x = torch.randn(batch, 3, 224, 224)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x).float().sum()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(v for k, v in seen.items() if k not in params)


def test_saved_activations_per_image(benchmark):
    torch.manual_seed(0)
    model = PumaModel(create_backbone("vit_small_patch16_224", pretrained=False)).train()
    small, large = 2, 4
    sizes = benchmark.pedantic(lambda: (_saved_bytes(model, small), _saved_bytes(model, large)),
                               rounds=1, iterations=1)
    per_image = (sizes[1] - sizes[0]) / (large - small)
    fixed = sizes[0] - small * per_image  # bf16 copies of the frozen weights, the pool
    gib = 2**30
    benchmark.extra_info.update(per_image_bytes=per_image, fixed_bytes=fixed,
                                step_720_gib=(fixed + 720 * per_image) / gib,
                                process_180_gib=(fixed + 180 * per_image) / gib)
    print(f"\nsaved for backward: {per_image / 2**20:.1f} MiB per image + "
          f"{fixed / 2**20:.0f} MiB fixed; 720 images: {(fixed + 720 * per_image) / gib:.1f} GiB,"
          f" 180 (one of 4 processes): {(fixed + 180 * per_image) / gib:.1f} GiB")
    assert per_image > 0
