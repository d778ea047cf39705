"""Linear probe: frozen backbone, only the embedding head is trained."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from baselines.common import EmbeddingNet, make_backbone
from umlbench.config import num
from umlbench.methods import METHODS, DataInfo, Method

__all__ = ["Linear"]


@METHODS.register("linear")
class Linear(Method):
    """Linear: frozen backbone, trained Linear embedding head (same loss as PUMA by default)."""

    name = "linear"

    def display_name(self) -> str:
        return "Linear probe"

    @dataclass(frozen=True, kw_only=True)
    class Config:
        embedding_dim: int = num(128, ge=1)

    def build(self, data: DataInfo) -> nn.Module:
        return EmbeddingNet(make_backbone(self.cfg), self.args.embedding_dim, frozen=True)

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        return {"head": list(model.head.parameters())}
