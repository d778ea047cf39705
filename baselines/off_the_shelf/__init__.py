"""Off-the-shelf: the frozen pre-trained backbone's pooled feature, no training."""

from __future__ import annotations

from torch import nn

from baselines.common import EmbeddingNet, make_backbone
from umlbench.methods import METHODS, DataInfo, Method

__all__ = ["OffTheShelf"]


@METHODS.register("off-the-shelf")
class OffTheShelf(Method):
    """Off-the-shelf: the frozen pre-trained backbone's pooled feature, no training."""

    name = "off-the-shelf"

    def display_name(self) -> str:
        return "Off-the-shelf"
    trains = False

    def build(self, data: DataInfo) -> nn.Module:
        return EmbeddingNet(make_backbone(self.cfg), embedding_dim=None, frozen=True)

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        return {}
