"""ooDML on real code paths: split files from mini domains, the oodml protocol data (one
retrieval definition per dataset at every level) and few-shot episodes. The published-file
import is in test_oodml_import.py; PUMA's few-shot training in test_fewshot_train.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from umlbench import const as C
from umlbench.data.prepare import load_prepared
from umlbench.errors import UserError
from umlbench.protocols import fewshot, oodml
from umlbench.protocols.oodml_episodes import (
    SUPPORT_CLASSES_PER_SHOT,
    eval_rows,
    make_episodes,
    roles,
)
from umlbench.runner import build_config


@pytest.fixture(scope="module")
def aircraft_splits(mini_root):
    oodml.prepare_splits(mini_root, "mini-aircraft", levels=6)
    return oodml.load_splits(mini_root, "mini-aircraft")


def test_split_file_levels_are_graded_and_valid(aircraft_splits, mini_root):
    levels = aircraft_splits["levels"]
    assert aircraft_splits["format"] == oodml.SPLIT_FORMAT and len(levels) == 6
    assert aircraft_splits["schedule"] == "fid" and aircraft_splits["removal_rule"] == "official"
    fids = [lv["fid"] for lv in levels]
    assert all(a < b for a, b in zip(fids, fids[1:]))
    assert aircraft_splits["default_level"] in [lv["level"] for lv in levels]
    m = load_prepared(mini_root, "mini-aircraft").manifest
    all_classes = set(m[C.LABEL])
    for lv in levels:
        assert not set(lv["train"]) & set(lv["test"])
        assert set(lv["train"]) | set(lv["test"]) <= all_classes
        assert set(lv["split_train"]) | set(lv["split_val"]) == set(lv["train"])
        eps = lv["episodes"]["2"]
        assert len(eps) == oodml.EPISODES
        per_class = m.set_index(C.IMAGE_ID).loc[eps[0]["support"], C.LABEL].value_counts()
        assert (per_class == 2).all() and set(per_class.index) == set(eps[0]["query_classes"])


def test_oodml_protocol_data(aircraft_splits, mini_root):
    lv = aircraft_splits["levels"][-1]
    cfg = build_config("linear", "mini", overrides=["protocol.name=oodml",
                                                    "protocol.dataset=mini-aircraft",
                                                    f"protocol.level={lv['level']}"])
    data = oodml.build(cfg, mini_root)
    m = data.sources[0].manifest
    assert set(m[C.LABEL].to_numpy()[data.train["row"]]) == set(lv["train"])
    assert set(data.test["target"]) == set(lv["test"])
    assert data.num_classes == len(lv["train"])
    assert data.info["fid"] == pytest.approx(lv["fid"])
    with pytest.raises(UserError, match="level 99 not in"):
        oodml.build(dataclasses.replace(cfg, protocol=dataclasses.replace(cfg.protocol,
                                                                          level=99)), mini_root)


def test_missing_split_file_says_how_to_make_it(tmp_path):
    with pytest.raises(UserError, match="umlbench prepare-splits --protocol oodml"):
        oodml.load_splits(tmp_path, "mini-cub")


def test_few_shot_episodes_adapt_the_head(aircraft_splits, env_root, mini_root):
    from umlbench.runner import run

    cfg = build_config("linear", "mini", overrides=[
        "protocol.name=fewshot", "protocol.dataset=mini-aircraft", "protocol.level=1",
        "protocol.shots=2", "protocol.episodes=3", "protocol.finetune_iterations=5",
        "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=32",
        "eval.metrics=[recall@1,map@1000,nmi,f1]"])
    # The protocol's defaults: base model chosen on val R@1 + MAP@1000 (fewshot_ood_main.py).
    assert cfg.train.select == "val" and cfg.train.select_metric == "recall@1+map@1000"
    [(rec, path)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    extra = rec.metrics["extra"]
    assert rec.protocol["shots"] == 2 and rec.protocol["episodes"] == 3
    assert "val_universal_recall@1+map@1000" in rec.history[-1]
    for m in ("recall@1", "map@1000", "nmi", "f1"):
        for key in (f"zero_shot@{m}", f"few_shot@{m}", f"few_shot@{m}_ci95", f"gain@{m}_ci95"):
            assert key in extra
        assert extra[f"gain@{m}"] == pytest.approx(extra[f"few_shot@{m}"]
                                                   - extra[f"zero_shot@{m}"])
    # Per-query outcomes: one scope per episode, whose means average to the record's values.
    from umlbench.results import perquery
    from umlbench.results.validate import validate_paths

    outcomes = perquery.load_for_record(path, rec)
    assert outcomes.episodic and sorted(outcomes.scopes) == ["episode-0", "episode-1",
                                                             "episode-2"]
    assert set(outcomes.scopes["episode-0"].values) == {"recall@1", "map@1000"}
    assert validate_paths([path]).problems == []


def test_few_shot_budget_official_by_default_and_mini_in_its_suite_config():
    uml = build_config("puma", "uml", overrides=["protocol.name=fewshot"])
    assert (uml.protocol.finetune_iterations, uml.protocol.finetune_lr) == (0, 0.0)
    assert fewshot.DEFAULT_ITERATIONS[2] == 1000 and fewshot.DEFAULT_ITERATIONS[5] == 1500
    assert fewshot.LR_MULTIPLIER == 10
    mini = build_config("puma", "mini", overrides=["protocol.name=fewshot"])
    assert (mini.protocol.finetune_iterations, mini.protocol.finetune_lr) == (300, 1e-3)


def test_sop_episodes_split_support_and_query_by_class(mini_root):
    prep = load_prepared(mini_root, "mini-sop")
    m = prep.manifest
    by_class = m.groupby(C.LABEL)[C.IMAGE_ID].apply(list).to_dict()
    test = sorted(set(m.loc[m[C.SPLIT] == C.TEST, C.LABEL]))[:100] + [0, 1, 2]  # some moved
    episodes = make_episodes(np.random.default_rng(0), "mini-sop", by_class, sorted(test))
    for shots, eps in episodes.items():
        for ep in eps:
            sup, query = set(ep["support_classes"]), set(ep["query_classes"])
            assert not sup & query and sup | query == set(test)
            assert len(sup) == round(SUPPORT_CLASSES_PER_SHOT * int(shots) * len(test))
    ep = episodes["5"][0]
    rows = eval_rows(prep, set(test)).reset_index(drop=True)
    support, query = fewshot._episode_rows(ep, rows, {})
    assert set(rows["target"].iloc[support]) == set(ep["support_classes"])
    assert set(rows["target"].iloc[query]) == set(ep["query_classes"])
    assert len(support) + len(query) == len(rows)  # every image of a support class is support
    # CUB/Cars-style episodes elsewhere: shots images of every class, the rest queried.
    image_eps = make_episodes(np.random.default_rng(0), "mini-cub", by_class, [0, 1, 2])
    assert all("support" in ep and len(ep["support"]) == 2 * 3 for ep in image_eps["2"])


def test_inshop_keeps_query_gallery_roles_at_every_level(mini_root):
    prep = load_prepared(mini_root, "mini-inshop")
    m = prep.manifest
    is_q, is_g = roles(m)
    assert not (is_q & is_g).any() and (is_q | is_g).all()  # no leave-one-out row anywhere
    split = m[C.SPLIT].to_numpy()
    assert (is_q[split == C.QUERY]).all() and (is_g[split == C.GALLERY]).all()
    # Former training items: alternately query and gallery in image-id order; a lone image
    # is gallery only.
    train = m[split == C.TRAIN]
    sizes = train.groupby(C.LABEL).size()
    item = train[train[C.LABEL] == sizes[sizes >= 3].index[0]].sort_values(C.IMAGE_ID)
    assert [bool(is_q[i]) for i in item.index[:3]] == [True, False, True]
    # A shifted level's test classes mix former train and test items: all query->gallery.
    mixed = set(sizes.index[:20]) | set(m.loc[split == C.QUERY, C.LABEL][:40])
    rows = eval_rows(prep, mixed)
    assert not (rows["is_query"] & rows["is_gallery"]).any()
    assert set(rows["target"]) == mixed and rows["is_query"].sum() > 0


def test_leave_one_out_elsewhere(aircraft_splits, mini_root):
    prep = load_prepared(mini_root, "mini-aircraft")
    assert roles(prep.manifest) is None
    rows = eval_rows(prep, set(aircraft_splits["levels"][0]["test"]))
    assert rows["is_query"].all() and rows["is_gallery"].all()


def test_missing_weights_name_the_prepare_splits_flag(monkeypatch):
    from umlbench.models import backbones

    def offline(*a, **k):
        raise UserError("could not load pretrained weights for 'resnet50.tv_in1k' (offline); "
                        "on a machine without internet download them elsewhere and pass "
                        "backbone.weights=FILE")

    monkeypatch.setattr(backbones, "create_backbone", offline)
    with pytest.raises(UserError, match="umlbench prepare-splits --weights FILE") as err:
        oodml._backbone("resnet50.tv_in1k", None)
    assert "backbone.weights" not in str(err.value)


def test_schedule_checks(mini_root):
    with pytest.raises(UserError, match="no official ooDML split table"):
        oodml.resolve_schedule("mini-cub", "official", None)
    with pytest.raises(UserError, match="official cars table has 8 levels"):
        oodml.resolve_schedule("cars", None, 6)
    assert oodml.resolve_schedule("cub", None, None) == "official"
    assert oodml.resolve_schedule("nabirds", None, None) == "fid"
