"""ooDML few-shot adaptation as the official scripts run it (issue 21, items 8-10): the
``distance`` batchminer, ``class_random_sampler``, per-step support augmentation, the adapted
base model and the k of the episode k-means."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from umlbench.config import ProtocolConfig, render_config
from umlbench.errors import UserError
from umlbench.metrics import MetricSpec, evaluate
from umlbench.protocols import fewshot
from umlbench.protocols.fewshot_adapt import (
    adapt_head,
    batch_positions,
    class_random_batch,
    distance_triplets,
    margin_loss,
    negative_probabilities,
    support_batches,
)
from umlbench.runner import build_config


def official_probabilities(emb: np.ndarray, labels: np.ndarray, lower=0.5) -> np.ndarray:
    """NumPy transcription of batchminer/distance.py (pdist, clamp, inverse_sphere_distances
    with its max taken over the row *with* the zeros written on positives), row per anchor."""
    prod = emb @ emb.T
    norm = np.diag(prod)[:, None]
    dist = np.sqrt(np.clip(norm + norm.T - 2 * prod, 0, None)).clip(min=lower)
    dim = emb.shape[1]
    out = []
    for i in range(len(emb)):
        d = dist[i]
        log_q = (2.0 - dim) * np.log(d) - (dim - 3) / 2 * np.log(1.0 - 0.25 * d**2)
        log_q[labels == labels[i]] = 0
        q = np.exp(log_q - log_q.max())
        q[labels == labels[i]] = 0
        out.append(q / q.sum())
    return np.array(out)


def _batch(seed=0, n=12, dim=8):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n // 2), 2)
    return emb, labels


@pytest.mark.parametrize("seed,dim", [(0, 8), (1, 16), (2, 5)])
def test_negative_probabilities_are_the_official_rule(seed, dim):
    emb, labels = _batch(seed, 12, dim)
    got = negative_probabilities(torch.as_tensor(emb), torch.as_tensor(labels)).numpy()
    want = official_probabilities(emb, labels)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert np.all(got[labels[:, None] == labels[None, :]] == 0)


def test_no_upper_cutoff_far_negatives_keep_their_weight():
    # Two classes at distance ~2 (> PML's 1.4 cutoff): the official rule still samples them.
    emb = np.array([[1.0, 0, 0], [0.999, 0.0447, 0], [-1.0, 0, 0], [-0.999, -0.0447, 0]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1])
    p = negative_probabilities(torch.as_tensor(emb), torch.as_tensor(labels)).numpy()
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[0, 2] > 0 and p[0, 3] > 0


def test_triplets_sample_the_official_distribution():
    emb, labels = _batch(3, 8, 6)
    e, y = torch.as_tensor(emb), torch.as_tensor(labels)
    want = official_probabilities(emb, labels)
    rng = np.random.default_rng(0)
    counts = np.zeros_like(want)
    draws = 1000
    for _ in range(draws):
        a, p, n = (t.numpy() for t in distance_triplets(e, y, rng))
        assert list(a) == list(range(8))  # one triplet per anchor
        assert np.all(labels[p] == labels[a]) and np.all(p != a)  # a positive, not itself
        counts[a, n] += 1
    # binomial standard error <= sqrt(0.25 / 1000) = 0.016: 5 sigma
    np.testing.assert_allclose(counts / draws, want, atol=0.08)
    same = [tuple(t.tolist()) for t in distance_triplets(e, y, np.random.default_rng(5))]
    again = [tuple(t.tolist()) for t in distance_triplets(e, y, np.random.default_rng(5))]
    assert same == again


def test_margin_loss_is_the_official_reduction():
    emb, _ = _batch(6, 6, 4)
    a, p, n = np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2]), np.array([4, 5, 0, 1])
    d = lambda i, j: np.sqrt(((emb[i] - emb[j]) ** 2).sum(1) + 1e-8)  # noqa: E731
    pos = np.maximum(d(a, p) - 1.2 + 0.2, 0)
    neg = np.maximum(1.2 - d(a, n) + 0.2, 0)
    want = (pos + neg).sum() / np.count_nonzero((pos > 0) | (neg > 0))
    got = margin_loss(torch.as_tensor(emb), tuple(torch.as_tensor(t) for t in (a, p, n)))
    assert float(got) == pytest.approx(want, rel=1e-12)
    # far apart classes, close pairs: no hinge is active, the loss is the plain sum (0)
    far = np.array([[1.0, 0], [1.0, 0], [-1.0, 0], [-1.0, 0]])
    trip = tuple(torch.tensor(t) for t in ([0, 2], [1, 3], [2, 0]))
    assert float(margin_loss(torch.as_tensor(far), trip)) == pytest.approx(0.0, abs=1e-12)


def test_a_class_alone_is_its_own_positive():
    emb, _ = _batch(4, 4, 5)
    labels = torch.tensor([0, 1, 1, 2])
    a, p, n = distance_triplets(torch.as_tensor(emb), labels, np.random.default_rng(0))
    assert p[0] == 0 and p[3] == 3 and p[1] == 2 and p[2] == 1


def test_class_random_batches_draw_with_replacement():
    # 3 classes of 2 images (2-shot): still 112 images per batch, 56 class draws.
    members = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])]
    rng = np.random.default_rng(0)
    batches = [class_random_batch(members, rng) for _ in range(300)]
    assert all(len(b) == 112 for b in batches)
    pairs = np.concatenate([b.reshape(-1, 2) for b in batches])
    assert np.all(pairs[:, 0] // 2 == pairs[:, 1] // 2)  # both images of one drawn class
    # With replacement: a pair repeats its image with probability 1/2, classes uniform.
    assert np.mean(pairs[:, 0] == pairs[:, 1]) == pytest.approx(0.5, abs=0.02)
    assert np.bincount(pairs[:, 0] // 2) / len(pairs) == pytest.approx([1 / 3] * 3, abs=0.02)
    steps = batch_positions(np.repeat(np.arange(3), 2), 7, seed=1)
    assert len(steps) == 7 and all(len(s) == 112 for s in steps)
    unique = batch_positions(np.repeat(np.arange(3), 2), 7, seed=1, sampler="unique")
    assert all(len(s) == 6 and len(set(s.tolist())) == 6 for s in unique)


def test_adaptation_lowers_the_margin_loss_on_cached_support():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 2)
    feats = torch.as_tensor(rng.normal(size=(20, 16)) + 3 * np.eye(16)[labels % 16],
                            dtype=torch.float32)
    head = torch.nn.Linear(16, 8)
    steps = batch_positions(labels, 25, seed=0)

    def spread(h):  # mean same-class distance over mean other-class distance
        with torch.no_grad():
            e = F.normalize(h(feats), dim=-1)
        d = torch.cdist(e, e)
        same = torch.as_tensor(labels[:, None] == labels[None, :]) & ~torch.eye(20, dtype=bool)
        return (d[same].mean() / d[~same & ~torch.eye(20, dtype=bool)].mean()).item()

    for miner in ("official", "pml"):
        batches = support_batches(steps, None, None, feats, "cached", 0, 0, "cpu")
        adapted = adapt_head(head, batches, labels, 1e-2, 0, miner)
        assert spread(adapted) < spread(head)
    assert head.weight.requires_grad  # the model's own head is untouched (a copy is trained)


class _Table:
    """An ImageTable stand-in: item (i, seed) -> (image, target, position); the image is
    constant i plus the seed's first uniform, so every use differs."""

    def __len__(self):
        return 4

    def __getitem__(self, key):
        i, seed = key
        g = torch.Generator().manual_seed(seed)
        return torch.full((1, 2, 2), float(i)) + torch.rand(1, generator=g), i, i


class _Model(torch.nn.Module):
    def features(self, images):
        return images.flatten(1)


def test_augmented_support_is_new_at_every_use_and_views_are_reused():
    steps = [np.array([0, 1, 0, 1])] * 3
    fresh = [x for _, x in support_batches(steps, _Model(), _Table(), None, "augmented", 0, 7,
                                           "cpu")]
    assert len({round(float(x[0, 0]), 6) for x in fresh}) == 3  # image 0: three augmentations
    assert not torch.equal(fresh[0][0], fresh[0][2])
    banked = [x for _, x in support_batches(steps * 10, _Model(), _Table(), None, "augmented",
                                            2, 7, "cpu")]
    values = {round(float(x[j, 0]), 6) for x in banked for j in (0, 2)}
    assert len(values) == 2  # image 0: one of its 2 views each time
    again = [x for _, x in support_batches(steps, _Model(), _Table(), None, "augmented", 0, 7,
                                           "cpu")]
    assert all(torch.equal(a, b) for a, b in zip(fresh, again))  # seeded


def test_final_base_model_is_the_last_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    final = {k: v + 1 for k, v in model.state_dict().items()}

    class Trainer:
        last_path = tmp_path / "last.pt"

    torch.save({"model": final}, Trainer.last_path)
    assert fewshot.base_model(model, Trainer, "selected") is model
    got = fewshot.base_model(model, Trainer, "final")
    assert torch.equal(got.weight, final["weight"]) and not torch.equal(model.weight,
                                                                         final["weight"])
    Trainer.last_path = tmp_path / "none.pt"  # a method that did not train: one state
    assert fewshot.base_model(model, Trainer, "final") is model


def test_episode_kmeans_uses_the_support_class_count(monkeypatch):
    # SOP-style episode: 3 support classes, 5 query classes.
    support, query = np.array([0, 1, 2]), np.repeat(np.arange(3, 8), 4)
    assert fewshot.cluster_count("support", support, query) == 3
    assert fewshot.cluster_count("query", support, query) == 5
    assert fewshot.cluster_count("support", np.arange(50), query) == len(query)  # capped
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 5
    emb = centres[query - 3] + rng.normal(size=(20, 8)) * 0.01
    args = (query, np.array(["d"] * 20))
    spec = MetricSpec.from_names(["nmi"])
    five = evaluate(emb, *args, metrics=spec).universal["nmi"]
    assert evaluate(emb, *args, metrics=spec, n_clusters=5).universal["nmi"] == five
    # k = 1: one cluster carries no information about the classes
    assert evaluate(emb, *args, metrics=spec, n_clusters=1).universal["nmi"] == pytest.approx(0)
    from umlbench.metrics import clustering

    seen, real = [], clustering.kmeans
    monkeypatch.setattr(clustering, "kmeans", lambda x, k, **kw: seen.append(k) or real(x, k, **kw))
    evaluate(emb, *args, metrics=spec, n_clusters=3)
    assert seen and set(seen) == {3}


def test_switches_are_validated_and_shown_by_dry_run():
    cfg = build_config("linear", "mini", overrides=["protocol.name=fewshot"])
    text = render_config(cfg)
    for line in ("fewshot_base: selected", "finetune_support: augmented", "finetune_views: 4",
                 "finetune_sampler: replacement", "finetune_miner: official",
                 "fewshot_clusters: support"):
        assert line in text
    uml = build_config("linear", "uml", overrides=["protocol.name=fewshot"])
    assert uml.protocol.finetune_views == 0
    for key, bad in (("fewshot_base", "best"), ("finetune_support", "none"),
                     ("finetune_sampler", "x"), ("finetune_miner", "x"),
                     ("fewshot_clusters", "x"), ("finetune_views", -1)):
        with pytest.raises(UserError, match=f"protocol.{key}"):
            dataclasses.replace(ProtocolConfig(), **{key: bad})
