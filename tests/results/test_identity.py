"""Record identity: which config keys count, data identity from READY markers, code identity
from the git checkout."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from umlbench.env import code_identity
from umlbench.results.identity import (RESULT_NEUTRAL, config_identity, data_differences,
                                       data_key, data_label, dataset_identity, rows_sha256,
                                       sha256_text)

CONFIG = {"method": "puma", "seed": 0, "device": "auto", "data_root": "/data/a",
          "backbone": {"name": "vit", "weights": None},
          "data": {"num_workers": 0, "pin_memory": False, "input_size": None},
          "train": {"lr": 1e-4, "epochs": 4, "log_every": 20}}


def _with(**changes) -> dict:
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in CONFIG.items()}
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


@pytest.mark.parametrize("key", RESULT_NEUTRAL)
def test_result_neutral_keys_leave_the_config_hash_alone(key):
    changes = {"seed": 3, "device": "cuda:1", "data_root": "/elsewhere",
               "data.num_workers": 8, "data.pin_memory": True, "train.log_every": 1}
    cfg = _with(**{key.replace(".", "__"): changes[key]})
    assert config_identity(cfg)["sha256"] == config_identity(CONFIG)["sha256"]


@pytest.mark.parametrize("change", [{"train__lr": 2e-4}, {"train__epochs": 5},
                                    {"data__input_size": 32}, {"method": "lora"},
                                    {"train__amp": "bf16"}])  # a key added later counts too
def test_every_other_key_changes_the_config_hash(change):
    assert config_identity(_with(**change))["sha256"] != config_identity(CONFIG)["sha256"]


def test_config_hash_is_canonical_json_without_neutral_keys():
    # Worked out by hand: sorted keys, no spaces, neutral keys dropped.
    text = ('{"backbone":{"name":"vit","weights":null},"data":{"input_size":null},'
            '"method":"puma","train":{"epochs":4,"lr":0.0001}}')
    assert config_identity(CONFIG)["sha256"] == sha256_text(text)
    assert config_identity(CONFIG)["excluded"] == list(RESULT_NEUTRAL)


def test_weights_file_is_identified_by_its_contents(tmp_path):
    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    c.write_bytes(b"other weights")
    ids = [config_identity(_with(backbone__weights=str(f))) for f in (a, b, c)]
    assert ids[0]["sha256"] == ids[1]["sha256"] != ids[2]["sha256"]
    assert ids[0]["files"] == {"backbone.weights": sha256_text("weights")}


READY_CACHE = {"format": 1, "cache": True, "image_size": 256, "raw_dir": "/x",
               "sha256": {"manifest.parquet": "a" * 64, "images.u8": "b" * 64}}


def test_dataset_identity_from_todays_ready_files():
    ident = dataset_identity(READY_CACHE, "r" * 64)
    assert ident == {"manifest_sha256": "a" * 64, "rows_sha256": "r" * 64,
                     "images": {"kind": "resized", "image_size": 256,
                                "sha256": {"images.u8": "b" * 64}},
                     "split_sha256": None}
    files = dataset_identity({**READY_CACHE, "cache": False,
                              "sha256": {"manifest.parquet": "a" * 64}}, "r" * 64)
    assert files["images"] == {"kind": "files", "image_size": None, "sha256": {}}
    mini = dataset_identity({**READY_CACHE, "source": "generated", "image_size": 32}, None)
    assert mini["images"]["kind"] == "generated" and mini["images"]["image_size"] == 32
    assert data_label({"cub": ident}) == "resized 256" and data_label({"cub": files}) == "files"
    assert data_label(None) == "data unknown"


def test_dataset_identity_takes_the_image_source_the_dataset_names(tmp_path):
    ready = {**READY_CACHE, "image_source": "packed",
             "sha256": {"manifest.parquet": "a" * 64, "images.pack": "c" * 64}}
    split = tmp_path / "splits.json"
    split.write_text("{}")
    ident = dataset_identity(ready, "r" * 64, split)
    # A full-resolution source has no image size, whatever READY's image_size says.
    assert ident["images"] == {"kind": "packed", "image_size": None,
                               "sha256": {"images.pack": "c" * 64}}
    assert ident["split_sha256"] == sha256_text("{}")
    # The Prepared object's own account (kind, size) wins over READY.
    told = dataset_identity(READY_CACHE, None, kind="resized", image_size=224)
    assert told["images"]["kind"] == "resized" and told["images"]["image_size"] == 224


def test_data_key_ignores_the_parquet_file_hash_but_not_the_rows():
    base = {"cub": dataset_identity(READY_CACHE, "r" * 64)}
    other_file = {"cub": {**base["cub"], "manifest_sha256": "f" * 64}}
    other_rows = {"cub": {**base["cub"], "rows_sha256": "0" * 64}}
    assert data_key(base) == data_key(other_file) != data_key(other_rows)
    assert data_key(None) == "unknown"
    assert data_differences(base, other_rows) == [("cub", "rows_sha256", "r" * 64, "0" * 64)]
    assert data_differences(base, {}) == [("cub", "dataset", "used", "not used")]
    other_cache = {"cub": dataset_identity({**READY_CACHE, "image_size": 224}, "r" * 64)}
    assert data_differences(base, other_cache) == [("cub", "images.image_size", 256, 224)]


def test_rows_hash_depends_on_content_not_column_order():
    df = pd.DataFrame({"label": [1, 2], "path": ["a.jpg", "b.jpg"]})
    assert rows_sha256(df) == rows_sha256(df[["path", "label"]])
    assert rows_sha256(df) == sha256_text("label,path\n1,a.jpg\n2,b.jpg\n")
    assert rows_sha256(df.assign(label=[1, 3])) != rows_sha256(df)


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t",
                    *args], check=True, capture_output=True)


def test_code_identity_of_a_checkout(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "init")
    clean = code_identity(pkg)
    assert len(clean["git_commit"]) == 40 and clean["dirty"] is False
    assert clean["diff_sha256"] is None and clean["umlbench_version"]
    # Untracked files outside the code folders (results, notes, tests) keep it clean.
    (tmp_path / "notes.txt").write_text("n")
    (tmp_path / "tests" / "test_new.py").write_text("")
    assert code_identity(pkg) == clean
    (pkg / "__init__.py").write_text("x = 2\n")
    edited = code_identity(pkg)
    assert edited["dirty"] is True and len(edited["diff_sha256"]) == 64
    assert code_identity(pkg) == edited  # the same dirty tree gives the same hash
    (pkg / "plugin.py").write_text("y = 1\n")  # untracked code runs too
    with_plugin = code_identity(pkg)
    assert with_plugin["dirty"] is True
    assert with_plugin["diff_sha256"] != edited["diff_sha256"]


def test_code_identity_outside_a_checkout(tmp_path):
    (tmp_path / "pkg").mkdir()
    ident = code_identity(tmp_path / "pkg")
    assert ident["git_commit"] is None and ident["dirty"] is None
