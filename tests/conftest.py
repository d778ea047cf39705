"""Shared fixtures: a prepared mini suite (generated once per session) and fast run settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two threads, like CI; deterministic kernels on CPU.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Settings that keep a training run to a few seconds: three small datasets, few steps.
FAST = [
    "data.datasets=[mini-cub,mini-flowers,mini-aircraft]",
    "train.epochs=1",
    "train.batch_size=32",
    "train.max_steps_per_epoch=3",
    "train.eval_every=1",
    "eval.metrics=[recall@1,map@r]",
]


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory) -> Path:
    from umlbench.data.prepare import prepare
    from umlbench.data.registry import suite_datasets

    root = tmp_path_factory.mktemp("data")
    prepare(list(suite_datasets("mini")), root, seed=0)
    return root


@pytest.fixture()
def env_root(mini_root, monkeypatch, tmp_path):
    """Point umlbench at the session's mini data and a per-test results/work dir."""
    monkeypatch.setenv("UMLBENCH_DATA", str(mini_root))
    monkeypatch.setenv("UMLBENCH_WORK", str(tmp_path / "runs"))
    monkeypatch.setenv("UMLBENCH_RESULTS", str(tmp_path / "results"))
    return tmp_path
