"""ooDML split construction (Milbich, Roth et al., NeurIPS 2021): pure functions on class means.

The shift between a train and a test class set is the Frechet distance between Gaussians fitted
to the train-class mean features and to the test-class mean features. Harder splits come from
repeatedly exchanging *border* classes (the train class relatively closest to the test side and
vice versa), easier ones from exchanging the most typical classes (``inverse``), the hardest from
class removal. Swapping and removal follow ``split_helpers.split_maker`` and
``split_maker_with_class_removal`` of the official code step by step, on list *positions* as
there: the ranking is computed once per iteration; swap ``k`` of an iteration walks both
rankings from entry ``k`` and takes, per side, the first position not among that side's last
``history`` picks; a side with no such position re-uses its previous pick; each split is
recorded (key = iteration x swaps per iteration) *before* that iteration's swaps.

Removal, as released: after an iteration's swaps the FID is recomputed; if it did not drop
(``adjusted >= fid``) the swaps are undone and the picked classes are *removed* from both
sides, otherwise the swaps are kept (``rule="official"``). ``rule="monotone"`` is umlbench's
earlier reading (keep swaps that raise the FID, remove when they do not).

Where removal starts (``pairing``): ``"aligned"`` (umlbench's default) starts from the last
recorded swap split with *its* class means; ``"released"`` reproduces
``create_dataset_splits.py:121-125``, which pairs the class means after one more swap iteration
(its ``final_feats`` aliases the lists that the last iteration swaps in place) with the class
*names* of key 48: rankings and FIDs are then computed on features that, at the last
iteration's picked positions, belong to other classes than the names carried along. The
script needs key 48, which its SOP settings never record; umlbench uses the last swap key.

Class lists are position lists, so the order a side starts in matters (removal deletes
positions, the pick history remembers positions): the official code starts each side as
``np.unique(classnames)``, the class folder names sorted as text (``split_helpers.py:53-56``);
the caller orders ``train``/``test`` (:func:`umlbench.protocols.oodml.initial_sides`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["frechet_distance", "Split", "swap_splits", "removal_splits", "select_levels",
           "Schedule", "OFFICIAL_SCHEDULES", "official_splits", "official_pool", "auto_splits",
           "REMOVAL_RULES", "REMOVAL_PAIRINGS"]

REMOVAL_RULES = ("official", "monotone")
REMOVAL_PAIRINGS = ("aligned", "released")


def frechet_distance(a: np.ndarray, b: np.ndarray, form: str = "auto") -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` (n1, d) and ``b`` (n2, d).

    ||mu_a - mu_b||^2 + Tr(C_a) + Tr(C_b) - 2 Tr((C_a C_b)^(1/2)), unbiased covariances
    (``np.cov``, as the official ``metric_fid``). With C = Z^T Z, the non-zero eigenvalues of
    C_a C_b equal those of the PSD matrices ``(Z_a Z_b^T)(Z_a Z_b^T)^T`` (n1 x n1) and
    ``L^T C_b L`` with C_a = L L^T (d x d), so the trace term is computed exactly either as the
    nuclear norm of Z_a Z_b^T (``form="lowrank"``, O(n1 n2 min(n1, n2))) or from two symmetric
    eigendecompositions of d x d matrices (``form="dxd"``, O((n1 + n2) d^2 + d^3)). ``"auto"``
    takes the d x d form when both sides have more rows than columns (SOP: 11,316 class means
    in 2,048-d), else the low-rank form. The official code adds 1e-8 to both diagonals before
    ``scipy.linalg.sqrtm`` and keeps the real part; on rank-deficient covariances that changes
    the value by about d * 1e-8 and sqrtm itself is ill-conditioned, so neither is copied.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if form == "auto":
        form = "dxd" if min(len(a), len(b)) > a.shape[1] else "lowrank"
    mu_a, mu_b = a.mean(0), b.mean(0)
    za = (a - mu_a) / np.sqrt(max(len(a) - 1, 1))
    zb = (b - mu_b) / np.sqrt(max(len(b) - 1, 1))
    if form == "lowrank":
        cross = np.linalg.svd(za @ zb.T, compute_uv=False).sum()
    elif form == "dxd":
        w, v = np.linalg.eigh(za.T @ za)
        root = np.sqrt(np.clip(w, 0.0, None))
        inner = v.T @ (zb.T @ zb) @ v
        inner *= root[:, None]
        inner *= root[None, :]
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0.0, None)).sum()
    else:
        raise ValueError(f"unknown form {form!r}; use auto, lowrank or dxd")
    value = ((mu_a - mu_b) ** 2).sum() + (za**2).sum() + (zb**2).sum() - 2 * cross
    return float(max(value, 0.0))


@dataclass
class Split:
    """One train/test partition of a dataset's classes (indices into the class-mean table).

    ``key``: "0", "6", "-10" (inverse swaps), "R22" (removal); the number is iteration x swaps
    per iteration, as in the official split tables. ``fid`` is None when it was not needed."""

    key: str
    train: list[int]
    test: list[int]
    fid: float | None


class _Picker:
    """The official position picking, with its per-side history of picked positions."""

    def __init__(self, history: int) -> None:
        if history < 1:
            raise ValueError("history must be >= 1 (the official code reads lst[-0:] as all)")
        self.history = history
        self.done_tr: list[int] = []
        self.done_te: list[int] = []
        self.last: tuple[int | None, int | None] = (None, None)

    def pick(self, r_tr: list[int], r_te: list[int], k: int) -> tuple[int, int] | None:
        recent_tr = set(self.done_tr[-self.history:])
        recent_te = set(self.done_te[-self.history:])
        p_tr, p_te = self.last
        got_tr = got_te = False
        for i in range(k, min(len(r_tr), len(r_te))):  # zip(r_tr[k:], r_te[k:])
            a, b = r_tr[i], r_te[i]
            if not got_tr and a not in recent_tr:
                self.done_tr.append(a)
                p_tr, got_tr = a, True
            if not got_te and b not in recent_te:
                self.done_te.append(b)
                p_te, got_te = b, True
            if got_tr and got_te:
                break
        if p_tr is None or p_te is None:  # the official code would fail (unbound name)
            return None
        self.last = (p_tr, p_te)
        return p_tr, p_te


def _ranking(feats: np.ndarray, train: list[int], test: list[int], inverse: bool):
    """Positions of each side sorted by d(c, other side's mean) - d(c, own mean), ascending
    (the border classes first); reversed for ``inverse``."""
    f_tr, f_te = feats[train], feats[test]
    m_tr, m_te = f_tr.mean(0), f_te.mean(0)
    s_tr = np.linalg.norm(f_tr - m_te, axis=1) - np.linalg.norm(f_tr - m_tr, axis=1)
    s_te = np.linalg.norm(f_te - m_tr, axis=1) - np.linalg.norm(f_te - m_te, axis=1)
    r_tr, r_te = np.argsort(s_tr, kind="stable"), np.argsort(s_te, kind="stable")
    return (r_tr[::-1], r_te[::-1]) if inverse else (r_tr, r_te)


def _iterate(feats, train, test, per_iter, picker, inverse, names=None):
    """One iteration of swaps, in place; returns the picked (train, test) positions or None
    when no position could be picked at all. ``train``/``test`` index the rows of ``feats``
    the ranking reads; ``names`` (train, test), if given, are swapped at the same positions
    (the class lists the official code carries beside its feature lists)."""
    r_tr, r_te = (r.tolist() for r in _ranking(feats, train, test, inverse))
    picked = []
    for k in range(per_iter):
        pair = picker.pick(r_tr, r_te, k)
        if pair is None or pair[0] >= len(train) or pair[1] >= len(test):
            return None  # nothing pickable (the official code fails here)
        p, q = pair
        train[p], test[q] = test[q], train[p]
        if names is not None:
            n_tr, n_te = names
            n_tr[p], n_te[q] = n_te[q], n_tr[p]
        picked.append(pair)
    return picked


def _fid(feats, train, test) -> float:
    return frechet_distance(feats[train], feats[test])


def swap_splits(feats: np.ndarray, train: list[int], test: list[int], iterations: int,
                per_iter: int, history: int, inverse: bool = False,
                fid_keys: Iterable[str] | None = None) -> list[Split]:
    """``split_maker``: the split before each of ``iterations`` swap iterations (key 0 = the
    given split). FIDs are computed for every key, or only for ``fid_keys`` (swapping never
    reads them)."""
    return _swap_run(feats, train, test, iterations, per_iter, history, inverse, fid_keys)[0]


def _swap_run(feats, train, test, iterations, per_iter, history, inverse=False, fid_keys=None):
    """``swap_splits`` plus the (train, test) lists after the last iteration's swaps (the
    state the released script's ``final_feats`` holds)."""
    wanted = None if fid_keys is None else set(fid_keys)
    train, test = list(train), list(test)
    picker = _Picker(history)
    out = []
    for i in range(iterations):
        key = str(-i * per_iter if inverse else i * per_iter)
        fid = _fid(feats, train, test) if wanted is None or key in wanted else None
        out.append(Split(key, list(train), list(test), fid))
        if _iterate(feats, train, test, per_iter, picker, inverse) is None:
            break
    return out, train, test


def removal_splits(feats: np.ndarray, train: list[int], test: list[int], iterations: int,
                   per_iter: int, history: int, rule: str = "official", until: str | None = None,
                   min_classes: int = 1,
                   features: tuple[list[int], list[int]] | None = None) -> list[Split]:
    """``split_maker_with_class_removal`` from the given split: keys "R<i x per_iter>", each
    recorded before its iteration. ``until``: stop after recording that key. ``min_classes``
    (umlbench's guard, 1 = none): stop before a removal would leave a side with fewer.
    ``features``: the (train, test) rows of ``feats`` the ranking and FID read, position by
    position, when they are not those of ``train``/``test`` (the released pairing, see the
    module docstring); the recorded splits always list ``train``/``test``."""
    if rule not in REMOVAL_RULES:
        raise ValueError(f"unknown removal rule {rule!r}; use one of {REMOVAL_RULES}")
    train, test = list(train), list(test)
    f_tr, f_te = (list(train), list(test)) if features is None else map(list, features)
    if (len(f_tr), len(f_te)) != (len(train), len(test)):
        raise ValueError("features must pair every position of train and test")
    picker = _Picker(history)
    out: list[Split] = []
    fid = None
    for i in range(iterations):
        if fid is None:
            fid = _fid(feats, f_tr, f_te)
        key = f"R{i * per_iter}"
        out.append(Split(key, list(train), list(test), fid))
        if key == until:
            break
        old = (list(train), list(test), list(f_tr), list(f_te))
        picked = _iterate(feats, f_tr, f_te, per_iter, picker, False, names=(train, test))
        if picked is None:
            break
        adjusted = _fid(feats, f_tr, f_te)
        remove = adjusted >= fid if rule == "official" else adjusted <= fid
        if not remove:
            fid = adjusted
            continue
        train, test, f_tr, f_te = old
        drop_tr = sorted({p for p, _ in picked}, reverse=True)
        drop_te = sorted({q for _, q in picked}, reverse=True)
        if min(len(train) - len(drop_tr), len(test) - len(drop_te)) < min_classes:
            break
        for p in drop_tr:
            del train[p], f_tr[p]
        for q in drop_te:
            del test[q], f_te[q]
        fid = None
    return out


@dataclass(frozen=True)
class Schedule:
    """An official split table of ``create_dataset_splits.py`` (level 1 first)."""

    levels: tuple[str, ...]  # split ids: swap keys, "-k" inverse swaps, "R<k>" removal
    published_fid: tuple[float, ...]  # the table's FIDs (the shipped pickles hold their own)
    n_swaps: int = 25  # swap iterations; easier splits n_swaps - 10, removal n_swaps + 10
    swaps_iter: int = 2
    history: int = 5
    easy_history: int = 30

    @property
    def removal_start(self) -> str:
        """The last recorded swap split (48 for CUB/Cars, as the script's hard_SPLITS[48])."""
        return str((self.n_swaps - 1) * self.swaps_iter)


OFFICIAL_SCHEDULES: dict[str, Schedule] = {
    "cub": Schedule(("-20", "-10", "0", "6", "10", "30", "R22", "R48", "R66"),
                    (19.16, 28.49, 52.62, 72.20, 92.48, 120.38, 136.45, 152.04, 173.94)),
    "cars": Schedule(("0", "6", "16", "20", "30", "R18", "R42", "R66"),
                     (8.59, 14.33, 32.18, 43.58, 63.29, 86.48, 101.17, 123.03)),
    # The script's comment: "For SOP, set e.g. opt.swaps_iter = 1000 and opt.n_swaps=20".
    "sop": Schedule(("0", "1000", "2000", "3000", "4000", "5000", "R2000", "R6000"),
                    (3.43, 24.59, 53.47, 99.38, 135.53, 155.25, 189.81, 235.10),
                    n_swaps=20, swaps_iter=1000),
}


def official_pool(feats: np.ndarray, train: list[int], test: list[int], schedule: Schedule,
                  rule: str = "official", pairing: str = "aligned",
                  levels_only: bool = True) -> dict[str, Split]:
    """Every split the official driver records, by key: swaps ("0".."48"), removal ("R0"..)
    and, where the table has them, inverse swaps ("-2"..). ``train``/``test``: each side's
    class positions in the official starting order. ``levels_only``: compute FIDs only for
    the table's levels and stop removal at its last level (what :func:`official_splits`
    needs); else every key with its FID."""
    if pairing not in REMOVAL_PAIRINGS:
        raise ValueError(f"unknown removal pairing {pairing!r}; use one of {REMOVAL_PAIRINGS}")
    want = set(schedule.levels)
    swap_keys = {k for k in want if not k.startswith(("R", "-"))} if levels_only else None
    easy_keys = {k for k in want if k.startswith("-")}
    removal_keys = [k for k in schedule.levels if k.startswith("R")]
    hard, last_tr, last_te = _swap_run(feats, train, test, schedule.n_swaps, schedule.swaps_iter,
                                       schedule.history, fid_keys=swap_keys)
    pool = {s.key: s for s in hard}
    if removal_keys or not levels_only:
        start = pool.get(schedule.removal_start)
        if start is not None:
            until = max(removal_keys, key=lambda k: int(k[1:])) if levels_only else None
            # released: the features after the last swap iteration, the names of its key
            features = (last_tr, last_te) if pairing == "released" else None
            for s in removal_splits(feats, start.train, start.test, schedule.n_swaps + 10,
                                    schedule.swaps_iter, schedule.history, rule, until=until,
                                    features=features):
                pool.setdefault(s.key, s)
    if easy_keys:
        for s in swap_splits(feats, train, test, schedule.n_swaps - 10, schedule.swaps_iter,
                             schedule.easy_history, inverse=True,
                             fid_keys=easy_keys if levels_only else None):
            pool.setdefault(s.key, s)  # the script keeps the hard split under key 0
    return pool


def official_splits(feats: np.ndarray, train: list[int], test: list[int], schedule: Schedule,
                    rule: str = "official", pairing: str = "aligned") -> list[Split]:
    """The splits of an official table, in level order (FIDs only where needed)."""
    pool = official_pool(feats, train, test, schedule, rule, pairing)
    missing = [k for k in schedule.levels if k not in pool]
    if missing:
        raise ValueError(f"splits {missing} were not reached (too few classes to swap)")
    return [pool[k] for k in schedule.levels]


def auto_splits(feats: np.ndarray, train: list[int], test: list[int], levels: int = 8,
                rule: str = "official", keep_fraction: float = 0.6) -> list[Split]:
    """umlbench's extension for datasets without an official table: the official procedure
    (25 swap iterations with history 5, 15 inverse ones with history 30, 35 removal
    iterations from the last swap split), with swaps per iteration scaled to the class count
    (the official 2 for ~100 classes per side) and removal stopped before a side falls below
    ``keep_fraction`` of its classes; then ``levels`` splits spaced evenly in FID. As in the
    official tables, removal splits only serve as the levels beyond the hardest swap split
    (under the official rule the removal trajectory also visits lower FIDs)."""
    n_side = min(len(train), len(test))
    per_iter = max(1, n_side // 50)
    history = max(1, min(5, n_side // 4))
    hard = swap_splits(feats, train, test, 25, per_iter, history)
    easy = swap_splits(feats, train, test, 15, per_iter, max(1, min(30, n_side // 2)),
                       inverse=True)[1:]
    removal = removal_splits(feats, hard[-1].train, hard[-1].test, 35, per_iter, history,
                             rule, min_classes=max(2, int(np.ceil(keep_fraction * n_side))))
    top = max(s.fid for s in hard)
    return select_levels(hard + easy + [s for s in removal if s.fid > top], levels)


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
