"""Issue 21, item 1: the official batch is 180 per process on 4 processes, 720 per step.

Facts from the official code (tjddus9597/PUMA-WACV25): every README command passes
``--batch_size_per_gpu 180`` with ``--nproc_per_node=4``; ``UniqueClassSampler`` draws
``batch_size * world_size // IPC`` classes and gives each rank its slice, IPC images per class
(sampler.py:61-74); the Hyp (SupCon) loss reshapes each process's batch with
``z.view(len(x) // IPC, IPC, emb)`` before the all-gather (train.py:216-217).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from umlbench.config import batch_layout
from umlbench.data.samplers import make_sampler
from umlbench.runner import build_config
from umlbench.train.supcon import PairwiseSupCon, views_per_class

LOSS_DIR = Path(__file__).parents[2] / "baselines" / "finetune" / "configs" / "loss"
LOSSES = sorted(p.stem for p in LOSS_DIR.glob("*.yaml"))
WORLD = 4  # the official --nproc_per_node


def official_view(z: torch.Tensor, ipc: int) -> torch.Tensor:
    """train.py:217 on one process's (B, D) embeddings."""
    return z.view(len(z) // ipc, ipc, z.shape[1])


def _labels(classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def _steps(cfg, labels, world=WORLD, steps=3):
    """Per step: the per-process index lists of ranks 0..world-1 (the trainer's sampler)."""
    t = cfg.train
    samplers = [make_sampler(t.sampler, labels, np.zeros(len(labels), int), t.batch_size, t.ipc,
                             seed=0, rank=r, world_size=world, reshuffle=t.reshuffle,
                             replace_images=t.ipc_replace) for r in range(world)]
    per_rank = [[[i for i, _ in b] for b in s] for s in samplers]
    return [[per_rank[r][k] for r in range(world)] for k in range(steps)]


def _configs():
    yield "puma", build_config("puma", "uml")
    yield "puma fewshot-train", build_config("puma", "uml", overrides=[
        "protocol.name=fewshot-train", "protocol.shots=1"])
    for m in ("linear", "vpt", "adaptformer", "lora"):
        yield m, build_config(m, "uml")
    for loss in LOSSES:
        for setting in ("unified", "specific"):
            yield f"finetune {loss} {setting}", build_config(
                "finetune", "uml", overrides=[f"loss.name={loss}", f"method.setting={setting}"])


CONFIGS = dict(_configs())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_uml_config_steps_720_images_180_per_process_on_4(name):
    t = CONFIGS[name].train
    assert t.batch_size == 720
    assert batch_layout(t, WORLD) == {"per_step": 720, "per_process": 180, "processes": 4}
    assert batch_layout(t, 1)["per_process"] == 720  # one GPU: all 720 in one step


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("classes, per_class", [(15_952 // 16, 6),  # many classes (unified)
                                                (100, 59)])  # CUB's training half
def test_each_loss_sampler_at_720(loss, classes, per_class):
    cfg = build_config("finetune", "uml", overrides=[f"loss.name={loss}"])
    t = cfg.train
    labels = _labels(classes, per_class)
    for ranks in _steps(cfg, labels):
        assert [len(r) for r in ranks] == [180] * WORLD
        step = np.concatenate(ranks)
        assert len(step) == 720
        if t.sampler == "uniform":  # IPC 0: a shuffled sample of the images, no repeats
            assert len(set(step.tolist())) == 720
            continue
        assert (t.sampler, t.ipc) == ("unique", 4)
        groups = labels[step].reshape(-1, 4)  # IPC groups of consecutive images
        assert (groups == groups[:, :1]).all()
        # 720 / 4 = 180 class slots per step: distinct classes when the dataset has 180 or
        # more (the official draw without replacement), some twice for CUB's 100.
        n_distinct = len(np.unique(groups[:, 0]))
        assert n_distinct == 180 if classes >= 180 else n_distinct <= 100
        # Each process holds 45 whole groups: the official per-process view works.
        for r in ranks:
            v = labels[np.asarray(r)].reshape(45, 4)
            assert (v == v[:, :1]).all()


def test_hyp_supcon_view_works_at_180_per_process_and_fails_at_a_global_180():
    cfg = build_config("finetune", "uml", overrides=["loss.name=hyp_supcon"])
    labels = _labels(996, 6)
    torch.manual_seed(0)
    for ranks in _steps(cfg, labels, steps=1):
        zs = [torch.randn(len(r), 128) * 0.1 for r in ranks]
        for z, r in zip(zs, ranks):
            v = official_view(z, 4)  # 180 per process -> (45, 4, 128)
            assert v.shape == (45, 4, 128)
        # umlbench's loss on the gathered step sees the same 180 classes x 4 views.
        step = np.concatenate(ranks)
        y = torch.as_tensor(labels[step])
        assert views_per_class(y) == 4
        assert torch.isfinite(PairwiseSupCon(0.1, 0.1)(torch.cat(zs), y))
    # The global-180 reading: 45 images per process, and 45 // 4 = 11 groups cannot hold them.
    glob = build_config("finetune", "uml", overrides=["loss.name=hyp_supcon",
                                                      "train.batch_size=180"])
    assert batch_layout(glob.train, WORLD)["per_process"] == 45
    with pytest.raises(RuntimeError, match="invalid for input of size"):
        official_view(torch.randn(45, 128), 4)
    # Its per-process slices also cut the IPC groups apart (45 is not a multiple of 4).
    ranks = _steps(glob, labels, steps=1)[0]
    assert [len(r) for r in ranks] == [45] * WORLD
