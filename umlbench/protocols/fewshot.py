"""Few-shot protocols.

``fewshot`` (ooDML, Milbich et al. 2021; ``fewshot_ood_main.py`` and ``OOD-Study_FewShot.sh``):
per shift level, the base model is trained on the level's ``split_train`` classes and selected
on ``split_val`` by Recall@1 + MAP@1000, as the official script (the test set is never used for
selection); then, for each of the fixed episodes of each shot count, a copy of the model's last
embedding layer is adapted on the support set with the margin loss and distance-weighted mining
(Adam, 10x the base learning rate, batches of 112 with 2 images per class; 1000 iterations for
2 shots and 1500 for 5, as the official scripts, and 1500 for the unused 10; sampler, miner and
support augmentation as the official scripts by default, see
:mod:`umlbench.protocols.fewshot_adapt`) and the query images are scored before ("zero-shot")
and after ("few-shot") adaptation: Recall@K, MAP@1000, NMI and F1 (and whatever else
``eval.metrics`` lists), mean +- 95% CI over episodes, plus a paired CI of the gain.
Support/query roles: see :mod:`umlbench.protocols.oodml_episodes` (CUB/Cars episodes by image,
SOP by class; In-shop keeps query->gallery retrieval). The mini suite's smaller budget lives in
its suite config.

Which base model is adapted (``protocol.fewshot_base``): ``selected`` (default), the epoch
with the best validation score, which is what ``fewshot_ood_main.py:445-449`` means to load;
``final``, what it does load: ``best_weights = model.state_dict()`` holds references to the
live parameters, so ``load_state_dict(best_weights)`` restores the final epoch.

NMI/F1 k-means (``protocol.fewshot_clusters``): ``support`` (default) clusters the query
embeddings into as many clusters as the episode has support classes, as
``fewshot_ood_main.py:491`` sets ``opt.n_classes``; ``query``: as many as the query has
classes. They differ only on class-split (SOP) episodes.
PUMA's few-shot *training* setting is a different protocol, in
:mod:`umlbench.protocols.fewshot_train`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from umlbench import const as C
from umlbench.config import RunConfig
from umlbench.errors import UserError
from umlbench.metrics import MetricSpec, evaluate, mean_ci95
from umlbench.protocols import oodml
from umlbench.protocols.base import ProtocolData

__all__ = ["build", "derived_defaults", "run_episodes", "DEFAULT_ITERATIONS"]

# OOD-Study_FewShot.sh: 1000 iterations for 2-shot, 1500 for 5-shot (10-shot is unused there).
DEFAULT_ITERATIONS = {2: 1000, 5: 1500, 10: 1500}
LR_MULTIPLIER = 10  # --finetune_lr_multi 10 in every scripted run
SELECT_METRIC = "recall@1+map@1000"  # fewshot_ood_main.py: val R@1 + mAP@1000


def derived_defaults(shots: int | None) -> dict:
    """Config values that follow from the protocol (layered below the user's own settings)."""
    return {"train": {"select": "val", "select_metric": SELECT_METRIC}}


def build(cfg: RunConfig, root: Path) -> ProtocolData:
    if cfg.train.select != "val":
        raise UserError("protocol fewshot selects the base model on validation classes; "
                        "keep train.select=val")
    data = oodml.build(cfg, root)
    data.name = "fewshot"
    data.info = {**data.info, "name": "fewshot"}
    return data


def base_model(model, trainer, how: str):
    """The model to adapt: ``model`` as the trainer left it (the selected epoch) or, for
    ``final``, a copy holding the final epoch's weights (the trainer's last checkpoint; a
    method that did not train has only one state)."""
    if how == "selected" or not trainer.last_path.exists():
        return model
    final = copy.deepcopy(model)
    final.load_state_dict(torch.load(trainer.last_path, map_location="cpu",
                                     weights_only=False)["model"])
    return final


@torch.inference_mode()
def _features(trainer, model, data, rows) -> torch.Tensor:
    """Pre-head features (N, F) of ``rows`` with the eval transform."""

    class _Feat:
        @staticmethod
        def embed(m, images):
            return m.features(images)

    return torch.from_numpy(trainer.embed(_Feat, model, data, rows))


def _episode_rows(ep: dict, test, pos: dict) -> tuple[np.ndarray, np.ndarray]:
    """(support, query) positions in ``test`` of one episode (image or class-split)."""
    target = test["target"].to_numpy()
    if "support_classes" in ep:
        support = np.flatnonzero(np.isin(target, ep["support_classes"]))
    else:
        support = np.array([pos[i] for i in ep["support"]], dtype=np.int64)
    in_support = np.zeros(len(test), bool)
    in_support[support] = True
    query = np.flatnonzero(np.isin(target, ep["query_classes"]) & ~in_support)
    return support, query


def run_episodes(method, model, data: ProtocolData, trainer, root: Path) -> list[dict]:
    """Adapt and score every episode of every shot count; one result dict per shot count.
    Its ``per_query`` lists, per episode, the (datasets, image ids, {metric: terms}) of the
    episode's scored queries after adaptation."""
    cfg = trainer.cfg
    if not hasattr(model, "features") or not hasattr(model, "head"):
        raise UserError(f"method {cfg.method!r} has no separate embedding head to adapt")
    from umlbench.data.loading import ImageTable, build_transform
    from umlbench.protocols.fewshot_adapt import adapt_head, batch_positions, support_batches

    pc = cfg.protocol
    model = base_model(model, trainer, pc.fewshot_base)
    splits = oodml.load_splits(root, data.info["dataset"])
    level = oodml.level_entry(splits, data.info["level"])
    prep = data.sources[0]
    test = data.test.reset_index(drop=True)
    image_ids = prep.manifest[C.IMAGE_ID].to_numpy()[test["row"].to_numpy()]
    pos = {iid: i for i, iid in enumerate(image_ids)}
    feats = _features(trainer, model, data, test)
    with torch.inference_mode():
        zero = F.normalize(copy.deepcopy(model.head).cpu()(feats), dim=-1).numpy()
    # Support images get the run's training augmentation (the official support dataset is a
    # training BaseDataset: random crop + flip, as its base training).
    augment = build_transform(trainer.transform_config(model), train=True)
    spec = MetricSpec.from_names(cfg.eval.metrics, cfg.eval.cluster_rows)
    shots_list = [cfg.protocol.shots] if cfg.protocol.shots else [int(s) for s in level["episodes"]]
    labels = test["target"].to_numpy()
    results = []
    for shots in shots_list:
        episodes = level["episodes"].get(str(shots))
        if not episodes:
            raise UserError(f"no {shots}-shot episodes in the {data.info['dataset']} splits")
        iters = cfg.protocol.finetune_iterations or DEFAULT_ITERATIONS.get(shots, 1500)
        lr = cfg.protocol.finetune_lr or LR_MULTIPLIER * cfg.train.lr
        before, after, terms = [], [], []
        for e, ep in enumerate(episodes[: cfg.protocol.episodes]):
            support, query = _episode_rows(ep, test, pos)
            sup_classes, sup_y = np.unique(labels[support], return_inverse=True)
            seed = cfg.seed * 1000 + e
            table = ImageTable(data.sources, test.iloc[support], augment)
            steps = batch_positions(sup_y, iters, seed, pc.finetune_sampler)
            batches = support_batches(steps, model, table, feats[support], pc.finetune_support,
                                      pc.finetune_views, seed, trainer.device,
                                      cfg.data.num_workers)
            head = adapt_head(model.head, batches, sup_y, lr, seed, pc.finetune_miner)
            with torch.inference_mode():
                adapted = F.normalize(head(feats[query]), dim=-1).numpy()
            q = test.iloc[query]
            args = (q["target"].to_numpy(), q["dataset"].to_numpy(), q["is_query"].to_numpy(),
                    q["is_gallery"].to_numpy())
            k = cluster_count(pc.fewshot_clusters, sup_classes, q["target"].to_numpy())
            before.append(evaluate(zero[query], *args, metrics=spec, n_clusters=k).universal)
            res = evaluate(adapted, *args, metrics=spec, n_clusters=k)
            after.append(res.universal)
            if "universal" in res.per_query:  # the episode's per-query few-shot outcomes
                scored = query[res.per_query["universal"].rows]
                terms.append((test["dataset"].to_numpy()[scored], image_ids[scored],
                              res.per_query["universal"].values))
        results.append({**_summarise(shots, before, after, spec, len(episodes), iters),
                        "per_query": terms})
    return results


def cluster_count(how: str, support_classes: np.ndarray, query_labels: np.ndarray) -> int:
    """k of the NMI/F1 k-means on an episode's query: the number of support classes
    (``support``, fewshot_ood_main.py:491) or of query classes (``query``), at most the number
    of query images."""
    k = len(support_classes) if how == "support" else len(np.unique(query_labels))
    return max(1, min(k, len(query_labels)))


def _summarise(shots, before, after, spec, n_episodes, iters) -> dict:
    metrics = {}
    extra = {}
    for name in spec.names():
        zb, ci_b = mean_ci95([b[name] for b in before])
        fa, ci_a = mean_ci95([a[name] for a in after])
        # Zero- and few-shot scores come from the same episodes: the CI of the gain is the
        # CI of the per-episode differences, tighter than either score's own CI.
        _, ci_g = mean_ci95([a[name] - b[name] for a, b in zip(after, before)])
        metrics[name] = fa
        extra[f"zero_shot@{name}"] = zb
        extra[f"zero_shot@{name}_ci95"] = ci_b
        extra[f"few_shot@{name}"] = fa
        extra[f"few_shot@{name}_ci95"] = ci_a
        extra[f"gain@{name}"] = fa - zb
        extra[f"gain@{name}_ci95"] = ci_g
    return {"shots": shots, "universal": metrics, "extra": extra, "episodes": len(after),
            "episodes_available": n_episodes, "iterations": iters}
