"""PUMA's modules and accounting on a real-size ViT-S/16 (random weights)."""

from __future__ import annotations

import pytest
import torch

from methods.puma.model import PumaModel
from methods.puma.modules import PromptPool, StochasticAdapter
from umlbench.models.backbones import count_parameters, create_backbone


@pytest.fixture(scope="module")
def vit_s():
    torch.manual_seed(0)
    return create_backbone("vit_small_patch16_224", pretrained=False)


def test_trainable_parameters_match_the_reference_arithmetic(vit_s):
    model = PumaModel(vit_s)
    groups = {k: sum(p.numel() for p in v) for k, v in model.param_groups().items()}
    assert groups == {"adapter": 2_359_296, "prompt": 76_800, "head": 49_280}
    assert count_parameters(model, trainable_only=True) == 2_485_376
    assert count_parameters(vit_s) == 21_665_664


def test_forward_backward_at_224(vit_s):
    model = PumaModel(vit_s).train()
    x = torch.randn(3, 3, 224, 224)
    emb = model(x)
    assert emb.shape == (3, 128)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    loss = emb[:, 0].sum() + model.aux_loss()
    loss.backward()
    assert model.head.weight.grad is not None and model.pool.prompts.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())  # frozen
    assert not model.backbone.training  # norms stay in eval mode


def test_adapters_start_as_no_ops_and_prompt_free_model_equals_backbone(vit_s):
    model = PumaModel(vit_s, use_prompts=False).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.features(x), vit_s.eval()(x), atol=1e-5)


def test_adapter_down_projection_has_the_official_distribution(vit_s):
    # Official: tensor_prompt(2, 384, 128, init='he_uniform') -> kaiming_uniform_(a=1) on a
    # (384, 128) tensor. torch: fan_in = size(1) = 128, gain(leaky_relu, a=1) = sqrt(2/2) = 1,
    # bound = gain * sqrt(3 / fan_in) = sqrt(3/128) = 0.15309; std = bound / sqrt(3) = 0.08839.
    # (umlbench used kaiming_uniform_(a=sqrt(5)) on (128, 384): bound 1/sqrt(384) = 0.05103.)
    torch.manual_seed(0)
    model = PumaModel(vit_s)
    for pair in model.adapters:
        w0, w1 = pair[0].down.weight, pair[1].down.weight
        assert w0.shape == (128, 384)
        assert torch.equal(w0, w1)  # each block's two down-projections start identical
        assert torch.count_nonzero(pair[0].up.weight) == 0
    w = torch.cat([pair[0].down.weight.flatten() for pair in model.adapters])  # 589,824 draws
    assert w.abs().max().item() <= 0.1530931
    assert w.abs().max().item() > 0.1530  # the bound is reached, not 0.051
    assert w.std().item() == pytest.approx(0.0883883, rel=5e-3)
    assert w.mean().item() == pytest.approx(0.0, abs=1e-3)
    # Independent draws per block (not one matrix copied into all 12).
    assert not torch.equal(model.adapters[0][0].down.weight, model.adapters[1][0].down.weight)


def test_stochastic_adapter_drops_whole_samples_in_training_only():
    torch.manual_seed(0)
    a = StochasticAdapter(16, 4, scale=0.1, drop=0.5)
    torch.nn.init.normal_(a.up.weight)
    h = torch.randn(64, 5, 16)
    a.train()
    out = a(h)
    dropped = (out.abs().sum(dim=(1, 2)) == 0)
    assert 10 < dropped.sum() < 54  # about half of the samples, entirely
    a.eval()
    expected = 0.1 * a.up(torch.relu(a.down(h)))
    assert torch.allclose(a(h), expected)


def test_prompt_pool_weights_and_penalty():
    torch.manual_seed(0)
    pool = PromptPool(dim=32, size=5, length=3)
    q = torch.randn(4, 32)
    w = pool.weights(q)
    manual = torch.stack([
        torch.nn.functional.cosine_similarity(q * torch.softmax(pool.attention[m], 0),
                                              pool.keys[m].expand(4, -1), dim=1)
        for m in range(5)], 1) / (1 + 1e-5) ** 0.5
    assert torch.allclose(w, manual, atol=1e-6)
    prompts = pool(q)
    assert prompts.shape == (4, 3, 32)
    assert torch.allclose(prompts[1], torch.einsum("m,mld->ld", w[1], pool.prompts), atol=1e-6)
    # K and A start orthonormal: only the copied prompts contribute to the penalty.
    assert pool.penalty() > 0
    from methods.puma.modules import orthogonality_penalty

    assert orthogonality_penalty(pool.keys) < 1e-10


def test_params_command_reproduces_69x(capsys):
    from umlbench.params import parameter_report

    rep = parameter_report("puma", "uml", "vit_small_patch16_224")
    assert rep["trainable"] == 2_485_376
    assert rep["full_finetune_one"] == 21_714_944
    assert rep["full_finetune_specific"] == 173_719_552
    assert rep["vs_specific"] == pytest.approx(69.9, abs=0.05)
    assert rep["proxies"] == 15_952 * 128


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_training_step_and_fp32_evaluation_on_gpu(vit_s):
    """The official precision: fp16 autocast + GradScaler for the step, fp32 embeddings."""
    from umlbench.train.losses import CurricularFace
    from umlbench.train.precision import optimizer_step, resolve_precision

    prec = resolve_precision("fp16", "fp32", "cuda")
    assert (prec.train, prec.eval, prec.uses_scaler) == ("fp16", "fp32", True)
    model = PumaModel(vit_s).cuda().train()
    loss_fn = CurricularFace(10, 128).cuda()
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    scaler = prec.scaler()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    y = torch.arange(4, device="cuda")
    before = model.head.weight.detach().clone()
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    for _ in range(5):  # the scaler may skip its first steps (overflow at scale 2**16)
        with prec.train_autocast():
            emb = model(x)
            # The matmuls run in fp16; autocast runs the L2 normalisation after them in fp32.
            assert seen[-1] == torch.float16
            assert emb.dtype == torch.float32
            loss = loss_fn(emb, y) + model.aux_loss()
        optimizer_step(loss, opt, scaler, params, grad_clamp=1.0)
        assert torch.isfinite(loss)
    assert not torch.equal(before, model.head.weight)
    model.eval()
    with torch.no_grad(), prec.eval_autocast():
        assert model(x).dtype == torch.float32


# ---- issue 21, item 2: the official position table without a prompt pool -----------------


def _index_vit():
    """A timm ViT with a 4 x 4 patch grid whose position table holds each row's index (every
    feature of row r is r) and a zero [CLS] token, so a token's value is its position row."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=1,
                            num_classes=0).eval()
    with torch.no_grad():
        vit.pos_embed.copy_(torch.arange(17.0)[None, :, None].expand(1, 17, 8))
        vit.cls_token.zero_()
    return vit


def test_official_positions_without_pool_shift_the_patches_by_the_prompt_length():
    from umlbench.models.vit_forward import assemble_tokens

    vit = _index_vit()
    patches = torch.zeros(1, 16, 8)
    # Derived by hand from the official code with prompt_length 2 and no pool: the table is
    # [CLS] x 3 + grid 1..16 (rows 0, 0, 0, 1, ..., 16 as indices into the pretrained table),
    # and [CLS] + 16 patches add its first 17 rows: patches 0 and 1 get the [CLS] row 0,
    # patch k >= 2 gets grid row k - 1 (grid position k - 2); rows 15 and 16 go unused.
    shifted = [0, 0, 0] + list(range(1, 15))
    got = assemble_tokens(vit, patches, None, position_shift=2)[0, :, 0]
    assert got.tolist() == shifted
    # The grid reading (umlbench's default): patch k gets row k + 1.
    assert assemble_tokens(vit, patches, None)[0, :, 0].tolist() == list(range(17))
    # With the pool the official table lines up: [CLS], 2 prompts at the [CLS] row, grid.
    prompts = torch.zeros(1, 2, 8)
    assert assemble_tokens(vit, patches, prompts, position_shift=2)[0, :, 0].tolist() == \
        [0, 0, 0] + list(range(1, 17))


def test_puma_positions_switch_applies_only_without_the_pool():
    vit = _index_vit()
    off = PumaModel(vit, use_prompts=False, prompt_length=2, positions="official",
                    adapter_dim=4)
    assert off.position_shift == 2
    assert PumaModel(vit, use_prompts=True, prompt_length=2, positions="official",
                     adapter_dim=4).position_shift == 0
    assert PumaModel(vit, use_prompts=False, prompt_length=2, adapter_dim=4).position_shift == 0
    # The shift reaches the forward pass: features differ from the grid reading (with a random
    # table: LayerNorm would cancel the index table's per-token constants).
    with torch.no_grad():
        vit.pos_embed.normal_(generator=torch.Generator().manual_seed(0))
    grid = PumaModel(vit, use_prompts=False, prompt_length=2, adapter_dim=4).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(off.eval().features(x), grid.features(x))
