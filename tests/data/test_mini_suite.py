"""The generated mini suite: determinism, structure, atomic preparation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from umlbench import const as C
from umlbench.data.prepare import load_prepared, prepare, prepare_one, sha256_file
from umlbench.data.registry import DATASETS, suite_datasets
from umlbench.data.synthetic.suite import MINI_LAYOUTS, PRETRAIN_LAYOUT, generate_domain
from umlbench.errors import UserError


def test_same_seed_gives_byte_identical_manifests(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        prepare(["mini-cub", "mini-inshop"], root, seed=5)
    for name in ("mini-cub", "mini-inshop"):
        for f in (C.MANIFEST_FILE, C.CACHE_FILE):
            assert sha256_file(a / name / f) == sha256_file(b / name / f)


def test_different_seed_differs(tmp_path):
    prepare(["mini-cub"], tmp_path / "a", seed=0)
    prepare(["mini-cub"], tmp_path / "b", seed=1)
    assert sha256_file(tmp_path / "a/mini-cub" / C.CACHE_FILE) != sha256_file(
        tmp_path / "b/mini-cub" / C.CACHE_FILE)


@pytest.mark.parametrize("name", list(MINI_LAYOUTS))
def test_train_and_test_classes_are_disjoint(mini_root, name):
    m = load_prepared(mini_root, name).manifest
    train = set(m.loc[m[C.SPLIT] == C.TRAIN, C.LABEL])
    test = set(m.loc[m[C.SPLIT] != C.TRAIN, C.LABEL])
    lay = MINI_LAYOUTS[name]
    assert not train & test
    assert len(train) == lay.train_classes and len(test) == lay.test_classes


def test_structure_mirrors_the_real_benchmark(mini_root):
    sizes = {n: len(load_prepared(mini_root, n).manifest) for n in suite_datasets("mini")}
    # SOP-like domain dominates the union; flowers/aircraft are small.
    assert sizes["mini-sop"] == max(sizes.values())
    assert sizes["mini-aircraft"] == min(sizes.values())
    sop = load_prepared(mini_root, "mini-sop").manifest
    per_class = sop.groupby(C.LABEL).size()
    assert per_class.min() >= 2 and per_class.max() <= 12
    shop = load_prepared(mini_root, "mini-inshop").manifest
    q = shop[shop[C.SPLIT] == C.QUERY]
    g = shop[shop[C.SPLIT] == C.GALLERY]
    assert len(q) and len(g) and set(q[C.LABEL]) == set(g[C.LABEL])


def test_domains_look_different(mini_root):
    # Mean colour statistics differ between domains far more than within one.
    means = {}
    for name in suite_datasets("mini"):
        p = load_prepared(mini_root, name)
        imgs = p.cache.get_many(p.manifest[C.OFFSET].to_numpy()[:200], 32, 32)
        means[name] = imgs.reshape(len(imgs), -1, 3).mean(1).mean(0)
    vals = np.stack(list(means.values()))
    assert np.linalg.norm(vals[:, None] - vals[None], axis=-1).max() > 60


def test_pretraining_domain_is_separate():
    rows, images = generate_domain(PRETRAIN_LAYOUT, seed=0, image_size=16)
    assert images.shape[1:] == (16, 16, 3)
    assert (rows[C.SPLIT] == C.TRAIN).all()
    assert "pretrain" not in " ".join(DATASETS.names())


def test_ready_marker_and_skip(tmp_path):
    spec = DATASETS.get("mini-aircraft")
    first = prepare_one(spec, tmp_path, seed=0)
    assert first.status == "prepared"
    ready = json.loads((tmp_path / "mini-aircraft" / C.READY_FILE).read_text())
    assert ready["sha256"][C.MANIFEST_FILE] == sha256_file(tmp_path / "mini-aircraft" /
                                                           C.MANIFEST_FILE)
    assert prepare_one(spec, tmp_path, seed=0).status == "skipped"
    assert prepare_one(spec, tmp_path, seed=0, force=True).status == "prepared"


def test_killed_preparation_leaves_nothing_ready(tmp_path, monkeypatch):
    spec = DATASETS.get("mini-flowers")
    import umlbench.data.prepare as prep

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "write_manifest", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_one(spec, tmp_path)
    assert not (tmp_path / "mini-flowers").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    monkeypatch.undo()
    assert prepare_one(spec, tmp_path).status == "prepared"


def test_unprepared_dataset_is_user_error(tmp_path):
    with pytest.raises(UserError, match="umlbench prepare-data --suite mini"):
        load_prepared(tmp_path, "mini-cub")


def test_image_size_is_configurable(tmp_path):
    prepare(["mini-aircraft"], tmp_path, image_size=48)
    p = load_prepared(tmp_path, "mini-aircraft")
    assert set(p.manifest[C.HEIGHT]) == {48}
    assert p.load_image(0).shape == (48, 48, 3)
