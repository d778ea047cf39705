"""Few-shot protocols.

``fewshot`` (ooDML, Milbich et al. 2021; ``fewshot_ood_main.py`` and ``OOD-Study_FewShot.sh``):
per shift level, the base model is trained on the level's ``split_train`` classes and selected
on ``split_val`` by Recall@1 + MAP@1000, as the official script (the test set is never used for
selection); then, for each of the fixed episodes of each shot count, a copy of the model's last
embedding layer is adapted on the support set with the margin loss and distance-weighted mining
(Adam, 10x the base learning rate, class-balanced batches of 112 with 2 images per class;
1000 iterations for 2 shots and 1500 for 5, as the official scripts, and 1500 for the unused
10) and the query images are scored before ("zero-shot") and after ("few-shot") adaptation:
Recall@K, MAP@1000, NMI and F1 (and whatever else ``eval.metrics`` lists), mean +- 95% CI over
episodes, plus a paired CI of the gain. Support/query roles: see
:mod:`umlbench.protocols.oodml_episodes` (CUB/Cars episodes by image, SOP by class; In-shop keeps
query->gallery retrieval). Because the backbone is frozen during adaptation, the support images'
pre-head features are computed once (eval transform) instead of being re-augmented at every
iteration as in the reference. The mini suite's smaller budget lives in its suite config.
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


def _margin_loss():
    from pytorch_metric_learning import losses, miners

    return losses.MarginLoss(margin=0.2, nu=0.0, beta=1.2), miners.DistanceWeightedMiner(
        cutoff=0.5, nonzero_loss_cutoff=1.4)


def _adapt_head(head: torch.nn.Module, feats: torch.Tensor, labels: np.ndarray, iterations: int,
                lr: float, seed: int, batch_size: int = 112) -> torch.nn.Module:
    """Train a copy of ``head`` on fixed support features (S, F) with class-balanced batches."""
    from umlbench.data.samplers import ClassUniqueSampler

    head = copy.deepcopy(head).train()
    for p in head.parameters():
        p.requires_grad_(True)
    loss_fn, miner = _margin_loss()
    opt = torch.optim.Adam(list(head.parameters()) + list(loss_fn.parameters()), lr=lr)
    n_cls = len(np.unique(labels))
    bs = min(batch_size, 2 * n_cls, len(labels) - len(labels) % 2)
    sampler = ClassUniqueSampler(labels, bs, 2, seed=seed)
    y = torch.as_tensor(labels)
    it, epoch = 0, 0
    while it < iterations:
        sampler.set_epoch(epoch)
        for batch in sampler:
            idx = torch.tensor([i for i, _ in batch])
            emb = F.normalize(head(feats[idx]), dim=-1)
            loss = loss_fn(emb, y[idx], miner(emb, y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            it += 1
            if it >= iterations:
                break
        epoch += 1
    return head.eval()


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
    splits = oodml.load_splits(root, data.info["dataset"])
    level = oodml.level_entry(splits, data.info["level"])
    prep = data.sources[0]
    test = data.test.reset_index(drop=True)
    image_ids = prep.manifest[C.IMAGE_ID].to_numpy()[test["row"].to_numpy()]
    pos = {iid: i for i, iid in enumerate(image_ids)}
    feats = _features(trainer, model, data, test)
    with torch.inference_mode():
        zero = F.normalize(model.head(feats), dim=-1).numpy()
    spec = MetricSpec.from_names(cfg.eval.metrics)
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
            _, sup_y = np.unique(labels[support], return_inverse=True)
            head = _adapt_head(model.head, feats[support], sup_y, iters, lr,
                               seed=cfg.seed * 1000 + e)
            with torch.inference_mode():
                adapted = F.normalize(head(feats[query]), dim=-1).numpy()
            q = test.iloc[query]
            args = (q["target"].to_numpy(), q["dataset"].to_numpy(), q["is_query"].to_numpy(),
                    q["is_gallery"].to_numpy())
            before.append(evaluate(zero[query], *args, metrics=spec).universal)
            res = evaluate(adapted, *args, metrics=spec)
            after.append(res.universal)
            if "universal" in res.per_query:  # the episode's per-query few-shot outcomes
                scored = query[res.per_query["universal"].rows]
                terms.append((test["dataset"].to_numpy()[scored], image_ids[scored],
                              res.per_query["universal"].values))
        results.append({**_summarise(shots, before, after, spec, len(episodes), iters),
                        "per_query": terms})
    return results


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
