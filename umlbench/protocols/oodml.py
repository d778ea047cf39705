"""The ooDML protocol: train/test class splits of graded distribution shift, per dataset.

``prepare_splits`` extracts pooled features of every image with a frozen pre-trained backbone
(ImageNet ResNet-50 by default, as the reference; the mini suite uses its own backbone), averages
them per class and builds the splits (:mod:`umlbench.protocols.oodml_splits`): on cub, cars and
sop the official tables of ``create_dataset_splits.py`` (``schedule="official"``), elsewhere
``levels`` splits spaced evenly in FID (``schedule="fid"``, umlbench's extension). Level 1 is
the easiest. Each level also gets a class-level train/val split and fixed few-shot episodes
(:mod:`umlbench.protocols.oodml_episodes`). The result is one versioned JSON file per dataset
under ``<data root>/splits/oodml/``. ``build`` turns a (dataset, level) into protocol data.
"""

from __future__ import annotations

import json
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
from umlbench.protocols.base import ProtocolData
from umlbench.protocols.oodml_episodes import EPISODES, SHOTS, eval_rows, make_episodes
from umlbench.protocols.oodml_splits import (
    OFFICIAL_SCHEDULES,
    REMOVAL_PAIRINGS,
    REMOVAL_RULES,
    auto_splits,
    official_splits,
)
from umlbench.protocols.uml import unify_train

__all__ = ["SPLIT_FORMAT", "SPLIT_VERSION", "SCHEDULES", "split_path", "load_splits",
           "write_splits", "available_levels", "class_features", "prepare_splits", "build",
           "level_entry", "SHOTS", "EPISODES", "CLASS_ORDERS", "OFFICIAL_CLASS_KEYS",
           "initial_sides"]

SPLIT_FORMAT = "umlbench-oodml-splits"
SPLIT_VERSION = 2  # 2: schedule, removal_rule, class-split episodes ("support_classes")
SCHEDULES = ("official", "fid")
CLASS_ORDERS = ("official", "label")


def _folder_key(manifest: pd.DataFrame) -> pd.Series:
    """Per label: the class folder name of the Revisiting-DML/ooDML layout (CUB
    ``001.Black_footed_Albatross``; Cars ``Ram C-V Cargo Van Minivan 2012``, '/' as '-')."""
    return manifest.groupby(C.LABEL)[C.CLASS_NAME].first().astype(str).str.replace("/", "-")


def _product_key(manifest: pd.DataFrame) -> pd.Series:
    """Per label: the SOP product id, the file-name prefix (``111085122871_0.JPG``)."""
    prefix = manifest[C.PATH].map(lambda p: Path(p).name.split("_")[0])
    return prefix.groupby(manifest[C.LABEL]).first()


# How the official get_features names a class (split_helpers.py:48-51): the image folder for
# CUB/Cars, the product id for SOP. Each side starts as np.unique of these names, i.e. sorted
# as text (split_helpers.py:53-56); mini datasets use their folder-style class names.
OFFICIAL_CLASS_KEYS = {"cub": _folder_key, "cars": _folder_key, "sop": _product_key}


def initial_sides(labels: np.ndarray, train_labels: set[int], keys: dict[int, str] | None
                  ) -> tuple[list[int], list[int]]:
    """Each side's starting list of positions into ``labels`` (the class-mean table's rows):
    sorted by the official class name ``keys[label]`` as text when given (``class_order=
    official``), else by label (``class_order=label``). Swapping and removal work on list
    positions, so this order changes the removal levels."""
    pos = {int(lab): i for i, lab in enumerate(labels)}
    tr = [int(lab) for lab in labels if int(lab) in train_labels]
    te = [int(lab) for lab in labels if int(lab) not in train_labels]
    if keys is not None:
        tr, te = (sorted(side, key=lambda lab: str(keys[lab])) for side in (tr, te))
    return [pos[lab] for lab in tr], [pos[lab] for lab in te]
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


def write_splits(root: Path, dataset: str, levels: list[dict], **meta) -> Path:
    """Write the split file of ``dataset`` atomically (temp file, then rename)."""
    path = split_path(root, dataset)
    default = next((lv["level"] for lv in levels if lv["key"] == "0"), None)
    data = {"format": SPLIT_FORMAT, "version": SPLIT_VERSION, "dataset": dataset,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "default_level": default,
            **meta, "levels": levels}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


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


def _backbone(name: str, weights: str | None):
    from umlbench.models.backbones import create_backbone

    try:
        return create_backbone(name, pretrained=True, weights=weights)
    except UserError as exc:
        if weights is not None or "could not load pretrained weights" not in str(exc):
            raise
        raise UserError(f"could not load the pretrained weights of {name!r} for the FID "
                        "features (no model hub reachable?); download them elsewhere and pass "
                        "`umlbench prepare-splits --weights FILE` (or pick another --backbone)"
                        ) from None


def resolve_schedule(dataset: str, schedule: str | None, levels: int | None) -> str:
    """``official`` where the dataset has an official table, else ``fid``; checks the
    combination (an official table fixes the number of levels)."""
    name = schedule or ("official" if dataset in OFFICIAL_SCHEDULES else "fid")
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    if name == "official":
        if dataset not in OFFICIAL_SCHEDULES:
            raise UserError(f"{dataset} has no official ooDML split table (only "
                            f"{', '.join(OFFICIAL_SCHEDULES)}); use --schedule fid")
        n = len(OFFICIAL_SCHEDULES[dataset].levels)
        if levels is not None and levels != n:
            raise UserError(f"the official {dataset} table has {n} levels; drop --levels or "
                            "use --schedule fid")
    return name


def prepare_splits(root: Path, dataset: str, *, levels: int | None = None,
                   schedule: str | None = None, removal_rule: str = "official",
                   removal_pairing: str = "aligned", class_order: str | None = None,
                   backbone: str | None = None, weights: str | None = None,
                   resize_ratio: float | None = None, seed: int = 0, device: str = "cpu",
                   val_fraction: float = 0.255) -> Path:
    """Build and write the split file of ``dataset``; returns its path.

    ``val_fraction``: share of a level's train classes held out as ``split_val`` (the
    official Cars files hold 25 of 98). ``removal_pairing``: see
    :mod:`umlbench.protocols.oodml_splits` (``released`` reproduces the released script).
    ``class_order``: each side's starting order, ``official`` (class names sorted as text, the
    default of the official schedules) or ``label`` (the default elsewhere)."""
    from umlbench.data.registry import DATASETS
    from umlbench.models.backbones import MINI_BACKBONE

    sched = resolve_schedule(dataset, schedule, levels)
    if removal_rule not in REMOVAL_RULES:
        raise UserError(f"unknown removal rule {removal_rule!r}; known: "
                        f"{', '.join(REMOVAL_RULES)}")
    if removal_pairing not in REMOVAL_PAIRINGS:
        raise UserError(f"unknown removal pairing {removal_pairing!r}; known: "
                        f"{', '.join(REMOVAL_PAIRINGS)}")
    order = class_order or ("official" if sched == "official" else "label")
    if order not in CLASS_ORDERS:
        raise UserError(f"unknown class order {order!r}; known: {', '.join(CLASS_ORDERS)}")
    prep = load_prepared(root, dataset)
    mini = DATASETS.get(dataset).suite == "mini"
    name = backbone or (MINI_BACKBONE if mini else DEFAULT_BACKBONE)
    ratio = resize_ratio if resize_ratio is not None else (1.0 if mini else 256 / 224)
    labels, feats = class_features(prep, _backbone(name, weights), ratio, device=device)
    m = prep.manifest
    train_labels = {int(c) for c in m.loc[m[C.SPLIT] == C.TRAIN, C.LABEL]}
    keys = None
    if order == "official":
        keys = OFFICIAL_CLASS_KEYS.get(dataset, _folder_key)(m).to_dict()
    train, test = initial_sides(labels, train_labels, keys)
    try:
        if sched == "official":
            chosen = official_splits(feats, train, test, OFFICIAL_SCHEDULES[dataset],
                                     removal_rule, removal_pairing)
        else:
            chosen = auto_splits(feats, train, test, levels or 8, removal_rule)
    except ValueError as exc:
        raise UserError(f"{dataset}: {exc}; try --schedule fid") from None
    names = m.groupby(C.LABEL)[C.CLASS_NAME].first()
    by_class = m.groupby(C.LABEL)[C.IMAGE_ID].apply(list).to_dict()
    rng = np.random.default_rng(seed)
    out_levels = []
    for i, s in enumerate(chosen, 1):
        tr = sorted(int(labels[c]) for c in s.train)
        te = sorted(int(labels[c]) for c in s.test)
        perm = rng.permutation(tr).tolist()
        n_val = max(1, round(len(tr) * val_fraction))
        out_levels.append({
            "level": i, "key": s.key, "fid": s.fid, "train": tr, "test": te,
            "train_names": [str(names[c]) for c in tr],
            "test_names": [str(names[c]) for c in te],
            "split_train": sorted(perm[n_val:]), "split_val": sorted(perm[:n_val]),
            "episodes": make_episodes(rng, dataset, by_class, te),
        })
    return write_splits(root, dataset, out_levels, backbone=name, seed=seed, source="umlbench",
                        schedule=sched, removal_rule=removal_rule,
                        removal_pairing=removal_pairing, class_order=order)


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
    its test classes, with one retrieval definition at every level (see ``eval_rows``)."""
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
    test = eval_rows(prep, set(lv["test"]))
    val = eval_rows(prep, set(lv["split_val"])) if cfg.train.select == "val" else None
    return ProtocolData(
        name="oodml", sources=[prep], train=train, test=test, val=val, num_classes=n_classes,
        info={"name": "oodml", "dataset": dataset, "level": lv["level"], "fid": lv["fid"],
              "split_key": lv["key"], "split_source": splits.get("source", "umlbench")},
        split_files={dataset: split_path(root, dataset)},
    )
