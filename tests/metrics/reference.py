"""An independent, brute-force NumPy implementation of every metric (slow, obvious, loop-based)."""

from __future__ import annotations

import numpy as np


def brute_force(emb, labels, datasets, is_query, is_gallery, ks=(1, 2, 4, 8), scope=None):
    """Per-query metric values by full sorting. ``scope``: restrict to one dataset (or None)."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    x = x.astype(np.float64)
    n = len(x)
    rows = np.arange(n) if scope is None else np.flatnonzero(datasets == scope)
    gallery = [j for j in rows if is_gallery[j]]
    out = {f"recall@{k}": [] for k in ks}
    for m in ("precision@1", "r_precision", "map@r", "map@1000"):
        out[m] = []
    excluded = 0
    for i in rows:
        if not is_query[i]:
            continue
        cands = [j for j in gallery if j != i]
        same = lambda j: labels[j] == labels[i] and datasets[j] == datasets[i]  # noqa: E731
        r = sum(same(j) for j in cands)
        if r == 0:
            excluded += 1
            continue
        sims = np.array([x[i] @ x[j] for j in cands])
        # Sort by similarity descending, ties by smaller gallery position.
        order = sorted(range(len(cands)), key=lambda t: (-sims[t], gallery.index(cands[t])))
        rel = [same(cands[t]) for t in order]
        for k in ks:
            out[f"recall@{k}"].append(float(any(rel[:k])))
        out["precision@1"].append(float(rel[0]))
        out["r_precision"].append(sum(rel[:r]) / r)
        hits, ap = 0, 0.0
        for pos, hit in enumerate(rel[:r], 1):
            if hit:
                hits += 1
                ap += hits / pos
        out["map@r"].append(ap / r)
        freq = r + (1 if is_gallery[i] else 0)
        hits, ap = 0, 0.0
        for pos, hit in enumerate(rel[:1000], 1):
            if hit:
                hits += 1
                ap += hits / pos
        out["map@1000"].append(ap / freq)
    means = {m: float(np.mean(v)) for m, v in out.items()}
    return means, excluded


def pairwise_f1_bruteforce(classes, clusters):
    tp = fp_cl = fp_cls = 0
    n = len(classes)
    same_cluster = same_class = both = 0
    for i in range(n):
        for j in range(i + 1, n):
            a = clusters[i] == clusters[j]
            b = classes[i] == classes[j]
            same_cluster += a
            same_class += b
            both += a and b
    del tp, fp_cl, fp_cls
    if both == 0:
        return 0.0
    p, r = both / same_cluster, both / same_class
    return 2 * p * r / (p + r)


def clustered_embeddings(rng, n_classes, per_class, dim, spread=0.6, n_datasets=1):
    """Random class centres plus noise; labels restart at 0 in each dataset (so they collide)."""
    centres = rng.normal(size=(n_classes * n_datasets, dim))
    counts = rng.integers(per_class[0], per_class[1] + 1, n_classes * n_datasets)
    cls = np.repeat(np.arange(n_classes * n_datasets), counts)
    emb = centres[cls] + spread * rng.normal(size=(len(cls), dim))
    labels = cls % n_classes
    datasets = np.array([f"ds{c // n_classes}" for c in cls])
    return emb.astype(np.float32), labels, datasets
