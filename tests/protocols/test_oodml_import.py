"""Importing the published ooDML split files: the real Cars file (reduced, see
``data/make_reduced_cars_pickle.py``) through the devkit mapping, and CUB/SOP files in the
structure of their generator and loaders."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.data.cars_devkit import make_cars_devkit
from tests.data.fixtures import make_cub, make_sop
from umlbench import const as C
from umlbench.data.prepare import load_prepared, prepare_one
from umlbench.data.registry import DATASETS
from umlbench.data.sources.cars import layout_names
from umlbench.errors import DataError, UserError
from umlbench.protocols import oodml
from umlbench.protocols.oodml_import import import_reference_splits
from umlbench.protocols.oodml_splits import OFFICIAL_SCHEDULES
from umlbench.runner import build_config

REDUCED = Path(__file__).with_name("data") / "cars196_splits_reduced.pkl"


def _prepare(spec_name: str, source: Path, expected, root: Path) -> None:
    spec = dataclasses.replace(DATASETS.get(spec_name), expected=expected)
    prepare_one(spec, root, source=str(source), image_size=16, workers=1,
                progress=lambda *a: None)


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    """The reduced real pickle and a prepared Cars fixture holding every image it names."""
    d = tmp_path_factory.mktemp("cars")
    data = pickle.loads(REDUCED.read_bytes())
    classes = sorted({str(c) for e in data.values() for c in list(e["train"]) + list(e["test"])})
    named: dict[str, set[str]] = {}
    for e in data.values():
        for ep in e["test_episodes"][2].values():
            for c, files in ep.items():
                named.setdefault(str(c), set()).update(files)
    fx = make_cars_devkit(d, classes, named)
    root = d / "data"
    _prepare("cars", fx.downloads, fx.expected, root)
    return fx, root, data, classes


def test_reduced_pickle_has_the_published_structure():
    data = pickle.loads(REDUCED.read_bytes())
    assert sorted(data) == list(range(1, 9))
    names = {str(c) for e in data.values() for c in list(e["train"]) + list(e["test"])}
    assert len(names) == 196 and "Ram C-V Cargo Van Minivan 2012" in names
    first = data[1]
    assert isinstance(first["fid"], np.float64) and isinstance(first["train"][0], np.str_)
    assert [len(data[k]["test"]) for k in range(1, 9)] == [98] * 5 + [86, 74, 62]
    ep = first["test_episodes"][2][0]
    files = [f for fs in ep.values() for f in fs]
    assert set(ep) == set(first["test"]) and all(len(fs) == 2 for fs in ep.values())
    assert all(f[:5].isdigit() and f.endswith(".jpg") for f in files)
    assert any(f.endswith("_2.jpg") for e in data.values()
               for fs in e["test_episodes"][2][0].values() for f in fs)


def test_real_cars_pickle_imports(cars):
    fx, root, data, classes = cars
    import_reference_splits(REDUCED, root, "cars", fx.devkit)
    splits = oodml.load_splits(root, "cars")
    label = {name: i for i, name in enumerate(classes)}  # the fixture's classes, A-Z
    levels = splits["levels"]
    assert [lv["key"] for lv in levels] == list(OFFICIAL_SCHEDULES["cars"].levels)
    assert [round(lv["fid"], 2) for lv in levels] == [8.59, 14.33, 32.18, 43.58, 63.29, 86.12,
                                                      101.17, 123.03]
    assert splits["default_level"] == 1
    for lv, split_id in zip(levels, range(1, 9)):
        entry = data[split_id]
        assert lv["train"] == sorted(label[str(c)] for c in entry["train"])
        assert lv["test"] == sorted(label[str(c)] for c in entry["test"])
        assert lv["split_val"] == sorted(label[str(c)] for c in entry["split_val"])
        for e, ep in enumerate(lv["episodes"]["2"]):
            published = entry["test_episodes"][2][e]
            assert ep["support"] == [fx.truth[(label[str(c)], f)]
                                     for c, files in published.items() for f in files]
            assert ep["query_classes"] == sorted(label[str(c)] for c in published)
    m = load_prepared(root, "cars").manifest
    assert "Ram C/V Cargo Van Minivan 2012" in set(m[C.CLASS_NAME])  # matched under '/' -> '-'


def test_oodml_runs_use_exactly_the_pickle_classes(cars):
    fx, root, data, _ = cars
    import_reference_splits(REDUCED, root, "cars", fx.devkit)
    m = load_prepared(root, "cars").manifest
    name_of = m.groupby(C.LABEL)[C.CLASS_NAME].first()
    for level in range(1, 9):
        cfg = build_config("off-the-shelf", "uml", overrides=[
            "protocol.name=oodml", "protocol.dataset=cars", f"protocol.level={level}"])
        got = oodml.build(cfg, root)
        train = {name_of[c] for c in m[C.LABEL].to_numpy()[got.train["row"]]}
        test = {name_of[c] for c in got.test["target"]}
        norm = lambda names: {str(n).replace("/", "-") for n in names}
        assert norm(train) == {str(c) for c in data[level]["train"]}
        assert norm(test) == {str(c) for c in data[level]["test"]}
        assert got.info["fid"] == pytest.approx(float(data[level]["fid"]))


def test_devkit_mapping_follows_boxes_and_the_suffix(cars):
    fx, root, *_ = cars
    prep = load_prepared(root, "cars")
    mapped, unmapped = layout_names(prep.raw_dir, fx.devkit, lambda ids: True)
    assert mapped == fx.truth and not unmapped
    assert any(name.endswith("_2.jpg") for _, name in mapped)
    # The identical pair maps only when its two pictures are the same.
    mapped, unmapped = layout_names(prep.raw_dir, fx.devkit, lambda ids: False)
    assert {(0, "09990.jpg"), (0, "09991.jpg")} == set(unmapped)
    assert "share class 1, test, box (3, 4, 50, 40)" in unmapped[(0, "09990.jpg")]


def test_cars_import_errors_name_the_problem(cars, tmp_path):
    fx, root, data, _ = cars
    with pytest.raises(UserError, match="pass --source DIR with the devkit"):
        import_reference_splits(REDUCED, root, "cars")
    bad = {k: dict(v) for k, v in data.items()}
    bad[1]["train"] = list(bad[1]["train"][1:]) + ["Ram CV Cargo Van 2012", "Tesla Model T 1908"]
    path = tmp_path / "names.pkl"
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=r"2 class name\(s\) match no class of cars .*"
                                        r"'Ram CV Cargo Van 2012', 'Tesla Model T 1908'"):
        import_reference_splits(path, root, "cars", fx.devkit)
    bad = {k: dict(v) for k, v in data.items()}
    cls = next(iter(bad[3]["test_episodes"][2][0]))
    bad[3]["test_episodes"] = {2: {0: {cls: ["08888.jpg", "08889_2.jpg"]}}}
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=f"image '08888.jpg' of class '{cls}' cannot be mapped"):
        import_reference_splits(path, root, "cars", fx.devkit)


def test_leaderboard_shows_the_published_fids(cars, tmp_path):
    from umlbench.results.formats import render
    from umlbench.results.leaderboard import build_board
    from umlbench.results.store import load_store
    from umlbench.runner import run

    fx, root, *_ = cars
    import_reference_splits(REDUCED, root, "cars", fx.devkit)
    for level in (1, 8):
        cfg = build_config("off-the-shelf", "uml", overrides=[
            "protocol.name=oodml", "protocol.dataset=cars", f"protocol.level={level}",
            "backbone.name=vit_mini_patch4_32", "data.input_size=32", "data.resize_ratio=1.0",
            "eval.metrics=[recall@1]", f"data_root={root}", "device=cpu",
            "data.num_workers=0", "data.pin_memory=false"])
        run(cfg, results_dir=tmp_path / "results", work_dir=tmp_path / "work")
    board = build_board(load_store(tmp_path / "results", include_reference=False), "recall@1",
                        protocol="oodml", suite="uml")
    text = render(board, "markdown")
    assert "| FID (cars) | – | 8.59 | 123.03 |" in text


def test_cub_import_in_the_generator_structure(tmp_path):
    fx = make_cub(tmp_path / "fx")
    root = tmp_path / "data"
    _prepare("cub", fx.source, fx.expected, root)
    m = load_prepared(root, "cub").manifest
    names = m.groupby(C.LABEL)[C.CLASS_NAME].first()
    files = m.assign(f=m[C.PATH].map(lambda p: p.rsplit("/", 1)[-1])).groupby(C.LABEL)["f"]
    files = files.apply(list)
    n = [np.str_(names[i]) for i in range(4)]  # "001.Black_footed_Albatross", ...
    data = {
        1: {"train": [n[0], n[1]], "test": [n[2], n[3]], "fid": np.float64(19.16),
            "split_train": [n[0]], "split_val": [n[1]],
            "test_episodes": {2: {0: {n[2]: files[2][:1], n[3]: files[3][:2]}}}},
        2: {"train": [n[0], n[2]], "test": [n[1], n[3]], "fid": np.float64(28.49),
            "split_train": [n[0]], "split_val": [n[2]], "test_episodes": {}},
    }
    path = tmp_path / "cub200_splits.pkl"
    path.write_bytes(pickle.dumps(data))
    import_reference_splits(path, root, "cub")
    levels = oodml.load_splits(root, "cub")["levels"]
    assert [lv["level"] for lv in levels] == [1, 2] and levels[0]["key"] == "ref-1"
    lv1 = levels[0]
    assert lv1["train"] == [0, 1] and lv1["test"] == [2, 3] and lv1["fid"] == 19.16
    ep = lv1["episodes"]["2"][0]
    support = m.set_index(C.IMAGE_ID).loc[ep["support"], C.LABEL].tolist()
    assert sorted(support) == [2, 3, 3] and ep["query_classes"] == [2, 3]
    assert levels[1]["train"] == [0, 2] and levels[1]["split_val"] == [2]


def test_prepare_splits_cli_imports_and_warns_when_fids_do_not_rise(tmp_path):
    from click.testing import CliRunner

    from umlbench.cli import cli

    fx = make_cub(tmp_path / "fx")
    root = tmp_path / "data"
    _prepare("cub", fx.source, fx.expected, root)
    names = load_prepared(root, "cub").manifest.groupby(C.LABEL)[C.CLASS_NAME].first()
    n = [np.str_(names[i]) for i in range(4)]
    data = {1: {"train": n[:2], "test": n[2:], "fid": np.float64(30.0)},
            2: {"train": [n[0], n[2]], "test": [n[1], n[3]], "fid": np.float64(20.0)}}
    path = tmp_path / "cub200_splits.pkl"
    path.write_bytes(pickle.dumps(data))
    res = CliRunner().invoke(cli, ["prepare-splits", "--dataset", "cub", "--import", str(path),
                                   "--data-root", str(root)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "L1 30.00, L2 20.00" in res.output
    assert "warning: cub: the levels' FIDs do not rise strictly" in res.output
    res = CliRunner().invoke(cli, ["prepare-splits", "--dataset", "cub", "--source", "x",
                                   "--data-root", str(root)])
    assert res.exit_code == 2 and "error: --source is only read with --import" in res.output


def test_sop_import_reads_product_ids_and_class_ids(tmp_path):
    fx = make_sop(tmp_path / "fx")
    root = tmp_path / "data"
    _prepare("sop", fx.source, fx.expected, root)
    # train/test: product ids (file-name prefixes); split_*/episodes: Ebay class ids (ints),
    # as stanford_online_products.OODatasets reads them.
    data = {1: {"train": [np.str_("111085122871"), np.str_("131128932810"),
                          np.str_("111265328556")],
                "test": [np.str_("121077712331"), np.str_("141002233190"),
                         np.str_("151227634218")],
                "fid": np.float64(3.43), "split_train": [np.int64(1), np.int64(4)],
                "split_val": [np.int64(2)],
                "test_episodes": {2: {0: [np.int64(5)], 1: [np.int64(3), np.int64(6)]}}}}
    path = tmp_path / "online_products_splits.pkl"
    path.write_bytes(pickle.dumps(data))
    import_reference_splits(path, root, "sop")
    [lv] = oodml.load_splits(root, "sop")["levels"]
    assert lv["train"] == [0, 1, 3] and lv["test"] == [2, 4, 5]
    assert lv["split_train"] == [0, 3] and lv["split_val"] == [1]
    eps = lv["episodes"]["2"]
    assert eps[0] == {"support_classes": [4], "query_classes": [2, 5]}
    assert eps[1] == {"support_classes": [2, 5], "query_classes": [4]}


def test_import_refuses_code_and_unknown_classes(tmp_path, mini_root):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({1: {"train": ["nope"], "test": [], "fid": 1.0}}))
    with pytest.raises(DataError, match=r"1 class name\(s\) match no class of mini-cub.*'nope'"):
        import_reference_splits(bad, mini_root, "mini-cub")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({1: {"train": [], "test": [], "fid": dataclasses.field}}))
    with pytest.raises(DataError, match="refusing to load"):
        import_reference_splits(evil, mini_root, "mini-cub")
