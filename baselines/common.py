"""Pieces shared by the baselines: backbone + embedding head as one module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from umlbench.config import RunConfig
from umlbench.models.backbones import backbone_data_config, create_backbone, freeze

__all__ = ["EmbeddingNet", "make_backbone"]


def make_backbone(cfg: RunConfig) -> nn.Module:
    b = cfg.backbone
    return create_backbone(b.name, pretrained=b.pretrained, weights=b.weights)


class EmbeddingNet(nn.Module):
    """backbone -> pooled feature (CLS token after the final norm) -> head -> L2 normalise.

    Args:
        backbone: a timm model with ``num_classes=0``.
        embedding_dim: output size of a Linear head; None keeps the backbone feature.
        frozen: freeze the backbone and keep its norm layers in eval mode.
        to_ball: optional module mapping embeddings onto the Poincare ball (Hyp baseline);
            then the output is not L2-normalised (the official scoring ranks ball points by
            their raw dot product; see ``baselines/finetune``).
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int | None = 128, frozen: bool = False,
                 to_ball: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = freeze(backbone) if frozen else backbone
        self.frozen = frozen
        features = backbone.num_features
        self.head = nn.Linear(features, embedding_dim) if embedding_dim else nn.Identity()
        self.to_ball = to_ball
        self.embedding_dim = embedding_dim or features
        self.data_config = backbone_data_config(backbone)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen parts stay in eval mode (norms, dropout)
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the backbone's pooled feature (B, F), before the head."""
        if self.frozen:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.head(self.features(images))
        return self.to_ball(emb) if self.to_ball is not None else F.normalize(emb, dim=-1)
