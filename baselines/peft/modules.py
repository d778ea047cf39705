"""VPT prompts, AdaptFormer adapters and LoRA on q/k, around a frozen timm ViT."""

from __future__ import annotations

import math
from functools import reduce
from operator import mul

import torch
import torch.nn.functional as F
from torch import nn

from umlbench.models.backbones import backbone_data_config, freeze
from umlbench.models.vit_forward import assemble_tokens, check_vit, embed_patches, run_blocks

__all__ = ["PeftViT", "BiasAdapter", "LoRAQK"]


class BiasAdapter(nn.Module):
    """AdaptFormer's adapter: s * up(ReLU(down(h))) with biases; up starts at zero."""

    def __init__(self, dim: int, bottleneck: int, scale: float = 0.1) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(dim, bottleneck), nn.Linear(bottleneck, dim)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(F.relu(self.down(h)))


class LoRAQK(nn.Module):
    """Wraps a fused qkv Linear (D -> 3D): adds (alpha/r) B A x to the q and k parts.

    A is kaiming-initialised, B is zero, so the wrapped layer starts as the original one.
    """

    def __init__(self, qkv: nn.Linear, rank: int = 8, alpha: float = 8.0) -> None:
        super().__init__()
        self.qkv = qkv
        dim = qkv.in_features
        self.a = nn.Parameter(torch.empty(2, rank, dim))
        self.b = nn.Parameter(torch.zeros(2, dim, rank))
        for i in range(2):
            nn.init.kaiming_uniform_(self.a[i], a=math.sqrt(5))
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        delta = torch.einsum("...d,hrd,hkr->...hk", x, self.a, self.b) * self.scaling
        q, k, v = out.chunk(3, dim=-1)
        return torch.cat([q + delta[..., 0, :], k + delta[..., 1, :], v], dim=-1)


class PeftViT(nn.Module):
    """Frozen ViT + one kind of parameter-efficient module + Linear head + L2 normalisation.

    kind: "vpt" (``prompt_length``, ``deep``), "adaptformer" (``adapter_dim``,
    ``adapter_scale``) or "lora" (``rank``, ``alpha``).
    """

    def __init__(self, backbone: nn.Module, kind: str, embedding_dim: int = 128,
                 prompt_length: int = 8, deep: bool = True, adapter_dim: int = 0,
                 adapter_scale: float = 0.1, rank: int = 8, alpha: float = 8.0) -> None:
        super().__init__()
        self.backbone = freeze(check_vit(backbone))
        self.kind = kind
        dim, depth = backbone.embed_dim, len(backbone.blocks)
        self.prompts = self.adapters = self.lora = None
        if kind == "vpt":
            n = depth if deep else 1
            # VPT's init: uniform with the Xavier bound of the patch projection.
            patch = backbone.patch_embed.patch_size
            bound = math.sqrt(6.0 / float(3 * reduce(mul, patch, 1) + dim))
            self.prompts = nn.Parameter(torch.empty(n, prompt_length, dim).uniform_(-bound, bound))
        elif kind == "adaptformer":
            adapter_dim = adapter_dim or dim // 3
            self.adapters = nn.ModuleList(BiasAdapter(dim, adapter_dim, adapter_scale)
                                          for _ in range(depth))
        elif kind == "lora":
            self.lora = nn.ModuleList()
            for blk in backbone.blocks:
                wrapped = LoRAQK(blk.attn.qkv, rank, alpha)
                blk.attn.qkv = wrapped
                self.lora.append(wrapped)
        else:
            raise ValueError(f"unknown PEFT kind {kind!r}")
        self.head = nn.Linear(dim, embedding_dim)
        self.embedding_dim = embedding_dim
        self.data_config = backbone_data_config(backbone)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(images)), dim=-1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> [CLS] feature after the final norm (B, D), before the head."""
        vit = self.backbone
        patches = embed_patches(vit, images)
        b = patches.shape[0]
        if self.prompts is not None:
            first = self.prompts[0].expand(b, -1, -1)
            x = assemble_tokens(vit, patches, first)
            deep = None
            if len(self.prompts) > 1:
                deep = [None] + [p.expand(b, -1, -1) for p in self.prompts[1:]]
            return run_blocks(vit, x, deep_prompts=deep, num_prompts=self.prompts.shape[1])
        x = assemble_tokens(vit, patches)
        return run_blocks(vit, x, mlp_adapters=self.adapters)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"head": list(self.head.parameters())}
        if self.prompts is not None:
            groups["prompt"] = [self.prompts]
        if self.adapters is not None:
            groups["adapter"] = list(self.adapters.parameters())
        if self.lora is not None:
            groups["lora"] = [p for m in self.lora for p in (m.a, m.b)]
        return groups
