"""Training/evaluation precision: resolution per device, the GradScaler step, the run record.

The fp16 + GradScaler path is meant for CUDA; torch also implements fp16 autocast and a
GradScaler on CPU, which lets these tests run the same code path here (a forced CPU Precision).
"""

from __future__ import annotations

import pytest
import torch

import umlbench.train.trainer as trainer_module
from tests.conftest import FAST
from umlbench.errors import UserError
from umlbench.runner import build_config, run
from umlbench.train.losses import CurricularFace
from umlbench.train.precision import Precision, optimizer_step, resolve_precision


def test_cpu_runs_fp32_whatever_the_config_asks():
    for amp in ("fp16", "bf16", "off"):
        for ev in ("fp32", "fp16", "bf16"):
            p = resolve_precision(amp, ev, "cpu")
            assert p.as_dict() == {"train": "fp32", "eval": "fp32"} and not p.uses_scaler


def test_uml_defaults_are_the_official_precisions():
    cfg = build_config("puma", "uml")
    assert (cfg.train.amp, cfg.eval.precision) == ("fp16", "fp32")
    assert build_config("finetune", "uml").train.amp == "fp16"


@pytest.mark.parametrize("key, value", [("train.amp", "auto"), ("train.amp", "fp8"),
                                        ("eval.precision", "fp64")])
def test_unknown_precision_is_a_one_line_error(key, value):
    with pytest.raises(UserError, match=rf"--set: {key} must be one of"):
        build_config("puma", "mini", overrides=[f"{key}={value}"])


def test_clamp_sees_unscaled_gradients_and_overflow_skips_the_step():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer_step((3 * w).sum(), opt, scaler, [w], grad_clamp=1.0)
    # d/dw = 3, clamped to 1 after unscaling (clamping the scaled 3072 would give 1/1024).
    assert w.detach().tolist() == pytest.approx([0.9, 1.9])
    assert scaler.get_scale() == 1024.0
    optimizer_step((w * torch.tensor([float("inf"), 1.0])).sum(), opt, scaler, [w], 1.0)
    assert w.detach().tolist() == pytest.approx([0.9, 1.9])  # inf gradient: step skipped
    assert scaler.get_scale() == 512.0


def test_disabled_scaler_is_a_plain_step():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    optimizer_step((w * 0.2).sum(), opt, Precision("fp32", "fp32").scaler(), [w], 1.0)
    assert w.item() == pytest.approx(0.9)


def test_curricularface_margin_arithmetic_is_fp32_under_fp16_autocast():
    torch.manual_seed(0)
    loss_fn = CurricularFace(6, 16)
    emb, labels = torch.randn(8, 16), torch.arange(8) % 6
    with torch.autocast("cpu", dtype=torch.float16):
        logits = loss_fn.logits(emb, labels, update=False)
    assert logits.dtype == torch.float32
    ref = loss_fn.logits(emb, labels, update=False)
    assert torch.allclose(logits, ref, atol=32 * 2e-3)  # fp16 cosines, scale 32


def test_record_holds_effective_precision(env_root):
    cfg = build_config("linear", "mini", overrides=FAST + ["train.max_steps_per_epoch=1"])
    [(rec, _)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    assert rec.hardware["precision"] == {"train": "fp32", "eval": "fp32"}
    assert rec.config["train"]["amp"] == "fp16" and rec.config["eval"]["precision"] == "fp32"


def test_fp16_autocast_and_scaler_path_trains(env_root, monkeypatch):
    """The GPU code path (fp16 autocast + GradScaler, fp16 evaluation), forced onto the CPU."""
    monkeypatch.setattr(trainer_module, "resolve_precision",
                        lambda amp, ev, device: Precision("fp16", "fp16", "cpu"))
    cfg = build_config("puma", "mini", overrides=FAST + ["train.max_steps_per_epoch=2"])
    [(rec, _)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    assert rec.status == "completed"
    assert rec.hardware["precision"] == {"train": "fp16", "eval": "fp16"}
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in rec.history)
    assert 0 < rec.metrics["universal"]["recall@1"] <= 1
