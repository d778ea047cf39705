"""Full fine-tuning with any reference loss, unified (one model on the union of the training
sets) or dataset-specific (one model per dataset).

Dataset-specific models are each trained on their own dataset and scored on it; the universal
score uses the ensemble of all specific models: each image is embedded by every model and the
embeddings are averaged. ``method.scoring`` says how:

    official  as ``unified_eval.py`` + ``helpers.get_accuracy``: the plain mean of the members'
              L2-normalised embeddings (the Poincare mean for hyperbolic members), not
              re-normalised, ranked by the raw dot product (``F.linear``). Hyperbolic models are
              also scored per dataset by the raw dot product of their ball points.
    cosine    every embedding and the mean re-normalised, ranked by cosine (umlbench's earlier
              default, kept as an option).

Trainable parameters of the specific setting count all models together (the PUMA paper's
comparison).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import EmbeddingNet, make_backbone
from umlbench.errors import UserError
from umlbench.methods import METHODS, DataInfo, Method
from umlbench.metrics import EvalResult, MetricSpec, evaluate
from umlbench.train.hyperbolic import poincare_mean
from umlbench.train.losses import LOSS_TITLES, build_loss

__all__ = ["Finetune", "SpecificEnsemble", "SCORINGS"]

SCORINGS = ("official", "cosine")


class SpecificEnsemble(nn.Module):
    """One embedding model per dataset. ``forward`` returns the ensemble embedding (B, D).

    Args:
        members: the dataset-specific models, images (B, 3, H, W) -> (B, D).
        scoring: "official" averages the members' outputs as they are (the Poincare mean when
            ``hyp_c`` > 0) and does not re-normalise; "cosine" L2-normalises every output and
            the mean.
        hyp_c: curvature of the members' Poincare ball; 0 = Euclidean members.
    """

    def __init__(self, members: list[nn.Module], names: list[str], scoring: str = "official",
                 hyp_c: float = 0.0) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.names = list(names)
        self.scoring, self.hyp_c = scoring, hyp_c
        self.embedding_dim = members[0].embedding_dim
        self.data_config = members[0].data_config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embs = torch.stack([m(images).float() for m in self.members])  # (M, B, D)
        if self.scoring == "cosine":
            return F.normalize(F.normalize(embs, dim=-1).mean(0), dim=-1)
        if self.hyp_c > 0:
            return poincare_mean(embs, self.hyp_c, dim=0)
        return embs.mean(0)


class _Single(Method):
    """View of one member model, so the shared trainer can train/evaluate it alone."""

    def __init__(self, parent: Method) -> None:  # no config parsing: reuse the parent's
        self.cfg, self.args, self.parent = parent.cfg, parent.args, parent

    def param_groups(self, model):
        return self.parent.member_groups(model)

    def evaluate(self, model, data, rows, trainer, metrics=None):
        return self.parent.evaluate(model, data, rows, trainer, metrics)  # parent's scoring


@METHODS.register("finetune")
class Finetune(Method):
    """Full fine-tuning of the backbone + head with a reference loss (unified or specific)."""

    name = "finetune"

    @dataclass(frozen=True, kw_only=True)
    class Config:
        embedding_dim: int = 128
        setting: str = "unified"  # unified | specific
        hyp_c: float = 0.0  # >0: map embeddings onto the Poincare ball (Hyp baseline)
        clip_r: float = 2.3
        scoring: str = "official"  # official | cosine (see the module docstring)

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if self.args.setting not in ("unified", "specific"):
            raise UserError(f"finetune setting must be unified or specific, got "
                            f"{self.args.setting!r}")
        if self.args.scoring not in SCORINGS:
            raise UserError(f"finetune scoring must be one of {', '.join(SCORINGS)}, got "
                            f"{self.args.scoring!r}")

    @property
    def specific(self) -> bool:
        return self.args.setting == "specific"

    def display_name(self) -> str:
        loss = LOSS_TITLES.get(self.cfg.loss.name, self.cfg.loss.name)
        return f"Fine-tuning, {self.args.setting} ({loss})"

    def _member(self) -> nn.Module:
        ball = None
        if self.args.hyp_c > 0:
            from umlbench.train.hyperbolic import ToPoincare

            ball = ToPoincare(self.args.hyp_c, self.args.clip_r)
        return EmbeddingNet(make_backbone(self.cfg), self.args.embedding_dim, frozen=False,
                            to_ball=ball)

    def build(self, data: DataInfo) -> nn.Module:
        if not self.specific:
            return self._member()
        return SpecificEnsemble([self._member() for _ in data.datasets], list(data.datasets),
                                self.args.scoring, self.args.hyp_c)

    def member_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        return {"backbone": list(model.backbone.parameters()),
                "head": list(model.head.parameters())}

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        if isinstance(model, SpecificEnsemble):
            groups: dict[str, list] = {"backbone": [], "head": []}
            for m in model.members:
                for k, v in self.member_groups(m).items():
                    groups[k] += v
            return groups
        return self.member_groups(model)

    def criterion(self, data: DataInfo, embedding_dim: int) -> nn.Module:
        if not self.specific:
            return build_loss(self.cfg.loss, data.num_classes, embedding_dim)
        counts = np.bincount(data.class_dataset, minlength=len(data.datasets))
        return nn.ModuleList(build_loss(self.cfg.loss, int(c), embedding_dim) for c in counts)

    def train(self, model, criterion, data, trainer):
        if not self.specific:
            return trainer.fit(self, model, criterion, data)
        from umlbench.train.trainer import Trainer

        for d, (member, loss) in enumerate(zip(model.members, criterion)):
            rows = data.train[data.train["source"] == d].copy()
            classes = np.unique(rows["target"].to_numpy())
            rows["target"] = np.searchsorted(classes, rows["target"].to_numpy())
            pool = data.val if trainer.cfg.train.select == "val" else data.test
            select = pool[pool["source"] == d] if pool is not None else None
            sub = Trainer(trainer.cfg, trainer.device, trainer.work_dir / model.names[d],
                          trainer.dist, trainer.console, resume=trainer.resume)
            trainer.console.print(f"dataset-specific model {d + 1}/{len(model.members)}: "
                                  f"{model.names[d]}")
            model.members[d] = sub.fit(_Single(self), member, loss, data, train_rows=rows,
                                       select_rows=select)
            trainer.train_seconds += sub.train_seconds
            trainer.eval_seconds += sub.eval_seconds
            for h in sub.state.history:
                trainer.state.history.append({"dataset": model.names[d], **h})
        return model

    @property
    def _dot_product(self) -> bool:
        """Rank by the raw dot product? Official scoring does, and it differs from cosine
        whenever embeddings are not unit vectors: ball points and the ensemble mean."""
        return self.args.scoring == "official"

    def evaluate(self, model, data, rows, trainer, metrics=None) -> EvalResult:
        if not isinstance(model, SpecificEnsemble):
            # Euclidean members output unit vectors: dot product = cosine, keep the engine's.
            raw = self._dot_product and self.args.hyp_c > 0
            return trainer.evaluate(self, model, data, rows, metrics=metrics, normalize=not raw)
        t0 = time.perf_counter()
        spec = metrics or MetricSpec.from_names(trainer.cfg.eval.metrics)
        # Per-dataset scores: each dataset's images embedded by its own model.
        own = np.zeros((len(rows), model.embedding_dim), np.float32)
        for d, member in enumerate(model.members):
            mask = (rows["source"] == d).to_numpy()
            if mask.any():
                own[mask] = trainer.embed(_Single(self), member, data, rows[mask])
        args = (rows["target"].to_numpy(), rows["dataset"].to_numpy(),
                rows["is_query"].to_numpy(), rows["is_gallery"].to_numpy())
        per = evaluate(own, *args, metrics=spec, device=trainer.device, universal=False,
                       seed=trainer.cfg.seed,
                       normalize=not (self._dot_product and self.args.hyp_c > 0))
        # Universal score: the ensemble's averaged embedding of every image.
        ens = trainer.embed(self, model, data, rows)
        uni = evaluate(ens, *args, metrics=spec, device=trainer.device, per_dataset=False,
                       seed=trainer.cfg.seed, normalize=not self._dot_product)
        trainer.eval_seconds += time.perf_counter() - t0
        return EvalResult(per.per_dataset, uni.universal, per.harmonic_mean,
                          per.arithmetic_mean, per.summary, per.seconds + uni.seconds,
                          uni.backend, per_query={**per.per_query, **uni.per_query})
