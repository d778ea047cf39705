"""Numeric precision of training and evaluation, and the optimiser step around a GradScaler.

The official PUMA code trains under ``torch.cuda.amp.autocast`` (fp16) with a ``GradScaler``
(``--use_fp16 true``) and computes evaluation embeddings without autocast (fp32). umlbench
resolves ``train.amp`` (fp16 | bf16 | off) and ``eval.precision`` (fp32 | fp16 | bf16) once per
run into a :class:`Precision`. On CPU both are fp32 whatever the config says: CPU autocast in half
precision is slow and says nothing about GPU numerics, and the mini suite's records stay
comparable across machines; the run record stores the effective values.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from umlbench.errors import UserError

__all__ = ["Precision", "resolve_precision", "optimizer_step"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


@dataclass(frozen=True)
class Precision:
    """Effective precisions: ``train`` and ``eval`` are "fp16", "bf16" or "fp32"."""

    train: str
    eval: str
    device_type: str = "cpu"  # torch.autocast device type ("cuda", "cpu")

    @property
    def uses_scaler(self) -> bool:
        """fp16 training needs loss scaling (bf16 has fp32's exponent range)."""
        return self.train == "fp16"

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 training (disabled = plain backward/step)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.uses_scaler)

    def _autocast(self, name: str):
        dtype = _DTYPES[name]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=dtype)

    def train_autocast(self):
        return self._autocast(self.train)

    def eval_autocast(self):
        return self._autocast(self.eval)

    def as_dict(self) -> dict[str, str]:
        return {"train": self.train, "eval": self.eval}


def resolve_precision(amp: str, eval_precision: str, device: str) -> Precision:
    """Config values + device -> the precisions the run really uses."""
    kind = device.split(":")[0]
    if kind != "cuda":
        return Precision("fp32", "fp32", kind)
    train = {"fp16": "fp16", "bf16": "bf16", "off": "fp32"}[amp]
    if "bf16" in (train, eval_precision) and not torch.cuda.is_bf16_supported():
        raise UserError("bf16 was requested (train.amp or eval.precision) but this GPU does not "
                        "support it; use fp16")
    return Precision(train, eval_precision, kind)


def optimizer_step(total: torch.Tensor, opt: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, params: list[nn.Parameter],
                   grad_clamp: float = 0.0, grad_clip_norm: float = 0.0) -> None:
    """Backward, gradient clamp/clip on the *unscaled* gradients, then step (as train.py).

    With an enabled scaler the loss is scaled before backward and the gradients are unscaled
    before clamping, so the clamp bound applies to the true gradients; a step whose gradients
    overflowed is skipped by the scaler and the scale shrinks.
    """
    opt.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.unscale_(opt)
    if grad_clamp > 0:  # the official element-wise value clamp (--clip_grad)
        for p in params:
            if p.grad is not None:
                p.grad.clamp_(-grad_clamp, grad_clamp)
    if grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip_norm)
    scaler.step(opt)
    scaler.update()
