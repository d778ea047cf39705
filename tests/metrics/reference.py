"""An independent, brute-force NumPy implementation of every metric (slow, obvious, loop-based)."""

from __future__ import annotations

import numpy as np


def unit_rows(emb) -> np.ndarray:
    """The engine's input to ranking: rows normalised in float64, stored as float32."""
    x = np.asarray(emb, np.float64)
    x = x / np.abs(x).max(axis=1, keepdims=True)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_ints(x32: np.ndarray) -> list[list[int]]:
    """float32 rows as integers scaled by 2**149 (every float32 is a multiple of 2**-149)."""
    return [[int(v) for v in (r.astype(np.float64) * 2.0**149)] for r in x32]


def exact_sims(ints: list[list[int]], i: int, rows) -> list[int]:
    """Exact dot products of row i with ``rows`` (scaled by 2**298): equal means equal."""
    return [sum(a * b for a, b in zip(ints[i], ints[j])) for j in rows]


def scaled_rows(emb) -> np.ndarray:
    """The engine's input to raw dot-product ranking: every row times the same powers of two,
    so that entries are below 1, then the longest row at most 1 long."""
    x = np.asarray(emb, np.float64)
    peak = np.abs(x).max()
    if peak > 0:
        x = x * 2.0 ** -np.frexp(peak)[1]
        longest = np.linalg.norm(x, axis=1).max()
        if longest > 0:
            x = x * 2.0 ** -np.frexp(longest)[1]
    return x.astype(np.float32)


def brute_force(emb, labels, datasets, is_query, is_gallery, ks=(1, 2, 4, 8), scope=None,
                unit=True):
    """Metric means by full sorting and the number of excluded queries (see
    :func:`brute_force_terms`)."""
    _, out, excluded = brute_force_terms(emb, labels, datasets, is_query, is_gallery, ks,
                                         scope, unit)
    means = {m: float(np.mean(v)) if v else float("nan") for m, v in out.items()}
    return means, excluded


def brute_force_terms(emb, labels, datasets, is_query, is_gallery, ks=(1, 2, 4, 8), scope=None,
                      unit=True):
    """Per-query metric values by full sorting. ``scope``: restrict to one dataset (or None).
    Returns (scored query rows, {metric: per-query values in that order}, excluded count).

    Similarity is the exact dot product of the float32 unit rows (the engine's definition;
    ``unit=False``: of the commonly scaled raw rows); equal similarities rank the smaller
    gallery index first."""
    x = unit_rows(emb) if unit else scaled_rows(emb)
    ints = exact_ints(x)
    n = len(x)
    rows = np.arange(n) if scope is None else np.flatnonzero(datasets == scope)
    gallery = [j for j in rows if is_gallery[j]]
    gpos = {j: p for p, j in enumerate(gallery)}
    out = {f"recall@{k}": [] for k in ks}
    for m in ("precision@1", "r_precision", "map@r", "map@1000"):
        out[m] = []
    excluded = 0
    scored = []
    for i in rows:
        if not is_query[i]:
            continue
        cands = [j for j in gallery if j != i]
        relevant = {j for j in cands if labels[j] == labels[i] and datasets[j] == datasets[i]}
        r = len(relevant)
        if r == 0:
            excluded += 1
            continue
        scored.append(int(i))
        sims = exact_sims(ints, i, cands)
        # Sort by similarity descending, ties by smaller gallery position.
        order = sorted(range(len(cands)), key=lambda t: (-sims[t], gpos[cands[t]]))
        rel = [cands[t] in relevant for t in order]
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
    return scored, out, excluded


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


def knn_bruteforce(emb, k, qrows, grows):
    """Exact k nearest gallery positions of each query row (the query itself removed by
    index): (Q, k) int64, -1 where the gallery is too small."""
    x = unit_rows(emb)
    ints = exact_ints(x)
    out = np.full((len(qrows), k), -1, np.int64)
    for a, i in enumerate(qrows):
        cands = [p for p, j in enumerate(grows) if j != i]
        sims = exact_sims(ints, i, [grows[p] for p in cands])
        order = sorted(range(len(cands)), key=lambda t: (-sims[t], cands[t]))[:k]
        out[a, :len(order)] = [cands[t] for t in order]
    return out


def kmeans_bruteforce(x32, k, seed, niter=20):
    """The engine's k-means (clustering.py docstring), written as loops with exact rational
    scores x.c - |c|^2/2 and ties to the smaller centroid index."""
    from fractions import Fraction

    n, dim = x32.shape
    rng = np.random.default_rng(seed)
    cent = x32[np.sort(rng.choice(n, k, replace=False))].copy()

    def exact(v):
        return [Fraction(float(a)) for a in v]

    xs = [exact(v) for v in x32]

    def assign(cent):
        cs = [exact(c) for c in cent]
        out = []
        for xv in xs:
            scores = [sum(a * b for a, b in zip(xv, c)) - sum(b * b for b in c) / 2 for c in cs]
            best = max(scores)
            out.append(scores.index(best))
        return np.array(out)

    labels = assign(cent)
    for it in range(niter):
        if it:
            labels = assign(cent)
        new = cent.copy()
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members):
                total = np.zeros(dim)
                for m in members:
                    total += x32[m].astype(np.float64)
                new[c] = (total / len(members)).astype(np.float32)
        cent = new
    return assign(cent)


def all_tied_reference(labels: np.ndarray, ks=(1, 2, 4, 8)) -> dict[str, float]:
    """Closed-form means of every retrieval metric when all N rows tie (leave-one-out, one
    dataset): query i ranks row j (j != i) at ``j + 1 - [j > i]``, so per class a (n_c, n_c)
    table of (query, member) pairs gives every query's relevant ranks."""
    names = [f"recall@{k}" for k in ks] + ["precision@1", "r_precision", "map@r", "map@1000"]
    sums = dict.fromkeys(names, 0.0)
    count = 0
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        r = len(m) - 1
        if r < 1:
            continue
        a = np.arange(len(m))
        after = a[None, :] > a[:, None]  # member k lies after query a in the class
        pos = m[None, :] + 1 - after
        j = a[None, :] + 1 - after
        other = a[None, :] != a[:, None]
        first = np.where(other, pos, np.iinfo(np.int64).max).min(1)
        for k in ks:
            sums[f"recall@{k}"] += float((first <= k).sum())
        sums["precision@1"] += float((first == 1).sum())
        within = other & (pos <= r)
        sums["r_precision"] += float(within.sum() / r)
        sums["map@r"] += float((np.where(within, j / pos, 0).sum(1) / r).sum())
        deep = other & (pos <= 1000)
        sums["map@1000"] += float((np.where(deep, j / pos, 0).sum(1) / (r + 1)).sum())
        count += len(m)
    return {k: v / count for k, v in sums.items()}
