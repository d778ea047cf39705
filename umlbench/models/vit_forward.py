"""A timm ViT forward pass with the hooks parameter-efficient methods need.

PUMA, VPT and AdaptFormer all leave the pre-trained ViT untouched and change its forward pass:
prompt tokens after the [CLS] token (shallow, or replaced at every block for deep VPT) and
bottleneck adapters running parallel to the attention and/or MLP sub-layers, fed the same
LayerNorm output as the frozen branch next to them. Written once here, against timm's
``VisionTransformer`` (pre-norm blocks, class token, learned absolute position embedding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from umlbench.errors import UserError

__all__ = ["check_vit", "embed_patches", "assemble_tokens", "run_blocks", "Adapter"]

Adapter = Callable[[torch.Tensor], torch.Tensor] | None


def check_vit(vit: nn.Module) -> VisionTransformer:
    """Fail clearly when a backbone is not a plain timm ViT these methods can hook into."""
    ok = (isinstance(vit, VisionTransformer) and vit.cls_token is not None
          and vit.reg_token is None and not vit.no_embed_class and not vit.dynamic_img_size
          and vit.global_pool == "token")
    if not ok:
        raise UserError(
            f"backbone {type(vit).__name__} is not supported here: prompts/adapters need a timm "
            "VisionTransformer with a class token, no register tokens and token pooling "
            "(e.g. vit_small_patch16_224)"
        )
    return vit


def embed_patches(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> patch embeddings (B, N, D) before the position embedding."""
    return vit.patch_embed(images)


def assemble_tokens(vit: VisionTransformer, patches: torch.Tensor,
                    prompts: torch.Tensor | None = None, position_shift: int = 0) -> torch.Tensor:
    """[CLS] + prompts + patches, with position embeddings; (B, 1 + L + N, D).

    Prompt tokens get the [CLS] position embedding, i.e. the position table is grown by
    copying the CLS entry into the L prompt slots (frozen), as the official PUMA code does.

    ``position_shift`` (used only without prompts): reproduce the official ViT built with a
    prompt length S but no prompt module. Its table is still grown to [CLS] x (1 + S) + grid
    (``vision_transformer.py``: ``embed_len += prompt_length``, ``resize_pos_embed``) and
    [CLS] + N patches add its first 1 + N rows, so patch k gets the [CLS] position for k < S
    and grid position k - S otherwise (the last S grid positions go unused).
    """
    pos = vit.pos_embed
    b = patches.shape[0]
    cls = vit.cls_token.expand(b, -1, -1) + pos[:, :1]
    parts = [cls]
    grid = pos[:, 1:]
    if prompts is not None:
        parts.append(prompts + pos[:, :1])
    elif position_shift:
        n = patches.shape[1]
        grid = torch.cat([pos[:, :1].expand(-1, position_shift, -1), grid], dim=1)[:, :n]
    parts.append(patches + grid)
    x = vit.pos_drop(torch.cat(parts, dim=1))
    return vit.norm_pre(vit.patch_drop(x))


def run_blocks(
    vit: VisionTransformer,
    x: torch.Tensor,
    attn_adapters: Sequence[Adapter] | None = None,
    mlp_adapters: Sequence[Adapter] | None = None,
    deep_prompts: Sequence[torch.Tensor | None] | None = None,
    num_prompts: int = 0,
) -> torch.Tensor:
    """Run the blocks and the final norm; returns the [CLS] feature (B, D).

    Args:
        attn_adapters / mlp_adapters: per block, a module applied to the block's norm1/norm2
            output whose result is added in parallel to attention/MLP (None: no adapter).
        deep_prompts: per block, (B, L, D) tokens that replace the prompt tokens before that
            block (deep VPT); None entries keep the running tokens.
        num_prompts: L, the number of prompt tokens after [CLS].
    """
    for i, blk in enumerate(vit.blocks):
        if deep_prompts is not None and deep_prompts[i] is not None:
            x = torch.cat([x[:, :1], deep_prompts[i], x[:, 1 + num_prompts:]], dim=1)
        h = blk.norm1(x)
        a = blk.drop_path1(blk.ls1(blk.attn(h)))
        adapter = attn_adapters[i] if attn_adapters is not None else None
        x = x + a + (adapter(h) if adapter is not None else 0)
        h = blk.norm2(x)
        m = blk.drop_path2(blk.ls2(blk.mlp(h)))
        adapter = mlp_adapters[i] if mlp_adapters is not None else None
        x = x + m + (adapter(h) if adapter is not None else 0)
    x = vit.norm(x)
    return vit.fc_norm(x[:, 0])
