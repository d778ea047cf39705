"""ooDML on real code paths: split files from a mini domain, the reference pickle import, the
oodml protocol data and few-shot episodes (PUMA's few-shot training: test_fewshot_train.py)."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from tests.data.fixtures import make_cub
from umlbench import const as C
from umlbench.data.prepare import load_prepared, prepare_one
from umlbench.data.registry import DATASETS
from umlbench.errors import DataError, UserError
from umlbench.protocols import fewshot, oodml
from umlbench.protocols.oodml_import import import_reference_splits
from umlbench.runner import build_config


@pytest.fixture(scope="module")
def aircraft_splits(mini_root):
    oodml.prepare_splits(mini_root, "mini-aircraft", levels=6)
    return oodml.load_splits(mini_root, "mini-aircraft")


def test_split_file_levels_are_graded_and_valid(aircraft_splits, mini_root):
    levels = aircraft_splits["levels"]
    assert aircraft_splits["format"] == oodml.SPLIT_FORMAT and len(levels) == 6
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
        "protocol.shots=2", "protocol.episodes=2", "protocol.finetune_iterations=5",
        "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=32",
        "eval.metrics=[recall@1]"])
    assert cfg.train.select == "val"  # the protocol's default: base model chosen on val
    [(rec, path)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    extra = rec.metrics["extra"]
    assert rec.protocol["shots"] == 2 and rec.protocol["episodes"] == 2
    for key in ("zero_shot@recall@1", "few_shot@recall@1", "few_shot@recall@1_ci95",
                "gain@recall@1"):
        assert key in extra
    assert extra["gain@recall@1"] == pytest.approx(extra["few_shot@recall@1"]
                                                   - extra["zero_shot@recall@1"])


def _reference_pickle(path, m):
    """A tiny split file in the reference format (numpy scalars, names, file names)."""
    names = m.groupby(C.LABEL)[C.CLASS_NAME].first()
    files = m.assign(f=m[C.PATH].map(lambda p: p.rsplit("/", 1)[-1])).groupby(C.LABEL)["f"].apply(list)
    train, test = [names[0], names[1]], [names[2], names[3]]
    data = {
        1: {"train": train, "test": test, "fid": np.float64(12.5),
            "split_train": [names[0]], "split_val": [names[1]],
            "test_episodes": {2: {0: {names[2]: files[2][:1], names[3]: files[3][:2]}}}},
        2: {"train": [names[0], names[2]], "test": [names[1], names[3]], "fid": np.float64(30.0),
            "split_train": [names[0]], "split_val": [names[2]], "test_episodes": {}},
    }
    path.write_bytes(pickle.dumps(data))


def test_import_reference_pickle_reproduces_the_split(tmp_path):
    fx = make_cub(tmp_path / "fx")
    spec = dataclasses.replace(DATASETS.get("cub"), expected=fx.expected)
    root = tmp_path / "data"
    prepare_one(spec, root, source=str(fx.source), image_size=16, workers=1,
                progress=lambda *a: None)
    m = load_prepared(root, "cub").manifest
    pkl = tmp_path / "cub200_splits.pkl"
    _reference_pickle(pkl, m)
    import_reference_splits(pkl, root, "cub")
    splits = oodml.load_splits(root, "cub")
    assert [lv["level"] for lv in splits["levels"]] == [1, 2]
    lv1 = splits["levels"][0]
    assert lv1["train"] == [0, 1] and lv1["test"] == [2, 3] and lv1["fid"] == 12.5
    ep = lv1["episodes"]["2"][0]
    support = m.set_index(C.IMAGE_ID).loc[ep["support"], C.LABEL].tolist()
    assert sorted(support) == [2, 3, 3] and ep["query_classes"] == [2, 3]
    assert splits["levels"][1]["train"] == [0, 2]


def test_import_rejects_unknown_classes_and_code(tmp_path, mini_root):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({1: {"train": ["nope"], "test": [], "fid": 1.0}}))
    with pytest.raises(DataError, match="class 'nope' is not a class of mini-cub"):
        import_reference_splits(bad, mini_root, "mini-cub")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({1: {"train": [], "test": [], "fid": dataclasses.field}}))
    with pytest.raises(DataError, match="refusing to load"):
        import_reference_splits(evil, mini_root, "mini-cub")
