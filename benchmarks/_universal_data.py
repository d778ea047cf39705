"""Synthetic embeddings with the structure of the UML benchmark's universal test pool.

The eight test sets' sizes and class counts (CUB 5,924/100, Cars 8,131/98, SOP 60,502/11,316,
In-shop 26,830/3,985, NABirds 25,653/277, Dogs 9,929/60, Flowers 4,696/51, Aircraft 5,000/50;
146,665 images in all) are scaled by ``n / 146,665``; embeddings are class centres plus noise,
so neighbour lists look like a trained model's (mostly same-class, not trivially so).
"""

from __future__ import annotations

import numpy as np

SIZES = {"cub": (5924, 100), "cars": (8131, 98), "sop": (60502, 11316), "inshop": (26830, 3985),
         "nabirds": (25653, 277), "dogs": (9929, 60), "flowers": (4696, 51),
         "aircraft": (5000, 50)}
TOTAL = sum(n for n, _ in SIZES.values())


def universal_embeddings(n: int = TOTAL, dim: int = 128, seed: int = 0):
    """Returns embeddings (n', dim) float32, labels (n',), datasets (n',) str,
    is_query, is_gallery (In-shop rows split half/half)."""
    rng = np.random.default_rng(seed)
    scale = n / TOTAL
    embs, labels, names, is_q, is_g = [], [], [], [], []
    for name, (size, classes) in SIZES.items():
        size = max(4, int(round(size * scale)))
        classes = max(2, min(int(round(classes * scale)), size // 2))
        lab = np.sort(rng.integers(0, classes, size))
        centres = rng.normal(size=(classes, dim)).astype(np.float32)
        e = centres[lab] + 1.1 * rng.normal(size=(size, dim)).astype(np.float32)
        embs.append(e)
        labels.append(lab)
        names.append(np.full(size, name))
        if name == "inshop":
            q = rng.random(size) < 0.53
            is_q.append(q)
            is_g.append(~q)
        else:
            is_q.append(np.ones(size, bool))
            is_g.append(np.ones(size, bool))
    return (np.concatenate(embs), np.concatenate(labels), np.concatenate(names),
            np.concatenate(is_q), np.concatenate(is_g))
