"""PUMA's few-shot training: the official config, K-shot subsets (seeded or the official
pickles), the official quirks as switches, and the import of the published subset files."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.data.fixtures import AUTHORS_DATA, FIXTURES, OFFICIAL_FOLDERS, write_official_subset
from umlbench import const as C
from umlbench.data.manifest import make_manifest, write_manifest
from umlbench.data.prepare import load_prepared, prepare_one
from umlbench.data.registry import DATASETS
from umlbench.errors import DataError, UserError
from umlbench.protocols import fewshot_train
from umlbench.protocols.fewshot_subsets import (
    TAILS,
    import_subsets,
    load_subset,
    read_official_pickle,
    subset_path,
)
from umlbench.runner import build_config

OFFICIAL_DIR = Path(__file__).parents[1] / "data" / "official_fewshot"
# The official few-shot command: epochs = 32/K + 1 (bash integer division) for K = 1..16.
EPOCHS = {1: 33, 2: 17, 4: 9, 8: 5, 16: 3}


def _cfg(suite: str, shots: int, *sets: str):
    return build_config("puma", suite, overrides=["protocol.name=fewshot-train",
                                                  f"protocol.shots={shots}", *sets])


# ---- the config ---------------------------------------------------------------------------


@pytest.mark.parametrize("shots", sorted(EPOCHS))
def test_uml_config_is_the_official_fewshot_command(shots):
    cfg = _cfg("uml", shots)
    a = cfg.method_args
    assert (a["embedding_dim"], a["pool_size"], a["prompt_length"], a["prompt_lambda"]) == \
        (384, 20, 2, 1.0)
    assert (a["adapter_dim"], a["adapter_drop"]) == (128, 0.5)
    # The pool the command describes (P[0_N20L2]); the pool-free run is the switch below.
    assert a["use_prompts"] is True and a["positions"] == "official"
    # PA as train.py builds it (alpha 32, not the command's 64), with none of CurricularFace's
    # arguments left over from the full-data config, and the official proxy initialiser.
    assert cfg.loss.name == "proxy_anchor" and cfg.loss.args == {
        "alpha": 32, "margin": 0.1, "init": "official"}
    t = cfg.train
    # 180 per GPU on 4 GPUs; cosine indexed by the global step (utils.cosine_scheduler).
    assert (t.scheduler, t.min_lr_scale, t.lr, t.batch_size, t.weight_decay) == \
        ("cosine", 0.1, 1e-4, 720, 1e-4)
    assert t.schedule_granularity == "iteration"
    assert (t.sampler, t.ipc, t.warmup_epochs) == ("uniform", 0, 0)
    # One evaluation, after the last of 32/K + 1 epochs, and that model is the result.
    assert (t.epochs, t.eval_every, t.select) == (EPOCHS[shots], 0, "last")
    assert fewshot_train.official_schedule(shots) == (EPOCHS[shots], EPOCHS[shots] - 1)
    assert cfg.protocol.exclude_train == ("aircraft",) and cfg.protocol.subsets == "auto"


def test_quirks_are_switches():
    cfg = _cfg("uml", 4, "method.use_prompts=false", "loss.args.alpha=64",
               "protocol.exclude_train=[]", "loss.args.init=library", "train.batch_size=180",
               "train.schedule_granularity=epoch")
    # Without the pool, the official shifted patch positions come along (positions=official).
    assert cfg.method_args["use_prompts"] is False and cfg.method_args["prompt_length"] == 2
    assert cfg.method_args["positions"] == "official"
    assert cfg.loss.args == {"alpha": 64, "margin": 0.1, "init": "library"}
    assert cfg.protocol.exclude_train == ()
    assert (cfg.train.batch_size, cfg.train.schedule_granularity) == (180, "epoch")
    # Back to the full-data loss: its own defaults, not PA's arguments.
    assert _cfg("uml", 4, "loss.name=curricularface").loss.args == {}


def test_fewshot_train_options_are_not_silently_ignored_elsewhere():
    with pytest.raises(UserError, match="protocol.exclude_train applies to --protocol "
                                        "fewshot-train, not 'uml'"):
        build_config("puma", "mini", overrides=["protocol.exclude_train=[mini-cub]"])
    with pytest.raises(UserError, match="protocol.subsets must be auto, official or seeded"):
        _cfg("mini", 2, "protocol.subsets=published")


def test_mini_keeps_its_budget_and_runs_the_same_recipe():
    cfg = _cfg("mini", 2)
    assert cfg.loss.name == "proxy_anchor" and cfg.method_args["prompt_length"] == 2
    assert cfg.method_args["embedding_dim"] == 128  # the mini ViT's width
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (1e-3, 128, 17)
    assert cfg.protocol.exclude_train == ("mini-aircraft",)
    with pytest.raises(UserError, match="needs --shots"):
        build_config("puma", "mini", overrides=["protocol.name=fewshot-train"])


# ---- seeded subsets on mini ------------------------------------------------------------------


def test_seeded_subsets_keep_k_images_per_class_and_skip_excluded(env_root, mini_root):
    cfg = _cfg("mini", 4)
    data = fewshot_train.build(cfg, mini_root)
    counts = data.train.groupby("target").size()
    assert (counts == 4).all() and len(counts) == data.num_classes
    assert data.train["target"].max() == data.num_classes - 1  # contiguous class ids
    assert "mini-aircraft" not in set(data.train["dataset"])
    assert "mini-aircraft" in set(data.test["dataset"])  # still evaluated
    full = build_config("puma", "mini", overrides=["protocol.name=uml"])
    from umlbench.protocols import uml

    whole = uml.build(full, mini_root)
    kept = whole.train[whole.train["dataset"] != "mini-aircraft"]
    assert data.num_classes == kept["target"].nunique()
    assert data.info["subsets"]["mini-aircraft"] == "excluded"
    assert {v for k, v in data.info["subsets"].items() if k != "mini-aircraft"} == {"seeded"}
    again = fewshot_train.build(cfg, mini_root)
    assert again.train["row"].tolist() == data.train["row"].tolist()  # fixed by the seed
    every = fewshot_train.build(_cfg("mini", 4, "protocol.exclude_train=[]"), mini_root)
    assert every.num_classes == whole.num_classes
    with pytest.raises(UserError, match="exclude_train names.*aircraft"):
        fewshot_train.build(_cfg("mini", 4, "protocol.exclude_train=[aircraft]"), mini_root)
    with pytest.raises(UserError, match="no official 4-shot subset of mini-cub"):
        fewshot_train.build(_cfg("mini", 4, "protocol.subsets=official"), mini_root)


# ---- the official subsets: import and use ------------------------------------------------


@pytest.fixture(scope="module")
def uml_root(tmp_path_factory):
    """The eight datasets prepared from their official-layout fixtures, and official-format
    2-shot subset files for them (absolute paths on the authors' machine)."""
    d = tmp_path_factory.mktemp("fewshot")
    root, folder, picked = d / "data", d / "few_shot", {}
    for name, make in FIXTURES.items():
        fx = make(d / "fx" / name)
        spec = dataclasses.replace(DATASETS.get(name), expected=fx.expected)
        prepare_one(spec, root, source=str(fx.source), image_source="files", workers=1,
                    progress=lambda *a: None)
        picked[name] = write_official_subset(folder, fx, 2, seed=len(picked))
    return root, folder, picked


def test_import_then_fewshot_train_trains_on_exactly_those_images(uml_root, monkeypatch):
    from click.testing import CliRunner

    from umlbench.cli import cli

    root, folder, picked = uml_root
    res = CliRunner().invoke(cli, ["prepare-splits", "--protocol", "fewshot-train", "--import",
                                   str(folder), "--data-root", str(root)])
    assert res.exit_code == 0, res.output
    assert "cub 2-shot: 4 images" in " ".join(res.output.split())
    cfg = _cfg("uml", 2, "protocol.subsets=official")
    data = fewshot_train.build(cfg, root)
    assert data.info["subsets"] == {**{n: "official" for n in picked}, "aircraft": "excluded"}
    assert data.split_files == {n: subset_path(root, n, 2) for n in picked if n != "aircraft"}
    for s, prep in enumerate(data.sources):
        rows = data.train.loc[data.train["source"] == s, "row"]
        ids = sorted(prep.manifest[C.IMAGE_ID].to_numpy()[rows.to_numpy()])
        want = [] if prep.name == "aircraft" else sorted(picked[prep.name])
        assert ids == want, prep.name  # the same images, repeats included
    # auto (the default) uses them too; seeded ignores them.
    assert fewshot_train.build(_cfg("uml", 2), root).train["row"].tolist() == \
        data.train["row"].tolist()
    assert set(fewshot_train.build(_cfg("uml", 2, "protocol.subsets=seeded"), root)
               .info["subsets"].values()) == {"seeded", "excluded"}
    # Shots without an imported file fall back to seeded subsets under auto.
    assert set(fewshot_train.build(_cfg("uml", 1), root).info["subsets"].values()) == \
        {"seeded", "excluded"}
    written = json.loads(subset_path(root, "cub", 2).read_text())
    assert written["origin"] == "official" and written["images"] == 4


def _rewrite(src: Path, dst: Path, edit) -> Path:
    data = pickle.loads(src.read_bytes())
    edit(data)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / src.name).write_bytes(pickle.dumps(data, protocol=4))
    return dst


def test_a_path_matching_nothing_is_named_with_its_dataset(uml_root, tmp_path):
    root, folder, _ = uml_root
    src = folder / "dataset_Flowers_shot_2.pkl"
    bad = f"{AUTHORS_DATA}/flowers/jpg/image_09999.jpg"
    out = _rewrite(src, tmp_path / "a", lambda d: d["im_paths"].__setitem__(1, bad))
    with pytest.raises(DataError, match=f"{bad} matches no image of the prepared flowers"):
        import_subsets(out, root)
    out = _rewrite(src, tmp_path / "b", lambda d: d["ys"].__setitem__(0, 1 - d["ys"][0]))
    with pytest.raises(DataError, match="has class .* in the subset but .* in the prepared"):
        import_subsets(out, root)
    out = _rewrite(src, tmp_path / "c", lambda d: d["ds_ID"].__setitem__(0, 0))
    with pytest.raises(DataError, match="ds_ID \\[0\\] is not flowers's official id 6"):
        import_subsets(out, root)
    with pytest.raises(UserError, match="no dataset_<DS>_shot_<K>.pkl"):
        import_subsets(tmp_path, root)


def test_unpickling_is_restricted_but_reads_numpy(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    (tmp_path / "dataset_CUB_shot_1.pkl").write_bytes(pickle.dumps(
        {"ys": [Evil()], "I": [0], "im_paths": ["x"], "ds_ID": [0]}))
    with pytest.raises(DataError, match="refusing to load builtins.eval"):
        read_official_pickle(tmp_path / "dataset_CUB_shot_1.pkl")
    arrays = {"ys": np.array([3, 4], np.int64), "I": [np.int64(7), np.int32(9)],
              "im_paths": np.array(["a/b.jpg", "c/d.jpg"]), "ds_ID": np.zeros(2, np.int64)}
    (tmp_path / "np.pkl").write_bytes(pickle.dumps(arrays))
    got = read_official_pickle(tmp_path / "np.pkl")
    assert got == {"ys": [3, 4], "I": [7, 9], "im_paths": ["a/b.jpg", "c/d.jpg"],
                   "ds_ID": [0, 0]}
    assert all(type(v) is int for v in got["ys"] + got["I"])
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="junk.pkl: not an official few-shot subset"):
        read_official_pickle(tmp_path / "junk.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="expected a dict with keys"):
        read_official_pickle(tmp_path / "list.pkl")


# ---- the real published files ----------------------------------------------------------------

# Facts about the published 1-shot files (tests/data/official_fewshot, read with a throwaway
# script): one image per training class of the official class-half split, all under
# /home/tjddus9597/Data/DML/<dataset folder>/, labels 0..C-1.
REAL = {"CUB": ("cub", 100), "Cars": ("cars", 98), "Dogs": ("dogs", 60),
        "Flowers": ("flowers", 51), "Aircraft": ("aircraft", 50), "NABird": ("nabirds", 278)}


@pytest.mark.parametrize("ds", sorted(REAL))
def test_real_official_files_read_and_follow_the_label_rules(ds):
    name, classes = REAL[ds]
    d = read_official_pickle(OFFICIAL_DIR / f"dataset_{ds}_shot_1.pkl")
    assert sorted(d["ys"]) == list(range(classes)) and len(d["im_paths"]) == classes
    prefix = f"{AUTHORS_DATA}/{OFFICIAL_FOLDERS[name]}/"
    assert all(p.startswith(prefix) for p in d["im_paths"])
    tails = [p[len(prefix):] for p in d["im_paths"]]
    assert {len(t.split("/")) for t in tails} == {TAILS[name]}
    # The label rules umlbench's parsers use, checked on the official labels:
    if name == "cub":  # class id - 1, the folder's number
        assert all(int(t.split("/")[1][:3]) - 1 == y for t, y in zip(tails, d["ys"]))
    if name in ("dogs", "nabirds", "cars"):  # labels follow sorted folder / image order
        key = [t.split("/")[1] for t in tails] if name != "cars" else tails
        assert [y for _, y in sorted(zip(key, d["ys"]))] == list(range(classes))


def _manifest_only(root: Path, name: str, paths: list[str], labels: list[int]) -> None:
    """A prepared dataset of which only the manifest exists (training rows only)."""
    df = pd.DataFrame({C.IMAGE_ID: [f"{i}" for i in range(len(paths))], C.PATH: paths,
                       C.LABEL: labels, C.CLASS_NAME: "x", C.DATASET: name, C.SPLIT: C.TRAIN})
    (root / name).mkdir(parents=True)
    write_manifest(make_manifest(df), root / name / C.MANIFEST_FILE)
    (root / name / C.READY_FILE).write_text(json.dumps(
        {"format": 1, "dataset": name, "image_source": "files", "raw_dir": str(root)}))


def test_real_cub_16_shot_file_imports_with_its_checkpoint_copies(tmp_path):
    """The published CUB 16-shot subset against a CUB manifest built from its own paths, in
    the layout `prepare-data` gives (``CUB_200_2011/images/<class>/<file>``)."""
    d = read_official_pickle(OFFICIAL_DIR / "dataset_CUB_shot_16.pkl")
    copies = [p for p in d["im_paths"] if "/.ipynb_checkpoints/" in p]
    assert len(copies) == 3  # Jupyter copies the official ImageFolder listed as images
    originals = sorted({p.replace(".ipynb_checkpoints/", "").replace("-checkpoint.jpg", ".jpg")
                        for p in d["im_paths"]})
    rel = [p.split(f"{AUTHORS_DATA}/")[1] for p in originals]
    _manifest_only(tmp_path, "cub", rel, [int(r.split("/")[2][:3]) - 1 for r in rel])
    (folder := tmp_path / "few").mkdir()
    (folder / "dataset_CUB_shot_16.pkl").write_bytes(
        (OFFICIAL_DIR / "dataset_CUB_shot_16.pkl").read_bytes())
    [res] = import_subsets(folder, tmp_path, ["cub"])
    assert (res["images"], res["distinct"], res["checkpoint_copies"]) == (1600, 1599, 3)
    rows = load_subset(tmp_path, load_prepared(tmp_path, "cub"), 16)
    assert len(rows) == 1600 and len(np.unique(rows)) == 1599
    # Brown_Creeper_0056_24452 is in the subset twice: itself and its checkpoint copy.
    m = load_prepared(tmp_path, "cub").manifest
    twice = m[C.PATH].to_numpy()[np.bincount(rows) == 2]
    assert [Path(p).name for p in twice] == ["Brown_Creeper_0056_24452.jpg"]


def test_fixture_subset_file_has_the_official_structure(uml_root):
    _, folder, _ = uml_root
    raw = pickle.load(io.BytesIO((folder / "dataset_Inshop_shot_2.pkl").read_bytes()))
    real = pickle.load(io.BytesIO((OFFICIAL_DIR / "dataset_Flowers_shot_1.pkl").read_bytes()))
    assert type(raw) is dict and list(raw) == list(real) == ["ys", "I", "im_paths", "ds_ID"]
    assert raw["im_paths"][0].startswith(f"{AUTHORS_DATA}/Inshop_Clothes/Img/img/")


# SOP's training half (Ebay_train.txt): 59,551 images in 11,318 classes of 2-12 images.
SOP_TRAIN_IMAGES, SOP_TRAIN_CLASSES = 59_551, 11_318


def sop_shaped_subset(folder: Path, shots: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """A synthetic SOP training half and its K-shot subset file in the official format.

    The 8- and 16-shot SOP files of the official repository are 4 MiB or more (the 1/2/4-shot
    ones are 1.0/2.1/3.6 MB for 11,318 x K entries) and are not stored where the tests can
    read them; this one has their shape: 11,318 x K entries of absolute
    ``<AUTHORS_DATA>/Stanford_Online_Products/<category>_final/<product>_<n>.JPG`` paths,
    K per class drawn without replacement when the class has K images and with replacement
    otherwise, pickled with the highest protocol. Returns the manifest's (paths, labels).
    """
    rng = np.random.default_rng(seed)
    sizes = np.full(SOP_TRAIN_CLASSES, 2)
    extra = rng.multinomial(SOP_TRAIN_IMAGES - sizes.sum(), np.full(SOP_TRAIN_CLASSES,
                                                                    1 / SOP_TRAIN_CLASSES))
    sizes += np.minimum(extra, 10)
    sizes[: SOP_TRAIN_IMAGES - sizes.sum()] += 1  # top up to exactly 59,551
    cats = ["bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug",
            "sofa", "stapler", "table", "toaster"]
    paths, labels, ys, index, im_paths = [], [], [], [], []
    for c, n in enumerate(sizes):
        rel = [f"{cats[c % 12]}_final/{111085122871 + c}_{j}.JPG" for j in range(n)]
        start = len(paths)
        paths += rel
        labels += [c] * n
        pick = rng.choice(n, shots, replace=n < shots)
        ys += [c] * shots
        index += [start + int(j) for j in pick]
        im_paths += [f"{AUTHORS_DATA}/Stanford_Online_Products/{rel[j]}" for j in pick]
    assert len(paths) == SOP_TRAIN_IMAGES
    data = {"ys": ys, "I": index, "im_paths": im_paths, "ds_ID": [2] * len(ys)}
    (folder / f"dataset_SOP_shot_{shots}.pkl").write_bytes(
        pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return paths, labels


@pytest.mark.parametrize("shots", [8, 16])
def test_sop_8_and_16_shot_files_of_the_official_size_import(tmp_path, shots):
    folder = tmp_path / "few"
    folder.mkdir()
    paths, labels = sop_shaped_subset(folder, shots)
    size = (folder / f"dataset_SOP_shot_{shots}.pkl").stat().st_size
    assert size > 4 * 2**20  # as the official files: 4 MiB or more
    _manifest_only(tmp_path, "sop", paths, labels)
    [res] = import_subsets(folder, tmp_path, ["sop"])
    assert res["images"] == SOP_TRAIN_CLASSES * shots
    rows = load_subset(tmp_path, load_prepared(tmp_path, "sop"), shots)
    counts = np.bincount(np.asarray(labels)[rows], minlength=SOP_TRAIN_CLASSES)
    assert len(rows) == SOP_TRAIN_CLASSES * shots and (counts == shots).all()
    # The rows are the file's images, in its order.
    d = read_official_pickle(folder / f"dataset_SOP_shot_{shots}.pkl")
    assert [f"{AUTHORS_DATA}/Stanford_Online_Products/{paths[r]}" for r in rows] == \
        d["im_paths"]
