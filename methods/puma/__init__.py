"""PUMA (Kim, Kim, Kwak, WACV 2025): frozen ViT + stochastic adapters + conditional prompt pool."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from baselines.common import make_backbone
from methods.puma.model import POSITIONS, PumaModel
from umlbench.config import num
from umlbench.errors import UserError
from umlbench.methods import METHODS, DataInfo, Method

__all__ = ["Puma", "PumaModel"]


@METHODS.register("puma")
class Puma(Method):
    """PUMA: frozen ViT, stochastic adapters and a conditional prompt pool (the paper's method)."""

    name = "puma"

    @dataclass(frozen=True, kw_only=True)
    class Config:
        embedding_dim: int = num(128, ge=1)
        # bottleneck; 0 = embed_dim // 3 (128 for ViT-S, as the paper)
        adapter_dim: int = num(0, ge=0)
        adapter_scale: float = num(0.1, gt=0)
        # per-sample DropPath of each adapter (the "stochastic" part)
        adapter_drop: float = num(0.5, ge=0, lt=1)
        use_adapters: bool = True
        use_prompts: bool = True
        pool_size: int = num(20, ge=1)
        prompt_length: int = num(8, ge=1)
        prompt_lambda: float = num(1.0, ge=0)
        ortho_scale: float = num(1e-6, ge=0)
        # grid | official: with use_prompts=false, official shifts the patch positions by
        # prompt_length as the official ViT does (few-shot command without a pool; README)
        positions: str = "grid"
        variant: str = ""  # label for ablations, shown in the leaderboard

        def __post_init__(self) -> None:
            if self.positions not in POSITIONS:
                raise UserError(f"method.positions must be one of {', '.join(POSITIONS)}; "
                                f"got {self.positions!r}")

    def display_name(self) -> str:
        a = self.args
        if a.variant:
            return f"PUMA ({a.variant})"
        parts = []
        if not a.use_prompts:
            parts.append("adapters only")
        if not a.use_adapters:
            parts.append("prompt pool only")
        if a.use_adapters and a.adapter_drop == 0:
            parts.append("no stochastic drop")
        return "PUMA" + (f" ({', '.join(parts)})" if parts else "")

    def build(self, data: DataInfo) -> nn.Module:
        a = self.args
        return PumaModel(
            make_backbone(self.cfg), embedding_dim=a.embedding_dim, adapter_dim=a.adapter_dim,
            adapter_scale=a.adapter_scale, adapter_drop=a.adapter_drop,
            use_adapters=a.use_adapters, use_prompts=a.use_prompts, pool_size=a.pool_size,
            prompt_length=a.prompt_length, prompt_lambda=a.prompt_lambda,
            ortho_scale=a.ortho_scale, positions=a.positions,
        )

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        return model.param_groups()
