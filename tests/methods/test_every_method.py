"""Every registered method trains a few steps on mini and writes a valid record (registry-driven,
so a new plugin is tested without new test code)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAST
from umlbench.methods import METHODS
from umlbench.results.record import read_record
from umlbench.runner import build_config, run

CASES = [(m, []) for m in METHODS.names()] + [
    ("finetune", ["method.setting=specific", "loss.name=arcface"]),
    ("finetune", ["loss.name=triplet"]),
    ("finetune", ["loss.name=hyp_supcon"]),
    ("vpt", ["method.deep=false"]),
    ("puma", ["method.use_prompts=false"]),
    ("puma", ["method.use_adapters=false"]),
    ("puma", ["method.adapter_drop=0"]),
]


@pytest.mark.parametrize("method, extra", CASES, ids=lambda v: v if isinstance(v, str) else
                         ",".join(v) or "default")
def test_method_trains_and_records(method, extra, env_root):
    cfg = build_config(method, "mini", overrides=FAST + ["train.batch_size=16",
                                                         "train.max_steps_per_epoch=2"] + extra)
    [(rec, path)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    back = read_record(path)
    assert back.status == "completed"
    assert back.params["trainable"] >= 0 and back.params["total"] > 0
    uni = back.metrics["universal"]
    assert 0.0 < uni["recall@1"] <= 1.0 and "map@r" in uni
    assert set(back.metrics["per_dataset"]) == {"mini-cub", "mini-flowers", "mini-aircraft"}
    if METHODS.get(method).trains:
        assert back.params["trainable"] > 0
        assert back.history and all("loss" in h for h in back.history)
    json.dumps(back.to_dict())


def test_specific_finetune_counts_every_model_and_ensembles(env_root):
    cfg = build_config("finetune", "mini", overrides=FAST + ["method.setting=specific",
                                                             "train.max_steps_per_epoch=1",
                                                             "train.batch_size=16"])
    [(rec, _)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    one = build_config("finetune", "mini", overrides=FAST + ["train.max_steps_per_epoch=1",
                                                             "train.batch_size=16"])
    [(uni, _)] = run(one, results_dir=env_root / "r", work_dir=env_root / "w")
    assert rec.params["trainable"] == 3 * uni.params["trainable"]  # three datasets in FAST
    assert rec.display_name == "Fine-tuning, specific (Proxy-Anchor)"
    assert {h["dataset"] for h in rec.history} == {"mini-cub", "mini-flowers", "mini-aircraft"}
