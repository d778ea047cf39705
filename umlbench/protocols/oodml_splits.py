"""ooDML split construction (Milbich, Roth et al., NeurIPS 2021): pure functions on class means.

The shift between a train and a test class set is the Frechet distance between Gaussians fitted
to the train-class mean features and to the test-class mean features. Harder splits are made by
repeatedly exchanging *border* classes (the train class relatively closest to the test side and
vice versa); easier splits by exchanging the most typical classes (``inverse``). When swapping
stops raising the distance, the class-removal continuation drops the selected classes from both
sides instead. See ``shared/reference/oodml-official-code.md`` sections 1.1-1.4; the bugs listed
there (wrong variable names, features after 50 swaps paired with the lists after 48, ...) are not
reproduced.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["frechet_distance", "Split", "swap_splits", "removal_splits", "select_levels"]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` (n1, d) and ``b`` (n2, d).

    ||mu_a - mu_b||^2 + Tr(C_a) + Tr(C_b) - 2 Tr((C_a C_b)^(1/2)), with unbiased covariances.
    With class means, n << d and both covariances are rank-deficient, so instead of a d x d
    matrix square root (scipy.linalg.sqrtm, ill-conditioned here) the trace term is computed
    exactly in the n1 x n2 space: with C = A^T A, the non-zero eigenvalues of C_a C_b are those
    of (A_a A_b^T)(A_a A_b^T)^T, so Tr((C_a C_b)^(1/2)) is the nuclear norm of A_a A_b^T.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    za = (a - mu_a) / np.sqrt(max(len(a) - 1, 1))
    zb = (b - mu_b) / np.sqrt(max(len(b) - 1, 1))
    cross = np.linalg.svd(za @ zb.T, compute_uv=False).sum()
    value = ((mu_a - mu_b) ** 2).sum() + (za**2).sum() + (zb**2).sum() - 2 * cross
    return float(max(value, 0.0))


@dataclass
class Split:
    """One train/test partition of a dataset's classes (indices into the class-mean table)."""

    key: str  # e.g. "0", "6", "-10" (inverse), "R22" (removal)
    train: list[int]
    test: list[int]
    fid: float
    removed: list[int] = field(default_factory=list)


def _border_ranking(feats, train, test, inverse: bool) -> tuple[list[int], list[int]]:
    """Classes of each side sorted by how much closer they are to the *other* side."""
    m_tr, m_te = feats[train].mean(0), feats[test].mean(0)
    d = lambda idx, m: np.linalg.norm(feats[idx] - m, axis=1)  # noqa: E731
    s_tr = d(train, m_te) - d(train, m_tr)  # small: a train class that looks like test
    s_te = d(test, m_tr) - d(test, m_te)
    o_tr, o_te = np.argsort(s_tr, kind="stable"), np.argsort(s_te, kind="stable")
    if inverse:  # the most typical classes first: exchanging them makes the sides alike
        o_tr, o_te = o_tr[::-1], o_te[::-1]
    return [train[i] for i in o_tr], [test[i] for i in o_te]


def _pick(ranking: list[int], taken: set[int], history: deque) -> int | None:
    for c in ranking:
        if c not in taken and c not in history:
            return c
    return None


def _swap_once(feats, train, test, per_iter, history, inverse):
    """One iteration: ``per_iter`` exchanges from one ranking (not recomputed in between)."""
    r_tr, r_te = _border_ranking(feats, train, test, inverse)
    taken: set[int] = set()
    moved = []
    for _ in range(per_iter):
        a, b = _pick(r_tr, taken, history), _pick(r_te, taken, history)
        if a is None or b is None:
            break
        taken |= {a, b}
        moved.append((a, b))
    train, test = list(train), list(test)
    for a, b in moved:
        train[train.index(a)] = b
        test[test.index(b)] = a
    return train, test, moved


def swap_splits(feats: np.ndarray, train: list[int], test: list[int], iterations: int,
                per_iter: int, history: int, inverse: bool = False) -> list[Split]:
    """The sequence of splits made by class swapping, one per iteration (key = classes swapped
    so far per side, negative for ``inverse``), starting with the given split (key 0).

    ``history``: classes exchanged in the last ``history`` swaps cannot be picked again, which
    stops a class from bouncing between the sides.
    """
    out = [Split("0", list(train), list(test), frechet_distance(feats[train], feats[test]))]
    recent: deque = deque(maxlen=2 * history)
    done = 0
    for _ in range(iterations):
        train, test, moved = _swap_once(feats, train, test, per_iter, recent, inverse)
        if not moved:
            break
        for a, b in moved:
            recent.extend((a, b))
        done += len(moved)
        key = str(-done if inverse else done)
        out.append(Split(key, train, test, frechet_distance(feats[train], feats[test])))
    return out


def removal_splits(feats: np.ndarray, start: Split, iterations: int, per_iter: int,
                   history: int, min_classes: int) -> list[Split]:
    """Continue from ``start``: an iteration whose swaps do not raise the distance is undone
    and its selected classes are removed from both sides (keys "R<classes removed per side>").
    Stops when a side would fall below ``min_classes``."""
    train, test = list(start.train), list(start.test)
    fid = start.fid
    recent: deque = deque(maxlen=2 * history)
    removed: list[int] = []
    out = []
    for _ in range(iterations):
        new_tr, new_te, moved = _swap_once(feats, train, test, per_iter, recent, False)
        if not moved:
            break
        new_fid = frechet_distance(feats[new_tr], feats[new_te])
        if new_fid > fid:
            train, test, fid = new_tr, new_te, new_fid
            for a, b in moved:
                recent.extend((a, b))
            continue
        if len(train) - len(moved) < min_classes:
            break
        drop = {c for pair in moved for c in pair}
        train = [c for c in train if c not in drop]
        test = [c for c in test if c not in drop]
        removed += sorted(drop)
        fid = frechet_distance(feats[train], feats[test])
        out.append(Split(f"R{len(removed) // 2}", list(train), list(test), fid, list(removed)))
    return out


def select_levels(candidates: list[Split], n_levels: int, default_key: str = "0") -> list[Split]:
    """Pick ``n_levels`` splits with strictly increasing distance, spread evenly from the
    easiest to the hardest candidate; the default split is always one of them."""
    pool = sorted({round(s.fid, 9): s for s in candidates}.values(), key=lambda s: s.fid)
    if len(pool) <= n_levels:
        return pool
    lo, hi = pool[0].fid, pool[-1].fid
    chosen = {pool[0].key: pool[0], pool[-1].key: pool[-1]}
    default = next((s for s in pool if s.key == default_key), None)
    if default is not None:
        chosen[default.key] = default
    for target in np.linspace(lo, hi, n_levels)[1:-1]:
        if len(chosen) >= n_levels:
            break
        free = [s for s in pool if s.key not in chosen]
        best = min(free, key=lambda s: abs(s.fid - target))
        chosen[best.key] = best
    while len(chosen) < n_levels:  # fill the widest gap
        ordered = sorted(chosen.values(), key=lambda s: s.fid)
        gaps = [(b.fid - a.fid, a, b) for a, b in zip(ordered, ordered[1:])]
        _, a, b = max(gaps, key=lambda g: g[0])
        free = [s for s in pool if s.key not in chosen and a.fid < s.fid < b.fid]
        if not free:
            break
        mid = (a.fid + b.fid) / 2
        best = min(free, key=lambda s: abs(s.fid - mid))
        chosen[best.key] = best
    return sorted(chosen.values(), key=lambda s: s.fid)
