"""When the official code evaluates, its learning-rate schedules and its sample order.

Facts from the official train.py (tjddus9597/PUMA-WACV25): evaluation and best-checkpoint
selection run after the 0-based epoch ``e`` when ``e % eval_freq == 0 and e > 0``, selected on
``Unified_R@1`` of the test set; no ``--lr_decay`` means ``step_scheduler(epochs, epochs, gamma=1)``
(constant); ``sampler.set_epoch`` is only called when IPC > 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST
from umlbench.config import TrainConfig, evaluation_epochs
from umlbench.data.samplers import ClassUniqueSampler, UniformSampler
from umlbench.runner import build_config, load_protocol, run
from umlbench.train.trainer import Trainer


@pytest.mark.parametrize("epochs, every, expected", [
    (100, 20, [21, 41, 61, 81]),        # PUMA: the final (100th) model is never scored
    (101, 20, [21, 41, 61, 81, 101]),   # dataset-specific command: 101 epochs, last one scored
    (33, 32, [33]),                     # few-shot K=1: epochs 32/K + 1, eval_freq 32/K
    (3, 2, [3]),                        # few-shot K=16
    (5, 0, []),
])
def test_official_evaluation_epochs(epochs, every, expected):
    t = TrainConfig(epochs=epochs, eval_every=every, eval_rule="official")
    assert evaluation_epochs(t) == expected


def test_umlbench_rule_is_every_n_and_the_last():
    assert evaluation_epochs(TrainConfig(epochs=100, eval_every=20)) == [20, 40, 60, 80, 100]
    assert evaluation_epochs(TrainConfig(epochs=10, eval_every=4)) == [4, 8, 10]
    assert evaluation_epochs(TrainConfig(epochs=4, eval_every=0)) == [4]


def test_uml_configs_follow_the_official_commands():
    puma = build_config("puma", "uml").train
    assert evaluation_epochs(puma) == [21, 41, 61, 81]
    assert (puma.reshuffle, puma.select, puma.scheduler, puma.step_epochs) == (
        False, "universal", "step", 20)
    # Mini keeps its budget and choices: reshuffled, one evaluation of the last epoch.
    mini = build_config("puma", "mini").train
    assert (mini.reshuffle, mini.eval_rule, mini.select, evaluation_epochs(mini)) == (
        True, "every", "last", [4])


# The official dataset-specific command (README loop), with the IPC/hyp_c arrays aligned as in
# unified_eval.py: method -> (IPC, hyp_c). lr 3e-5, 180 per GPU on 4 GPUs (720 per step), 101
# epochs, eval_freq 20 for all.
OFFICIAL_SPECIFIC = {"triplet": (4, 0.0), "multi_similarity": (4, 0.0), "margin": (4, 0.0),
                     "proxy_anchor": (0, 0.0), "cosface": (0, 0.0), "arcface": (0, 0.0),
                     "soft_triple": (0, 0.0), "hyp_supcon": (4, 0.1)}


@pytest.mark.parametrize("loss", sorted(OFFICIAL_SPECIFIC))
def test_specific_finetune_uses_each_loss_official_settings(loss):
    cfg = build_config("finetune", "uml", overrides=[f"loss.name={loss}",
                                                     "method.setting=specific"])
    t = cfg.train
    ipc, hyp_c = OFFICIAL_SPECIFIC[loss]
    assert (t.lr, t.batch_size, t.epochs, t.warmup_epochs) == (3e-5, 720, 101, 0)
    assert (t.sampler, t.ipc) == (("unique", 4) if ipc else ("uniform", 0))
    assert t.reshuffle == (ipc > 0)  # set_epoch is only called for IPC > 0
    assert cfg.method_args.get("hyp_c", 0.0) == hyp_c
    assert evaluation_epochs(t) == [21, 41, 61, 81, 101]
    trainer = Trainer(cfg, "cpu", Path("/nonexistent"))
    assert {trainer.lr_factor(e) for e in range(101)} == {1.0}  # no --lr_decay: constant


def _epoch(sampler, epoch):
    """(indices, augmentation seeds) the sampler yields in ``epoch``."""
    sampler.set_epoch(epoch)
    pairs = [p for batch in sampler for p in batch]
    return [i for i, _ in pairs], [s for _, s in pairs]


def test_sample_order_is_fixed_without_reshuffle():
    fixed = UniformSampler(100, 10, seed=3, reshuffle=False)
    moving = UniformSampler(100, 10, seed=3, reshuffle=True)
    order0, seeds0 = _epoch(fixed, 0)
    assert _epoch(moving, 0)[0] == order0  # epoch 0 is the same draw either way
    for epoch in (1, 2):
        order, seeds = _epoch(fixed, epoch)
        assert order == order0
        assert seeds != seeds0  # augmentations still change every epoch
        assert _epoch(moving, epoch)[0] != order0
    labels = np.repeat(np.arange(20), 5)
    classes = ClassUniqueSampler(labels, 20, 4, reshuffle=False)
    assert _epoch(classes, 5)[0] == _epoch(classes, 0)[0]


def test_class_images_with_replacement_as_the_official_sampler():
    labels = np.repeat(np.arange(50), 10)  # 10 images per class: enough for ipc 4

    def blocks(replace):
        s = ClassUniqueSampler(labels, 40, 4, replace_images=replace, seed=1)
        return np.concatenate(s.global_batches()).reshape(-1, 4)

    dup = [len(set(b)) < 4 for b in blocks(True)]
    assert any(dup)  # P(4 draws of 10 all distinct) = 0.504 per block; 120 blocks here
    assert not any(len(set(b)) < 4 for b in blocks(False))
    assert build_config("finetune", "uml", overrides=["loss.name=triplet"]).train.ipc_replace
    assert not build_config("finetune", "mini", overrides=["loss.name=triplet"]).train.ipc_replace


def test_trainer_passes_reshuffle_to_its_sampler(env_root, mini_root):
    from umlbench.methods import DataInfo
    from umlbench.runner import method_class

    cfg = build_config("linear", "mini", overrides=FAST + ["train.reshuffle=false"])
    data = load_protocol(cfg, mini_root)
    model = method_class("linear")(cfg).build(DataInfo(
        num_classes=data.num_classes, datasets=tuple(data.datasets),
        class_dataset=data.class_dataset(), suite="mini"))
    sampler = Trainer(cfg, "cpu", env_root / "w").train_loader(model, data).batch_sampler
    assert sampler.reshuffle is False
    assert _epoch(sampler, 1)[0] == _epoch(sampler, 0)[0]


def test_official_rule_scores_chosen_epochs_and_keeps_the_best(env_root):
    # 4 epochs, eval_every 2, official rule: only after 0-based epoch 2 (3 trained epochs). The
    # final model (epoch 4) is never scored; the record scores the checkpoint of epoch 3.
    cfg = build_config("linear", "mini", overrides=FAST + [
        "train.epochs=4", "train.eval_every=2", "train.eval_rule=official",
        "train.select=universal", "train.max_steps_per_epoch=2"])
    [(rec, _)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    key = "test_universal_recall@1"
    assert [key in h for h in rec.history] == [False, False, True, False]
    assert rec.metrics["universal"]["recall@1"] == pytest.approx(rec.history[2][key])


# ---- issue 21, item 3: per-iteration schedules ----------------------------------------------


def official_cosine(base, final, epochs, n, warmup_epochs=0, start_warmup_value=0.0):
    """The official utils.cosine_scheduler array, from its definition: a linear warm-up
    np.linspace(start, base, W) over W = warmup_epochs * n steps, then
    final + (base - final) (1 + cos(pi i / T)) / 2 for i = 0 .. T - 1, T = epochs * n - W
    (so the final value itself is never reached)."""
    warm = warmup_epochs * n
    ramp = np.linspace(start_warmup_value, base, warm) if warmup_epochs > 0 else np.array([])
    i = np.arange(epochs * n - warm)
    return np.concatenate([ramp, final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / len(i)))])


def _factors(trainer, epochs, n):
    return np.array([trainer.lr_factor(e, s, n) for e in range(epochs) for s in range(n)])


@pytest.mark.parametrize("shots", sorted([1, 2, 4, 8, 16]))
def test_fewshot_lr_is_the_official_per_iteration_cosine(shots):
    cfg = build_config("puma", "uml", overrides=["protocol.name=fewshot-train",
                                                 f"protocol.shots={shots}"])
    t = cfg.train
    # n: steps per epoch of the official K-shot set (7 datasets, no Aircraft) at 720 per step.
    n = (100 + 98 + 11_318 + 3_997 + 278 + 60 + 51) * shots // 720
    ref = official_cosine(1, t.min_lr_scale, t.epochs, n)
    got = _factors(Trainer(cfg, "cpu", Path("/x")), t.epochs, n)
    assert len(ref) == t.epochs * n
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    if shots == 16:  # 3 epochs of 353 steps: per-epoch means 0.92 / 0.55 / 0.18 (per-epoch
        # stepping gave 1.0 / 0.775 / 0.325)
        means = got.reshape(t.epochs, n).mean(1)
        np.testing.assert_allclose(means, [0.92, 0.55, 0.18], atol=5e-3)


@pytest.mark.parametrize("scheduler, warmup", [("cosine", 2), ("cosine", 1), ("step", 0),
                                                ("none", 0)])
def test_iteration_granularity_follows_the_official_arrays(scheduler, warmup):
    cfg = build_config("puma", "uml", overrides=[
        "train.epochs=7", f"train.scheduler={scheduler}", f"train.warmup_epochs={warmup}",
        "train.step_epochs=3", "train.min_lr_scale=0.2"])
    n = 5
    got = _factors(Trainer(cfg, "cpu", Path("/x")), 7, n)
    it = np.arange(7 * n)
    if scheduler == "cosine":
        ref = official_cosine(1, 0.2, 7, n, warmup_epochs=warmup)
    elif scheduler == "step":  # official step_scheduler(3, 7, n, gamma=0.5)
        ref = 0.5 ** (it // (3 * n))
    else:  # no --lr_decay: step_scheduler(epochs, epochs, n, gamma=1)
        ref = np.ones(7 * n)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_trainer_sets_the_per_iteration_lr_at_every_step(env_root, monkeypatch):
    # The loop itself: record each step's lr (as the optimiser sees it) over 2 epochs of 3 steps.
    import umlbench.train.trainer as trainer_mod

    seen = []
    real_step = trainer_mod.optimizer_step

    def spy(total, opt, *args):
        g = opt.param_groups[0]
        seen.append(g["lr"] / g["lr_scale"])
        return real_step(total, opt, *args)

    monkeypatch.setattr(trainer_mod, "optimizer_step", spy)
    cfg = build_config("linear", "mini", overrides=FAST + [
        "train.epochs=2", "train.max_steps_per_epoch=3", "train.scheduler=cosine",
        "train.schedule_granularity=iteration", "train.lr=0.01", "train.min_lr_scale=0.1"])
    [(rec, _)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    ref = 0.01 * official_cosine(1, 0.1, 2, 3)
    np.testing.assert_allclose(seen, ref, rtol=0, atol=1e-12)
    # The history keeps each epoch's mean lr; the record the batch as trained.
    np.testing.assert_allclose([h["lr"] for h in rec.history], ref.reshape(2, 3).mean(1),
                               rtol=0, atol=1e-12)
    assert rec.hardware["batch"] == {"per_step": 32, "per_process": 32, "processes": 1}


def test_epoch_granularity_is_kept_where_umlbench_chose_it():
    # mini's cosine and the uml suites' step schedules: one value per epoch either way.
    mini = build_config("puma", "mini")
    assert mini.train.schedule_granularity == "epoch"
    tr = Trainer(mini, "cpu", Path("/x"))
    assert {tr.lr_factor(1, s, 10) for s in range(10)} == {tr.lr_factor(1)}
    uml = Trainer(build_config("puma", "uml"), "cpu", Path("/x"))
    n = 83
    np.testing.assert_array_equal(_factors(uml, 100, n),
                                  np.repeat([uml.lr_factor(e) for e in range(100)], n))
