"""Clustering metrics: NMI and pairwise F1 of a k-means clustering with k = number of classes.

Follows ooDML/Revisiting-DML: Lloyd k-means (20 iterations, no subsampling; ``kmeans.py``), each
point assigned to its nearest centroid, then scikit-learn's NMI (arithmetic normalisation) and
the pairwise F1 of Song et al. (precision/recall over pairs of samples). One deliberate
difference: ooDML uses k = number of *training* classes; umlbench uses the number of classes
being clustered.
"""

from __future__ import annotations

import numpy as np

from umlbench.metrics.kmeans import kmeans

__all__ = ["cluster_scores", "kmeans_assign", "nmi", "pairwise_f1"]


def kmeans_assign(x: np.ndarray, k: int, seed: int = 1234, niter: int = 20,
                  device: str = "cpu", mode: str = "fp32") -> np.ndarray:
    """Cluster ``x`` (N, D) float32 unit rows into ``k`` clusters; (N,) int64 cluster ids."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norm_sq = float((x.astype(np.float64) ** 2).sum(1).max(initial=1.0))
    return kmeans(x, k, seed=seed, niter=niter, device=device, mode=mode, norm_sq=norm_sq)


def cluster_scores(searcher, cls: np.ndarray, rows: np.ndarray, metrics, seed: int,
                   k: int | None = None) -> dict:
    """NMI and/or F1 of the rows ``rows`` of the searcher's embeddings; k = their number of
    classes unless given (capped at the number of rows)."""
    classes = cls[rows]
    k = len(np.unique(classes)) if k is None else max(1, min(int(k), len(rows)))
    # The assignment needs only the best centroid, and a point rarely has a second one within
    # the bf16 bound, so one bf16 part (a third of the matmul) is enough where bf16 is fast.
    # (Also where the default pass probed float32 as faster: one part is a third of bf16x3.)
    mode = "bf16" if searcher.mode == "bf16x3" or (searcher.kind == "torch" and
                                                   searcher.bf16_units) else searcher.mode
    assign = kmeans(np.ascontiguousarray(searcher.x[rows]), k, seed=seed,
                    device=str(searcher.device), mode=mode, norm_sq=searcher.norm_sq)
    out = {}
    if metrics.nmi:
        out["nmi"] = nmi(classes, assign)
    if metrics.f1:
        out["f1"] = pairwise_f1(classes, assign)
    return out


def _by_first_use(ids: np.ndarray) -> np.ndarray:
    """Relabel ids 0, 1, ... in order of first appearance, so that results depend only on the
    partition, not on how its parts are numbered (sklearn's sums follow the label order)."""
    _, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inv.reshape(-1)]


def nmi(classes: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information between class labels (N,) and cluster ids (N,)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(_by_first_use(classes), _by_first_use(clusters)))


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
