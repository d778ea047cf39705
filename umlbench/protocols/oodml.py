"""The ooDML protocol: train/test class splits of graded distribution shift, per dataset.

``prepare_splits`` extracts pooled features of every image with a frozen pre-trained backbone
(ImageNet ResNet-50 by default, as the reference; the mini suite uses its own backbone), averages
them per class, and builds candidate splits by class swapping (harder and, inversely, easier than
the official split) and class removal (hardest); it then keeps ``levels`` splits with strictly
increasing FID, level 1 being the easiest. Each level also gets a class-level train/val split and
fixed few-shot episodes. The result is one versioned JSON file per dataset under
``<data root>/splits/oodml/``. ``build`` turns a (dataset, level) into protocol data.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from umlbench import const as C
from umlbench.config import RunConfig
from umlbench.data.loading import ImageTable, TransformConfig, build_transform, eval_loader
from umlbench.data.prepare import Prepared, load_prepared
from umlbench.data.registry import suite_datasets
from umlbench.errors import DataError, UserError
from umlbench.protocols.base import ProtocolData, eval_rows
from umlbench.protocols.oodml_splits import (Split, removal_splits, select_levels,
                                             swap_splits)
from umlbench.protocols.uml import unify_train

__all__ = ["SPLIT_FORMAT", "split_path", "load_splits", "available_levels", "class_features",
           "make_splits", "prepare_splits", "build", "SHOTS", "EPISODES"]

SPLIT_FORMAT = "umlbench-oodml-splits"
SPLIT_VERSION = 1
SHOTS = (2, 5, 10)
EPISODES = 10
DEFAULT_BACKBONE = "resnet50.tv_in1k"  # torchvision's ImageNet ResNet-50, as the reference


def split_path(root: Path, dataset: str) -> Path:
    return root / "splits" / "oodml" / f"{dataset}.json"


def load_splits(root: Path, dataset: str) -> dict:
    path = split_path(root, dataset)
    if not path.exists():
        raise UserError(f"no ooDML splits for {dataset!r} under {root}; run `umlbench "
                        f"prepare-splits --protocol oodml --dataset {dataset}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg})") from None
    if data.get("format") != SPLIT_FORMAT or data.get("version", 0) > SPLIT_VERSION:
        raise DataError(f"{path}: not a umlbench ooDML split file of version <= {SPLIT_VERSION}")
    return data


def available_levels(root: Path, suite: str, dataset: str | None) -> list[int]:
    if dataset is None:
        raise UserError("--level all needs --dataset (levels differ between datasets)")
    return [lv["level"] for lv in load_splits(root, dataset)["levels"]]


@torch.inference_mode()
def class_features(prep: Prepared, backbone: torch.nn.Module, resize_ratio: float,
                   batch_size: int = 256, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Mean pooled feature per class: (labels (C,), features (C, F) float64)."""
    from umlbench.models.backbones import backbone_data_config

    dc = backbone_data_config(backbone)
    tcfg = TransformConfig(int(dc["input_size"][-1]), tuple(dc["mean"]), tuple(dc["std"]),
                           dc.get("interpolation", "bicubic"), resize_ratio=resize_ratio)
    m = prep.manifest
    rows = pd.DataFrame({"source": 0, "row": np.arange(len(m)), "target": m[C.LABEL]})
    table = ImageTable([prep], rows, build_transform(tcfg, train=False))
    backbone = backbone.to(device).eval()
    feats = [backbone(x.to(device)).double().cpu() for x, _, _ in eval_loader(table, batch_size)]
    feats = torch.cat(feats).numpy()
    labels, inverse = np.unique(m[C.LABEL].to_numpy(), return_inverse=True)
    sums = np.zeros((len(labels), feats.shape[1]))
    np.add.at(sums, inverse, feats)
    return labels, sums / np.bincount(inverse)[:, None]


def make_splits(feats: np.ndarray, train: list[int], test: list[int], levels: int = 8,
                swap_iterations: int = 25, easy_iterations: int = 15,
                removal_iterations: int = 35, keep_fraction: float = 0.6) -> list[Split]:
    """Candidate splits (easier, official, harder, class removal) -> ``levels`` of them."""
    n_side = min(len(train), len(test))
    per_iter = max(1, n_side // 50)  # the reference: 2 for CUB/Cars, ~1000 for SOP
    hard = swap_splits(feats, train, test, swap_iterations, per_iter,
                       history=min(5, max(1, n_side // 4)))
    easy = swap_splits(feats, train, test, easy_iterations, per_iter,
                       history=min(30, max(1, n_side // 2)), inverse=True)[1:]
    removal = removal_splits(feats, max(hard, key=lambda s: s.fid), removal_iterations,
                             per_iter, history=min(5, max(1, n_side // 4)),
                             min_classes=max(2, math.ceil(keep_fraction * n_side)))
    return select_levels(hard + easy + removal, levels)


def _episodes(rng, images_by_class: dict[int, list[str]], classes: list[int]) -> dict:
    """Fixed few-shot episodes: {shots: [{"support": [image ids], "query_classes": [...]}]}.

    Support = ``shots`` random images of every test class that has more than ``shots``
    images; the query set is every other image of those classes (ooDML's CUB/Cars episodes).
    """
    out = {}
    for shots in SHOTS:
        eps = []
        for _ in range(EPISODES):
            support, qc = [], []
            for c in classes:
                ids = images_by_class[c]
                if len(ids) > shots:
                    support += sorted(rng.choice(ids, shots, replace=False).tolist())
                    qc.append(int(c))
            eps.append({"support": support, "query_classes": qc})
        out[str(shots)] = eps
    return out


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def prepare_splits(root: Path, dataset: str, *, levels: int = 8, backbone: str | None = None,
                   weights: str | None = None, resize_ratio: float | None = None,
                   seed: int = 0, device: str = "cpu", val_fraction: float = 0.255) -> Path:
    """Build and write the split file of ``dataset``; returns its path."""
    from umlbench.data.registry import DATASETS
    from umlbench.models.backbones import MINI_BACKBONE, create_backbone

    prep = load_prepared(root, dataset)
    mini = DATASETS.get(dataset).suite == "mini"
    name = backbone or (MINI_BACKBONE if mini else DEFAULT_BACKBONE)
    ratio = resize_ratio if resize_ratio is not None else (1.0 if mini else 256 / 224)
    labels, feats = class_features(prep, create_backbone(name, pretrained=True, weights=weights),
                                   ratio, device=device)
    m = prep.manifest
    train_labels = set(m.loc[m[C.SPLIT] == C.TRAIN, C.LABEL])
    pos = {int(lab): i for i, lab in enumerate(labels)}
    train = [pos[c] for c in sorted(train_labels)]
    test = [i for i, lab in enumerate(labels) if int(lab) not in train_labels]
    chosen = make_splits(feats, train, test, levels)
    names = m.groupby(C.LABEL)[C.CLASS_NAME].first()
    by_class = m.groupby(C.LABEL)[C.IMAGE_ID].apply(list).to_dict()
    rng = np.random.default_rng(seed)
    out_levels = []
    for i, s in enumerate(chosen, 1):
        tr = [int(labels[c]) for c in s.train]
        te = [int(labels[c]) for c in s.test]
        perm = rng.permutation(tr).tolist()
        n_val = max(1, int(round(len(tr) * val_fraction)))
        out_levels.append({
            "level": i, "key": s.key, "fid": s.fid, "train": sorted(tr), "test": sorted(te),
            "train_names": [str(names[c]) for c in sorted(tr)],
            "test_names": [str(names[c]) for c in sorted(te)],
            "split_train": sorted(perm[n_val:]), "split_val": sorted(perm[:n_val]),
            "episodes": _episodes(rng, by_class, sorted(te)),
        })
    default = next((lv["level"] for lv in out_levels if lv["key"] == "0"), None)
    path = split_path(root, dataset)
    _write_json(path, {
        "format": SPLIT_FORMAT, "version": SPLIT_VERSION, "dataset": dataset,
        "backbone": name, "seed": seed, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "default_level": default, "source": "umlbench", "levels": out_levels,
    })
    return path


def level_entry(splits: dict, level: int) -> dict:
    for lv in splits["levels"]:
        if lv["level"] == level:
            return lv
    known = [lv["level"] for lv in splits["levels"]]
    raise UserError(f"level {level} not in the {splits['dataset']} splits; known: {known}")


def resolve_dataset(cfg: RunConfig) -> str:
    if cfg.protocol.dataset is None:
        raise UserError(f"protocol {cfg.protocol.name} needs --dataset "
                        f"(one of {', '.join(suite_datasets(cfg.suite))})")
    if cfg.protocol.dataset not in suite_datasets(cfg.suite):
        raise UserError(f"dataset {cfg.protocol.dataset!r} is not in suite {cfg.suite!r}")
    return cfg.protocol.dataset


def build(cfg: RunConfig, root: Path) -> ProtocolData:
    """Train on a level's train classes (minus ``split_val`` with train.select=val), evaluate on
    its test classes. In-shop items keep their query/gallery roles when they are test items;
    every other test image is a leave-one-out query."""
    dataset = resolve_dataset(cfg)
    if cfg.protocol.level is None:
        raise UserError("protocol oodml needs --level (an integer, or 'all')")
    splits = load_splits(root, dataset)
    lv = level_entry(splits, cfg.protocol.level)
    prep = load_prepared(root, dataset)
    m = prep.manifest
    train_cls = set(lv["split_train"] if cfg.train.select == "val" else lv["train"])
    rows = np.flatnonzero(m[C.LABEL].isin(train_cls).to_numpy())
    train = pd.DataFrame({"source": 0, "row": rows, "label": m[C.LABEL].to_numpy()[rows],
                          "dataset": dataset})
    train, n_classes = unify_train([train])
    loo = (C.TRAIN, C.TEST)
    test = eval_rows(0, prep, set(lv["test"]), leave_one_out_splits=loo)
    val = eval_rows(0, prep, set(lv["split_val"]), leave_one_out_splits=loo) \
        if cfg.train.select == "val" else None
    return ProtocolData(
        name="oodml", sources=[prep], train=train, test=test, val=val, num_classes=n_classes,
        info={"name": "oodml", "dataset": dataset, "level": lv["level"], "fid": lv["fid"],
              "split_key": lv["key"], "split_source": splits.get("source", "umlbench")},
        split_files={dataset: split_path(root, dataset)},
    )
