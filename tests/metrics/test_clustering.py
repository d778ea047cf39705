import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from tests.metrics.reference import clustered_embeddings, pairwise_f1_bruteforce
from umlbench.metrics import MetricSpec, evaluate
from umlbench.metrics.clustering import kmeans_assign, pairwise_f1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_f1_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 5, 60)
    clusters = rng.integers(0, 7, 60)
    assert pairwise_f1(classes, clusters) == pytest.approx(pairwise_f1_bruteforce(classes, clusters))


def test_perfect_clustering_scores_one():
    classes = np.repeat(np.arange(4), 5)
    assert pairwise_f1(classes, classes + 10) == pytest.approx(1.0)


def test_kmeans_is_deterministic_and_finds_structure():
    # Lloyd k-means from random centroids (one restart, as ooDML) may merge clusters, so this
    # checks determinism and clear structure rather than perfect recovery.
    rng = np.random.default_rng(0)
    emb, labels, _ = clustered_embeddings(rng, 5, (20, 20), 16, spread=0.05)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assign = kmeans_assign(x, 5, seed=1)
    assert np.array_equal(assign, kmeans_assign(x, 5, seed=1))
    assert normalized_mutual_info_score(labels, assign) > 0.6
    shuffled = rng.permutation(labels)
    assert normalized_mutual_info_score(shuffled, assign) < 0.3


def test_engine_clustering_per_dataset_and_universal():
    rng = np.random.default_rng(1)
    emb, labels, datasets = clustered_embeddings(rng, 4, (10, 10), 8, spread=0.05, n_datasets=2)
    res = evaluate(emb, labels, datasets, metrics=MetricSpec(recall_ks=(1,)))
    for scope in (res.universal, *res.per_dataset.values()):
        assert scope["nmi"] > 0.5
        assert 0.2 < scope["f1"] <= 1.0
