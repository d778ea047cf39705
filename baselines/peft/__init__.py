"""Parameter-efficient baselines on the frozen backbone: VPT, AdaptFormer, LoRA."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from baselines.common import make_backbone
from baselines.peft.modules import PeftViT
from umlbench.config import num
from umlbench.methods import METHODS, DataInfo, Method

__all__ = ["VPT", "AdaptFormer", "LoRA"]


class _PeftMethod(Method):
    kind = ""

    def build(self, data: DataInfo) -> nn.Module:
        return PeftViT(make_backbone(self.cfg), self.kind, **vars(self.args))

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        return model.param_groups()


@METHODS.register("vpt")
class VPT(_PeftMethod):
    """VPT (Jia et al. 2022): learned prompt tokens, shallow (input only) or deep (every block)."""

    name, kind = "vpt", "vpt"

    @dataclass(frozen=True, kw_only=True)
    class Config:
        embedding_dim: int = num(128, ge=1)
        prompt_length: int = num(8, ge=1)
        deep: bool = True

    def display_name(self) -> str:
        return f"VPT-{'deep' if self.args.deep else 'shallow'}"


@METHODS.register("adaptformer")
class AdaptFormer(_PeftMethod):
    """AdaptFormer (Chen et al. 2022): a scaled bottleneck adapter parallel to every MLP."""

    name, kind = "adaptformer", "adaptformer"

    def display_name(self) -> str:
        return "AdaptFormer"

    @dataclass(frozen=True, kw_only=True)
    class Config:
        embedding_dim: int = num(128, ge=1)
        adapter_dim: int = num(0, ge=0)  # 0 = embed_dim // 3, as PUMA's adapters
        adapter_scale: float = num(0.1, gt=0)


@METHODS.register("lora")
class LoRA(_PeftMethod):
    """LoRA (Hu et al. 2022) on the query and key projections of every attention layer."""

    name, kind = "lora", "lora"

    def display_name(self) -> str:
        return "LoRA"

    @dataclass(frozen=True, kw_only=True)
    class Config:
        embedding_dim: int = num(128, ge=1)
        rank: int = num(8, ge=1)
        alpha: float = num(8.0, gt=0)
