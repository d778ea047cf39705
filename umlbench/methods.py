"""The method plugin API and registry.

A method implements only what differs (PML's base-class idea); the protocol, trainer, samplers,
evaluation and run record are shared. Subclass :class:`Method`, declare a ``Config`` dataclass of
hyper-parameters, and register the class::

    from umlbench.config import num
    from umlbench.methods import METHODS, Method

    @METHODS.register("my-method")
    class MyMethod(Method):
        @dataclass(frozen=True, kw_only=True)
        class Config:
            embedding_dim: int = num(128, ge=1)   # numbers declare their range (config.py)

        def build(self, data):            # -> nn.Module mapping images (B,3,H,W) to (B, D)
            ...
        def param_groups(self, model):    # -> {"head": [...], "adapter": [...]} (trainable only)
            ...

An external package registers through the entry-point group ``umlbench.methods`` instead, so
``umlbench run --method my-method`` works without editing umlbench (see README).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from umlbench.config import RunConfig, from_dict
from umlbench.registry import Registry

if TYPE_CHECKING:  # torch is imported by the methods themselves, not by the registry
    import numpy as np
    import torch
    from torch import nn

    from umlbench.metrics import EvalResult
    from umlbench.protocols.base import ProtocolData
    from umlbench.train.trainer import Trainer

__all__ = ["Method", "METHODS", "DataInfo", "EmptyConfig"]


@dataclass(frozen=True)
class DataInfo:
    """What a method may know about the data when it builds its model."""

    num_classes: int  # training classes (proxies, classifiers)
    datasets: tuple[str, ...]
    class_dataset: np.ndarray  # (num_classes,) dataset index of each training class
    suite: str


@dataclass(frozen=True, kw_only=True)
class EmptyConfig:
    pass


class Method:
    """Base class of every method; the defaults describe a model trained end to end by the
    shared trainer with the configured loss, and evaluated on its embeddings."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig
    trains: ClassVar[bool] = True  # False: evaluated as built (off-the-shelf)

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.args = from_dict(self.Config, dict(cfg.method_args),
                              source=f"method {self.name!r} config", prefix="method.")

    # ---- naming -------------------------------------------------------------------------
    def display_name(self) -> str:
        """The leaderboard row label; include whatever distinguishes configurations."""
        return self.name

    # ---- model ------------------------------------------------------------------------------
    def build(self, data: DataInfo) -> nn.Module:
        """Return a module mapping images (B, 3, H, W) to embeddings (B, D)."""
        raise TypeError(f"method {self.name!r} does not define build()")

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group name; groups get ``train.lr_scales[name]``."""
        return {"head": [p for p in model.parameters() if p.requires_grad]}

    def criterion(self, data: DataInfo, embedding_dim: int) -> nn.Module:
        """The training loss, built from ``cfg.loss`` by default (may own proxies)."""
        from umlbench.train.losses import build_loss

        return build_loss(self.cfg.loss, data.num_classes, embedding_dim)

    def parameter_counts(self, model: nn.Module, criterion: nn.Module | None) -> dict[str, Any]:
        """Trainable/total counts; loss proxies are listed apart (as the PUMA paper counts)."""
        from umlbench.models.backbones import count_parameters

        groups = self.param_groups(model)
        trainable = sum(p.numel() for ps in groups.values() for p in ps)
        return {
            "trainable": int(trainable),
            "total": int(count_parameters(model)),
            "groups": {k: int(sum(p.numel() for p in v)) for k, v in groups.items()},
            "proxies": int(count_parameters(criterion)) if criterion is not None else 0,
        }

    # ---- training and evaluation -------------------------------------------------------------
    def train(self, model: nn.Module, criterion: nn.Module, data: ProtocolData,
              trainer: Trainer) -> nn.Module:
        """Train ``model`` (default: the shared trainer on the unified training set)."""
        if not self.trains:
            return model
        return trainer.fit(self, model, criterion, data)

    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, D) float32 embeddings."""
        return model(images).float()

    def evaluate(self, model: nn.Module, data: ProtocolData, rows, trainer: Trainer,
                 metrics=None) -> EvalResult:
        """Score ``rows`` (data.test or data.val) with the shared engine."""
        return trainer.evaluate(self, model, data, rows, metrics=metrics)

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.args)


# The built-in methods and where each is defined: listing them imports nothing, and a run
# imports only the method it uses (tests/test_registry.py checks this index against the
# decorators).
METHODS: Registry[type[Method]] = Registry(
    "method",
    entry_point_group="umlbench.methods",
    lazy={
        "off-the-shelf": "baselines.off_the_shelf:OffTheShelf",
        "linear": "baselines.linear:Linear",
        "finetune": "baselines.finetune:Finetune",
        "vpt": "baselines.peft:VPT",
        "adaptformer": "baselines.peft:AdaptFormer",
        "lora": "baselines.peft:LoRA",
        "puma": "methods.puma:Puma",
    },
)
