"""Clustering metrics: NMI and pairwise F1 of a k-means clustering with k = number of classes.

Follows ooDML/Revisiting-DML: Lloyd k-means (faiss, 20 iterations, no subsampling), each point
assigned to its nearest centroid, then scikit-learn's NMI (arithmetic normalisation) and the
pairwise F1 of Song et al. (precision/recall over pairs of samples). One deliberate difference:
ooDML uses k = number of *training* classes; umlbench uses the number of classes being clustered.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

__all__ = ["kmeans_assign", "nmi", "pairwise_f1"]


def kmeans_assign(x: np.ndarray, k: int, seed: int = 1234, niter: int = 20, gpu: bool = False):
    """Cluster ``x`` (N, D) float32 into ``k`` clusters; returns (N,) int64 cluster ids."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, seed=seed, gpu=gpu, verbose=False,
        min_points_per_centroid=1, max_points_per_centroid=10**9,
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


def nmi(classes: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information between class labels (N,) and cluster ids (N,)."""
    return float(normalized_mutual_info_score(classes, clusters))


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def pairwise_f1(classes: np.ndarray, clusters: np.ndarray) -> float:
    """F1 over pairs: P = same-class pairs among same-cluster pairs, R = the reverse. (N,) -> float.

    Computed from the contingency table, so it is O(N) memory (ooDML's f1.py gives the same value).
    """
    _, cls = np.unique(classes, return_inverse=True)
    _, clu = np.unique(clusters, return_inverse=True)
    joint = np.unique(cls.astype(np.int64) * (clu.max() + 1) + clu, return_counts=True)[1]
    tp = _pairs(joint)
    same_cluster = _pairs(np.bincount(clu))
    same_class = _pairs(np.bincount(cls))
    if tp == 0:
        return 0.0
    precision, recall = tp / same_cluster, tp / same_class
    return 2 * precision * recall / (precision + recall)
