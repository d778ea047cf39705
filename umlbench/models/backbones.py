"""Backbones: built by name through timm, weights from local files or timm's hub.

The `mini` suite's backbone, ``vit_mini_patch4_32``, is registered with timm here so that it is
created like any other timm ViT. It has ViT-S/16's block structure (pre-norm attention + MLP,
head dimension 64, CLS token, final LayerNorm) at a size that trains on two CPU cores: 32 px input,
4 px patches (64 tokens), width 128, depth 6, 2 heads. Its weights ship with the package
(``weights/vit_mini_patch4_32.safetensors``) and are reproduced by
``python -m umlbench.models.pretrain_mini`` (see that module).
"""

from __future__ import annotations

from pathlib import Path

import torch
from timm.data import resolve_data_config
from timm.models import create_model, register_model
from timm.models._builder import build_model_with_cfg
from timm.models._registry import generate_default_cfgs
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from umlbench.errors import UserError

__all__ = [
    "MINI_BACKBONE",
    "MINI_WEIGHTS",
    "create_backbone",
    "backbone_data_config",
    "count_parameters",
    "freeze",
]

MINI_BACKBONE = "vit_mini_patch4_32"
MINI_WEIGHTS = Path(__file__).parent / "weights" / f"{MINI_BACKBONE}.safetensors"

# timm reads a module-level ``default_cfgs`` when ``register_model`` runs.
default_cfgs = generate_default_cfgs(
    {
        f"{MINI_BACKBONE}.synth": {
            "file": str(MINI_WEIGHTS),
            "num_classes": 0,
            "input_size": (3, 32, 32),
            "pool_size": None,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "first_conv": "patch_embed.proj",
            "classifier": "head",
            "license": "mit",
        }
    }
)


@register_model
def vit_mini_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """Tiny ViT for the mini suite: 32 px, patch 4, width 128, depth 6, 2 heads (head dim 64)."""
    args = dict(img_size=32, patch_size=4, embed_dim=128, depth=6, num_heads=2, mlp_ratio=4.0)
    return build_model_with_cfg(
        VisionTransformer, MINI_BACKBONE, pretrained, **dict(args, **kwargs)
    )


def create_backbone(
    name: str, pretrained: bool = True, weights: str | Path | None = None, **kwargs
) -> nn.Module:
    """A timm model without classifier (``num_classes=0``), pooled features as output.

    Args:
        name: any timm model name, e.g. ``vit_small_patch16_224.augreg_in21k_ft_in1k``.
        pretrained: load pretrained weights (from ``weights`` if given, else timm's source).
        weights: a local ``.safetensors``/``.pth``/``.npz`` file, for machines without a hub.
    """
    overlay = {"file": str(weights)} if weights else None
    if weights and not Path(weights).exists():
        raise UserError(f"{weights}: backbone weights file not found")
    try:
        return create_model(
            name, pretrained=pretrained, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs
        )
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            raise UserError(f"unknown backbone {name!r} (any timm model name works)") from None
        raise
    except OSError as exc:  # hub unreachable, file missing
        raise UserError(
            f"could not load pretrained weights for {name!r} ({exc}); on a machine without "
            "internet download them elsewhere and pass backbone.weights=FILE"
        ) from None


def backbone_data_config(model: nn.Module) -> dict:
    """timm's data config of ``model``: input_size, mean, std, interpolation, crop_pct."""
    return resolve_data_config({}, model=model)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def freeze(module: nn.Module) -> nn.Module:
    """Freeze every parameter of ``module`` and keep its norm layers in eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    set_norms_eval(module)
    return module


def set_norms_eval(module: nn.Module) -> None:
    """LayerNorm/BatchNorm/GroupNorm layers to eval mode (call again after ``model.train()``)."""
    for m in module.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
            m.eval()


@torch.no_grad()
def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors or torch state dict into ``model`` (strict)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
