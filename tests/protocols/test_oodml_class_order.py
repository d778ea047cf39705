"""ooDML split generation against the official split functions, with the real Cars class names:
the initial class order (issue 21, item 6) and where removal starts (item 7).

``data/oodml_cars_official_lists.json`` was produced outside the repository by running the
official ``split_helpers.split_maker`` and ``split_maker_with_class_removal``
(Confusezius/Characterizing_Generalization_in_DeepMetricLearning @ e8a4171, ``umap`` stubbed,
as it only draws plots) on synthetic class means: ``classes`` are the 196 Cars196 class names in
devkit (``cars_meta.mat``) order, i.e. umlbench's label order, written as the Revisiting-DML
layout's folder names ('/' as '-'); the class mean of label ``i`` is row ``i`` of
``_features()`` below. As ``get_features`` and ``DefaultDatasets`` do, each side was listed as
``np.unique(names)`` (train = the first 98 sorted folder names, which are devkit classes 1-98),
then ``split_maker(N_SWAPS=25, SWAPS_PER_ITER=2, HISTORY=5)``; removal
``split_maker_with_class_removal(N_SWAPS=35, SWAPS_PER_ITER=2, HISTORY=5)`` ran twice from key
48's class lists: with the class means of those lists (``removal_aligned``) and with the
script's ``hard_final_feats`` (the means after the last swap iteration, ``removal_released``,
``create_dataset_splits.py:121-125``). Stored per key: each side's class list *in list order*
(as devkit labels 0-195) and the official ``metric_fid``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from umlbench import const as C
from umlbench.protocols.oodml import OFFICIAL_CLASS_KEYS, initial_sides
from umlbench.protocols.oodml_splits import OFFICIAL_SCHEDULES, official_pool, official_splits

REF = json.loads((Path(__file__).with_name("data") / "oodml_cars_official_lists.json").read_text())


def _features() -> np.ndarray:
    """(196, 12) class means, row = devkit label; the generator the fixture was made with."""
    rng = np.random.default_rng(REF["feature_seed"])
    d = REF["dim"]
    return rng.normal(size=(196, d)) + np.linspace(0, 3, 196)[:, None] * rng.normal(size=d)


def _pool(order: str, pairing: str) -> dict:
    keys = dict(enumerate(REF["classes"])) if order == "official" else None
    train, test = initial_sides(np.arange(196), set(range(98)), keys)
    return official_pool(_features(), train, test, OFFICIAL_SCHEDULES["cars"], pairing=pairing,
                         levels_only=False)


@pytest.mark.parametrize("pairing", ["aligned", "released"])
def test_official_order_reproduces_the_official_class_lists_at_every_key(pairing):
    pool = _pool("official", pairing)
    expected = {**REF["swap"], **REF[f"removal_{pairing}"]}
    assert sorted(pool) == sorted(expected)  # keys 0..48 and R0..R68
    for key, ref in expected.items():
        assert pool[key].train == ref["train"], key
        assert pool[key].test == ref["test"], key
        # full-rank 12-d covariances: the official sqrtm (with its 1e-8 offset) is exact
        assert pool[key].fid == pytest.approx(ref["fid"], rel=1e-6, abs=1e-6), key


def test_the_two_pairings_differ_and_the_table_levels_come_from_the_pool():
    # The released pairing is a different trajectory on these features (R28: 70 vs 74 per side).
    assert len(REF["removal_released"]["R28"]["train"]) != len(REF["removal_aligned"]["R28"]
                                                               ["train"])
    keys = dict(enumerate(REF["classes"]))
    train, test = initial_sides(np.arange(196), set(range(98)), keys)
    for pairing in ("aligned", "released"):
        got = official_splits(_features(), train, test, OFFICIAL_SCHEDULES["cars"],
                              pairing=pairing)
        ref = {**REF["swap"], **REF[f"removal_{pairing}"]}
        levels = OFFICIAL_SCHEDULES["cars"].levels
        assert [s.train for s in got] == [ref[k]["train"] for k in levels]
    with pytest.raises(ValueError, match="unknown removal pairing"):
        official_pool(_features(), train, test, OFFICIAL_SCHEDULES["cars"], pairing="shifted")


def test_label_order_changes_the_removal_levels_but_not_the_swap_levels():
    official, label = _pool("official", "aligned"), _pool("label", "aligned")
    for key in ("0", "6", "16", "20", "30"):  # swap levels: the same class sets
        assert set(label[key].train) == set(official[key].train)
    moved = [len(set(label[k].test) ^ set(official[k].test)) // 2 for k in ("R18", "R42", "R66")]
    assert any(m > 0 for m in moved)


def test_official_class_keys_are_folder_names_and_product_ids():
    cars = pd.DataFrame({C.LABEL: [1, 0, 1], C.CLASS_NAME: ["Ram C/V Cargo Van Minivan 2012",
                                                              "AM General Hummer SUV 2000"] + [
                                                                 "Ram C/V Cargo Van Minivan 2012"],
                         C.PATH: ["a/1.jpg", "a/2.jpg", "a/3.jpg"]})
    assert OFFICIAL_CLASS_KEYS["cars"](cars).to_dict() == {
        0: "AM General Hummer SUV 2000", 1: "Ram C-V Cargo Van Minivan 2012"}
    sop = pd.DataFrame({C.LABEL: [0, 0, 1], C.CLASS_NAME: ["bicycle/1", "bicycle/1", "sofa/2"],
                        C.PATH: ["S/bicycle_final/111085122871_0.JPG",
                                 "S/bicycle_final/111085122871_1.JPG", "S/sofa_final/2_0.JPG"]})
    assert OFFICIAL_CLASS_KEYS["sop"](sop).to_dict() == {0: "111085122871", 1: "2"}
    # np.unique order is text order: "10" < "111" < "2"
    tr, te = initial_sides(np.array([0, 1, 2]), {0, 1, 2}, {0: "2", 1: "111", 2: "10"})
    assert (tr, te) == ([2, 1, 0], [])
