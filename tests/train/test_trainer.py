"""The shared trainer: schedules, determinism, NaN stop, resume after a kill, DDP equivalence."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST
from umlbench.errors import EvaluationFailed
from umlbench.runner import build_config, run
from umlbench.train.trainer import Trainer, TrainingFailed


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def test_lr_schedules():
    step = Trainer(build_config("puma", "uml"), "cpu", Path("/nonexistent"))
    assert [step.lr_factor(e) for e in (0, 19, 20, 40, 99)] == [1, 1, 0.5, 0.25, 0.5**4]
    cos = Trainer(build_config("puma", "mini", overrides=["train.epochs=10",
                                                          "train.scheduler=cosine",
                                                          "train.warmup_epochs=2"]),
                  "cpu", Path("/x"))
    assert cos.lr_factor(0) == pytest.approx(1 / 3)
    assert cos.lr_factor(2) == pytest.approx(1.0)
    assert cos.lr_factor(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(
        torch.tensor(torch.pi * 7 / 8)).item()))


def test_same_seed_same_result(env_root):
    cfg = build_config("linear", "mini", overrides=FAST + ["train.max_steps_per_epoch=2"])
    [(a, _)] = run(cfg, results_dir=env_root / "r1", work_dir=env_root / "w1")
    [(b, _)] = run(cfg, results_dir=env_root / "r2", work_dir=env_root / "w2")
    assert a.metrics["universal"] == b.metrics["universal"]
    assert a.history[0]["loss"] == b.history[0]["loss"]


def test_nan_loss_stops_with_failed_record(env_root):
    cfg = build_config("linear", "mini", overrides=FAST + ["train.lr=1e30",
                                                           "train.grad_clamp=0"])
    with pytest.raises(TrainingFailed, match="loss became"):
        run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    rec = json.loads(next((env_root / "r" / "mini").glob("*.json")).read_text())
    assert rec["status"] == "failed" and "loss became" in rec["error"]


def test_selection_on_validation_classes(env_root):
    cfg = build_config("linear", "mini", overrides=FAST + ["train.select=val",
                                                           "train.epochs=2"])
    [(rec, _)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w")
    assert all("val_universal_recall@1" in h for h in rec.history)


def _umlbench(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "umlbench", *args], env=env, **kw)


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_metrics(env_root):
    args = ["run", "--method", "puma", *_sets(FAST + ["train.epochs=3",
                                                      "train.max_steps_per_epoch=6",
                                                      "train.eval_every=1"])]
    env = dict(os.environ)
    # Uninterrupted reference run.
    env_a = {**env, "UMLBENCH_WORK": str(env_root / "wa"), "UMLBENCH_RESULTS": str(env_root / "ra")}
    assert _umlbench(args, env_a).wait() == 0
    # Killed after its first epoch checkpoint, then resumed.
    env_b = {**env, "UMLBENCH_WORK": str(env_root / "wb"), "UMLBENCH_RESULTS": str(env_root / "rb")}
    proc = _umlbench(args, env_b, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        ck = list((env_root / "wb").glob("*/last.pt"))
        if ck and torch.load(ck[0], weights_only=False)["state"]["epoch"] >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not list((env_root / "rb").rglob("*.json"))
    assert _umlbench(args + ["--resume"], env_b).wait() == 0
    a = json.loads(next((env_root / "ra").rglob("*.json")).read_text())
    b = json.loads(next((env_root / "rb").rglob("*.json")).read_text())
    assert a["metrics"]["universal"] == b["metrics"]["universal"]
    assert a["metrics"]["per_dataset"] == b["metrics"]["per_dataset"]
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]])


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(env_root):
    common = FAST + ["train.epochs=2", "train.max_steps_per_epoch=4", "train.batch_size=32",
                     "eval.metrics=[recall@1]"]
    env = dict(os.environ)
    env1 = {**env, "UMLBENCH_RESULTS": str(env_root / "r1"), "UMLBENCH_WORK": str(env_root / "w1")}
    env2 = {**env, "UMLBENCH_RESULTS": str(env_root / "r2"), "UMLBENCH_WORK": str(env_root / "w2"),
            "OMP_NUM_THREADS": "1"}
    args = ["run", "--method", "linear", "--device", "cpu", *_sets(common)]
    assert _umlbench(args, env1).wait() == 0
    assert _umlbench(args + ["--nproc", "2"], env2).wait() == 0
    one = json.loads(next((env_root / "r1").rglob("*.json")).read_text())
    two = json.loads(next((env_root / "r2").rglob("*.json")).read_text())
    assert two["hardware"]["world_size"] == 2
    assert [h["loss"] for h in two["history"]] == pytest.approx(
        [h["loss"] for h in one["history"]], rel=1e-4)
    assert two["metrics"]["universal"]["recall@1"] == pytest.approx(
        one["metrics"]["universal"]["recall@1"], abs=1e-3)


def _failing_evaluation(monkeypatch, fail_at: set[int], exc: BaseException):
    """Make the engine raise ``exc`` on the evaluations numbered in ``fail_at`` (1-based)."""
    import umlbench.train.trainer as trainer_mod

    real = trainer_mod.evaluate
    calls = [0]

    def evaluate(*a, **kw):
        calls[0] += 1
        if calls[0] in fail_at:
            raise exc
        return real(*a, **kw)

    monkeypatch.setattr(trainer_mod, "evaluate", evaluate)
    return calls


def test_a_failing_evaluation_keeps_the_epoch_and_names_the_resume_command(env_root, monkeypatch):
    """The checkpoint of the epoch is on disk before its evaluation; the error is one line with
    the command that resumes; that command finishes the run with the uninterrupted run's values."""
    from click.testing import CliRunner

    from umlbench.cli import cli

    args = ["run", "--method", "linear",
            *_sets(FAST + ["train.epochs=2", "train.max_steps_per_epoch=2"])]
    ref = CliRunner().invoke(cli, args + ["--results-dir", str(env_root / "ra"),
                                          "--work-dir", str(env_root / "wa")])
    assert ref.exit_code == 0, ref.output
    args += ["--results-dir", str(env_root / "rb"), "--work-dir", str(env_root / "wb")]
    with monkeypatch.context() as m:
        m.setattr(sys, "argv", ["umlbench", *args])
        calls = _failing_evaluation(m, {1}, MemoryError("Unable to allocate 95.3 GiB"))
        res = CliRunner().invoke(cli, args)
    assert calls[0] == 1 and res.exit_code == 1
    lines = res.output.strip().splitlines()  # the run's progress, then one line of error
    line = lines[-1]
    assert "Traceback" not in res.output and sum(x.startswith("error") for x in lines) == 1
    assert line.startswith("error: evaluation after epoch 1 failed (MemoryError: Unable to "
                           "allocate 95.3 GiB); the checkpoint of epoch 1 is saved in ")
    [ck] = (env_root / "wb").glob("*/last.pt")
    assert str(ck) in line
    state = torch.load(ck, weights_only=False)["state"]
    assert state["epoch"] == 1 and state["eval_pending"]
    assert not list((env_root / "rb").rglob("*.json"))  # no record of a half-done run
    command = line.split("resume with: ", 1)[1]
    assert command == shlex.join(["umlbench", *args, "--resume"])
    done = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert done.exit_code == 0, done.output
    a = json.loads(next((env_root / "ra").rglob("*.json")).read_text())
    b = json.loads(next((env_root / "rb").rglob("*.json")).read_text())
    assert a["metrics"] == b["metrics"]
    # The resumed run evaluated epoch 1 before going on: the same history, selection included.
    drop = ("seconds", "images_per_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in a["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in b["history"]]


def test_a_failing_final_evaluation_keeps_the_trained_model(env_root, monkeypatch):
    cfg = build_config("linear", "mini", overrides=FAST + ["train.select=last"])
    with monkeypatch.context() as m, pytest.raises(EvaluationFailed) as err:
        _failing_evaluation(m, {1}, RuntimeError("CUDA error: out of memory\nmore"))
        run(cfg, results_dir=env_root / "r", work_dir=env_root / "w", resume_cmd="RESUME")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("the final evaluation failed (RuntimeError: CUDA "
                                              "error: out of memory more); the checkpoint of "
                                              "epoch 1 is saved in ")
    assert msg.endswith("; resume with: RESUME")
    [(rec, _)] = run(cfg, results_dir=env_root / "r", work_dir=env_root / "w", resume=True)
    assert rec.status == "completed" and len(rec.history) == 1  # not trained again
