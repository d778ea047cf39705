"""Scoring of dataset-specific fine-tuning, as the official unified_eval.py + helpers.py do it.

Official facts: ``get_emb_multi`` stacks the members' outputs (L2-normalised by NormLayer, or
Poincare-ball points for Hyp) and takes ``mean(0)`` (or ``poincare_mean`` when hyp_c > 0) without
re-normalising; ``get_accuracy`` ranks the gallery by ``F.linear(xq, xg)``, the raw dot product,
with the query itself masked by index. umlbench's engine ranks the same with ``normalize=False``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.finetune import Finetune, SpecificEnsemble, _Single
from tests.conftest import FAST
from umlbench.errors import UserError
from umlbench.metrics import MetricSpec, evaluate
from umlbench.methods import DataInfo
from umlbench.runner import build_config, load_protocol
from umlbench.train.trainer import Trainer


class _Fixed(nn.Module):
    """A stand-in member whose embedding of image i is row i of ``out``."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out, self.embedding_dim, self.data_config = out, out.shape[1], {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out[: len(images)]


def _np_poincare_mean(x: np.ndarray, c: float) -> np.ndarray:
    """Einstein midpoint, from the formula: Klein map, Lorentz-weighted mean, map back."""
    k = 2 * x / (1 + c * (x**2).sum(-1, keepdims=True))
    g = 1 / np.sqrt(1 - c * (k**2).sum(-1, keepdims=True))
    m = (g * k).sum(0) / g.sum(0)
    return m / (1 + np.sqrt(1 - c * (m**2).sum(-1, keepdims=True)))


def test_official_ensemble_is_the_plain_mean_and_cosine_renormalises():
    g = torch.Generator().manual_seed(0)
    outs = [torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64),
                                          dim=1) for _ in range(3)]
    images = torch.zeros(6, 3, 2, 2)
    official = SpecificEnsemble([_Fixed(o) for o in outs], ["a", "b", "c"])(images)
    mean = np.mean([o.numpy() for o in outs], 0)
    assert np.allclose(official.numpy(), mean)
    assert (np.linalg.norm(mean, axis=1) < 0.999).all()  # really not unit vectors
    cosine = SpecificEnsemble([_Fixed(o) for o in outs], ["a", "b", "c"], "cosine")(images)
    assert np.allclose(cosine.numpy(), mean / np.linalg.norm(mean, axis=1, keepdims=True))


def test_hyperbolic_ensemble_is_the_poincare_mean():
    g = torch.Generator().manual_seed(1)
    outs = [0.25 * torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    ens = SpecificEnsemble([_Fixed(o) for o in outs], ["a", "b", "c"], "official", hyp_c=0.1)
    got = ens(torch.zeros(5, 3, 2, 2)).numpy()
    want = _np_poincare_mean(np.stack([o.numpy() for o in outs]), 0.1)
    assert np.allclose(got, want, rtol=1e-6)  # members are embedded in fp32
    assert not np.allclose(got, np.mean([o.numpy() for o in outs], 0), rtol=1e-3)


def _brute_recall_at_1(emb, labels, datasets, is_query, is_gallery, dot: bool) -> float:
    """R@1 over queries with a relevant gallery item; (dataset, label) classes; the query
    itself removed by index; ties go to the smaller gallery index (np.argmax)."""
    x = emb if dot else emb / np.linalg.norm(emb, axis=1, keepdims=True)
    same_class = (labels[:, None] == labels[None]) & (datasets[:, None] == datasets[None])
    hits = []
    for q in np.flatnonzero(is_query):
        cand = is_gallery.copy()
        cand[q] = False
        if not (cand & same_class[q]).any():
            continue
        sims = np.where(cand, x @ x[q], -np.inf)
        hits.append(same_class[q, np.argmax(sims)])
    return float(np.mean(hits))


def test_engine_ranks_by_raw_dot_product_without_normalisation():
    rng = np.random.default_rng(0)
    n = 60
    emb = rng.normal(size=(n, 6)) * rng.uniform(0.2, 2.0, size=(n, 1))  # varied norms
    labels = rng.integers(0, 6, n)
    datasets = np.where(np.arange(n) < 40, "a", "b")
    # "a" (rows 0-39) and "b" 40-49 leave-one-out; "b" 50-54 queries only, 55-59 gallery only.
    is_query, is_gallery = np.ones(n, bool), np.ones(n, bool)
    is_gallery[50:55] = False
    is_query[55:] = False
    spec = MetricSpec.from_names(["recall@1"])
    dot = evaluate(emb, labels, datasets, is_query, is_gallery, metrics=spec, normalize=False)
    cos = evaluate(emb, labels, datasets, is_query, is_gallery, metrics=spec)
    want_dot = _brute_recall_at_1(emb, labels, datasets, is_query, is_gallery, dot=True)
    want_cos = _brute_recall_at_1(emb, labels, datasets, is_query, is_gallery, dot=False)
    assert dot.universal["recall@1"] == pytest.approx(want_dot)
    assert cos.universal["recall@1"] == pytest.approx(want_cos)
    assert want_dot != want_cos  # the inputs do tell the two scorings apart
    for ds in ("a", "b"):
        m = datasets == ds
        assert dot.per_dataset[ds]["recall@1"] == pytest.approx(_brute_recall_at_1(
            emb[m], labels[m], datasets[m], is_query[m], is_gallery[m], dot=True))


def test_unknown_scoring_is_an_error():
    with pytest.raises(UserError, match="scoring must be one of official, cosine"):
        Finetune(build_config("finetune", "mini", overrides=["method.scoring=l2"]))


def test_specific_ensemble_universal_score_matches_brute_force(mini_root, tmp_path):
    cfgs = {sc: build_config("finetune", "mini", overrides=FAST + [
        "method.setting=specific", f"method.scoring={sc}", "eval.metrics=[recall@1]"])
        for sc in ("official", "cosine")}
    assert cfgs["official"].method_args["scoring"] == "official"
    data = load_protocol(cfgs["official"], mini_root)
    torch.manual_seed(0)  # untrained members with random heads: norms of the mean vary
    model = Finetune(cfgs["official"]).build(DataInfo(
        num_classes=data.num_classes, datasets=tuple(data.datasets),
        class_dataset=data.class_dataset(), suite="mini"))
    trainer = Trainer(cfgs["official"], "cpu", tmp_path)
    # 150 random test images keep the mini ViT passes cheap on 2 cores.
    rows = data.test.iloc[np.sort(np.random.default_rng(0).choice(len(data.test), 150, False))]
    members = np.stack([trainer.embed(_Single(Finetune(cfgs["official"])), m, data, rows)
                        for m in model.members])  # (3, 150, 128), each row unit-norm
    unit = members / np.linalg.norm(members, axis=2, keepdims=True)
    args = (rows["target"].to_numpy(), rows["dataset"].to_numpy(),
            rows["is_query"].to_numpy(), rows["is_gallery"].to_numpy())
    for scoring, ens, dot in (("official", members.mean(0), True),
                              ("cosine", unit.mean(0), False)):
        model.scoring = scoring
        res = Finetune(cfgs[scoring]).evaluate(model, data, rows, trainer)
        want = _brute_recall_at_1(ens, *args, dot=dot)
        assert res.universal["recall@1"] == pytest.approx(want), scoring
        # Per-query terms of both passes: each member's own datasets, the ensemble's universal.
        assert set(res.per_query) == {"universal", *res.per_dataset}
        for scope, terms in res.per_query.items():
            agg = res.universal if scope == "universal" else res.per_dataset[scope]
            assert terms.values["recall@1"].mean() == pytest.approx(agg["recall@1"])
