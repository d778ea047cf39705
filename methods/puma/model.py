"""The PUMA model: a frozen timm ViT + stochastic adapters + conditional prompt pool + head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from methods.puma.modules import PromptPool, StochasticAdapter
from umlbench.errors import UserError
from umlbench.models.backbones import backbone_data_config, freeze
from umlbench.models.vit_forward import assemble_tokens, check_vit, embed_patches, run_blocks

__all__ = ["PumaModel", "POSITIONS"]

# Position embeddings of the patches: grid (each patch its own grid position) | official (as
# the official ViT adds them; differs from grid only without a prompt pool, see vit_forward.py)
POSITIONS = ("grid", "official")


class PumaModel(nn.Module):
    """images (B, 3, H, W) -> L2-normalised embeddings (B, embedding_dim).

    The backbone (patch and position embeddings, [CLS], every block and norm) is frozen and
    kept in eval mode. Two adapters per block run parallel to attention and to the MLP; one
    conditional prompt of ``prompt_length`` tokens is inserted once, before the first block.
    """

    def __init__(self, backbone: nn.Module, *, embedding_dim: int = 128, adapter_dim: int = 0,
                 adapter_scale: float = 0.1, adapter_drop: float = 0.5,
                 use_adapters: bool = True, use_prompts: bool = True, pool_size: int = 20,
                 prompt_length: int = 8, prompt_lambda: float = 1.0,
                 ortho_scale: float = 1e-6, positions: str = "grid") -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise UserError(f"method.positions must be one of {', '.join(POSITIONS)}; "
                            f"got {positions!r}")
        self.backbone = freeze(check_vit(backbone))
        dim, depth = backbone.embed_dim, len(backbone.blocks)
        adapter_dim = adapter_dim or dim // 3  # 384 -> 128 on ViT-S/16 (official setting)
        self.adapters = None
        if use_adapters:
            self.adapters = nn.ModuleList(
                nn.ModuleList(StochasticAdapter(dim, adapter_dim, adapter_scale, adapter_drop)
                              for _ in range(2))
                for _ in range(depth)
            )
            with torch.no_grad():  # each block's two down-projections start identical
                for pair in self.adapters:
                    pair[1].down.weight.copy_(pair[0].down.weight)
        self.pool = PromptPool(dim, pool_size, prompt_length) if use_prompts else None
        # positions=official without a prompt pool: the official ViT still grows its position
        # table by prompt_length, which shifts the patches' positions (vit_forward.py).
        self.position_shift = prompt_length if positions == "official" and not use_prompts else 0
        self.head = nn.Linear(dim, embedding_dim)
        self.embedding_dim = embedding_dim
        self.prompt_lambda, self.ortho_scale = prompt_lambda, ortho_scale
        self.data_config = backbone_data_config(backbone)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen norms/dropout stay in eval mode (official norm_freeze)
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> [CLS] feature after the final norm (B, D)."""
        vit = self.backbone
        patches = embed_patches(vit, images)
        prompts = None
        if self.pool is not None:
            # Query: mean + max of the frozen patch embeddings (before position embedding).
            q = 0.5 * (patches.mean(1) + patches.amax(1)).detach()
            prompts = self.pool(q)
        x = assemble_tokens(vit, patches, prompts, self.position_shift)
        attn = mlp = None
        if self.adapters is not None:
            attn = [pair[0] for pair in self.adapters]
            mlp = [pair[1] for pair in self.adapters]
        return run_blocks(vit, x, attn, mlp)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(images)), dim=-1)

    def aux_loss(self) -> torch.Tensor | None:
        """The prompt orthogonality penalty (training only), weighted as in the official code."""
        if self.pool is None or not self.training or self.prompt_lambda == 0:
            return None
        return self.prompt_lambda * self.ortho_scale * self.pool.penalty()

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"head": list(self.head.parameters())}
        if self.adapters is not None:
            groups["adapter"] = list(self.adapters.parameters())
        if self.pool is not None:
            groups["prompt"] = list(self.pool.parameters())
        return groups
