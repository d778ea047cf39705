"""Parameter accounting: what a method trains, against fully fine-tuned models.

The PUMA paper's "about 69x fewer trainable parameters" compares one PUMA model with eight
dataset-specific, fully fine-tuned ViT-S/16 models (backbone + embedding head), proxies of the
losses not counted on either side. :func:`parameter_report` reproduces that arithmetic for any
registered method and any timm backbone, with random weights (nothing is downloaded).
"""

from __future__ import annotations

import numpy as np

from umlbench import const as C
from umlbench.data.registry import DATASETS, suite_datasets
from umlbench.methods import DataInfo
from umlbench.models.backbones import count_parameters, create_backbone

__all__ = ["parameter_report", "train_classes"]


def train_classes(suite: str) -> list[int]:
    """Training classes per dataset of a suite, from the dataset specs (no data needed)."""
    return [DATASETS.get(n).expected[C.TRAIN][1] for n in suite_datasets(suite)]


def parameter_report(method: str, suite: str = "uml", backbone: str | None = None,
                     overrides: list[str] | tuple[str, ...] = (),
                     embedding_dim: int = 128) -> dict:
    """Counts for ``method`` built on ``backbone`` (random weights).

    Returns a dict with ``groups`` (trainable parameters per group), ``trainable``, ``total``,
    ``proxies`` (loss parameters, listed apart), ``full_finetune_one`` (backbone + Linear head),
    and the ratios ``vs_specific`` (8 fully fine-tuned models / trainable) and ``vs_unified``.
    """
    from umlbench.runner import build_config, method_class

    sets = list(overrides) + ["backbone.pretrained=false"]
    if backbone:
        sets.append(f"backbone.name={backbone}")
    cfg = build_config(method, suite, None, sets)
    cls = method_class(method)
    m = cls(cfg)
    per_ds = train_classes(suite)
    class_dataset = np.repeat(np.arange(len(per_ds)), per_ds)
    info = DataInfo(num_classes=int(sum(per_ds)), datasets=tuple(suite_datasets(suite)),
                    class_dataset=class_dataset, suite=suite)
    model = m.build(info)
    criterion = m.criterion(info, model.embedding_dim) if cls.trains else None
    counts = m.parameter_counts(model, criterion)
    bb = create_backbone(cfg.backbone.name, pretrained=False)
    features = bb.num_features
    one = count_parameters(bb) + features * embedding_dim + embedding_dim
    n_ds = len(per_ds)
    trainable = counts["trainable"]
    return {
        "method": method,
        "display_name": m.display_name(),
        "backbone": cfg.backbone.name,
        "suite": suite,
        "num_classes": int(sum(per_ds)),
        **counts,
        "full_finetune_one": int(one),
        "full_finetune_specific": int(n_ds * one),
        "vs_specific": (n_ds * one / trainable) if trainable else float("inf"),
        "vs_unified": (one / trainable) if trainable else float("inf"),
    }
