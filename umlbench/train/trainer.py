"""The shared trainer: every method trains through it.

It owns the loop and everything around it: parameter groups with per-group learning-rate scales,
step/cosine/constant schedules with warm-up, mixed precision (``train.amp``: fp16 + GradScaler,
bf16 or off on GPU; fp32 on CPU) and a separate evaluation precision (``eval.precision``),
gradient value clamping and norm clipping, DDP with the loss computed on the all-gathered global
batch, a checkpoint at every epoch (model, loss, optimiser, scaler, scheduler, RNG states) from
which ``--resume`` continues exactly, evaluation after the epochs ``config.evaluation_epochs``
lists with best-checkpoint selection, a stop with a clear message on a NaN/inf loss, and a rich
progress bar.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from torch import nn
from torch.utils.data import DataLoader

from umlbench.config import RunConfig, evaluation_epochs
from umlbench.data.loading import ImageTable, TransformConfig, build_transform, collate, eval_loader
from umlbench.data.samplers import make_sampler
from umlbench.errors import EvaluationFailed, UserError
from umlbench.metrics import EvalResult, MetricSpec, evaluate
from umlbench.train.distributed import DistInfo, barrier, gather, gather_with_grad
from umlbench.train.precision import optimizer_step, resolve_precision

__all__ = ["Trainer", "TrainingFailed", "resolve_device", "seed_everything", "FitState"]


class TrainingFailed(UserError):
    """Training stopped (NaN/inf loss); the run record gets status ``failed``."""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available here")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class FitState:
    """What survives an epoch boundary (and a restart)."""

    epoch: int = 0  # next epoch to run
    history: list[dict] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = -1
    # The last epoch's evaluation is due but has not finished: the checkpoint is written before
    # it runs, so a resume evaluates that epoch first.
    eval_pending: bool = False


class _TrainStep(nn.Module):
    """Model + loss as one module so DDP sees every trainable parameter, proxies included."""

    def __init__(self, model: nn.Module, criterion: nn.Module, world: int) -> None:
        super().__init__()
        self.model, self.criterion, self.world = model, criterion, world

    def forward(self, images: torch.Tensor, targets: torch.Tensor):
        emb = self.model(images).float()
        if self.world > 1:  # the loss sees the global batch, as in the official code
            emb, targets = gather_with_grad(emb), gather(targets)
        loss = self.criterion(emb, targets)
        aux = self.model.aux_loss() if hasattr(self.model, "aux_loss") else None
        total = loss if aux is None else loss + aux
        return total, loss.detach()


class Trainer:
    def __init__(self, cfg: RunConfig, device: str, work_dir: Path, dist: DistInfo | None = None,
                 console: Console | None = None, resume: bool = False,
                 on_epoch: Callable[[int], None] | None = None,
                 resume_command: str | None = None) -> None:
        self.cfg, self.device = cfg, device
        self.work_dir = work_dir
        self.dist = dist or DistInfo()
        self.console = console or Console(stderr=True)
        self.resume = resume
        self.on_epoch = on_epoch
        # What the user runs to continue (runner.resume_command); named in evaluation failures.
        self.resume_command = resume_command or "the same command with --resume"
        self.state = FitState()
        self.eval_seconds = 0.0
        self.train_seconds = 0.0
        self._select_rows = None
        self.precision = resolve_precision(cfg.train.amp, cfg.eval.precision, device)

    # ---- data ----------------------------------------------------------------------------
    def transform_config(self, model: nn.Module) -> TransformConfig:
        dc = model.data_config
        size = self.cfg.data.input_size or int(dc["input_size"][-1])
        return TransformConfig(size, tuple(dc["mean"]), tuple(dc["std"]),
                               dc.get("interpolation", "bicubic"),
                               tuple(self.cfg.data.crop_scale), self.cfg.data.resize_ratio)

    def train_loader(self, model: nn.Module, data, rows=None) -> DataLoader:
        rows = data.train if rows is None else rows
        tcfg = self.transform_config(model)
        table = ImageTable(data.sources, rows, build_transform(tcfg, train=True))
        t = self.cfg.train
        sampler = make_sampler(
            t.sampler, rows["target"].to_numpy(), rows["source"].to_numpy(), t.batch_size, t.ipc,
            seed=self.cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size,
            max_batches=t.max_steps_per_epoch, reshuffle=t.reshuffle,
            replace_images=t.ipc_replace,
        )
        return DataLoader(table, batch_sampler=sampler, num_workers=self.cfg.data.num_workers,
                          pin_memory=self.cfg.data.pin_memory, collate_fn=collate,
                          persistent_workers=self.cfg.data.num_workers > 0)

    # ---- optimisation ------------------------------------------------------------------
    def _optimizer(self, groups: dict[str, list[nn.Parameter]]) -> torch.optim.Optimizer:
        t = self.cfg.train
        param_groups = []
        for name, params in groups.items():
            params = [p for p in params if p.requires_grad]
            if params:
                scale = t.lr_scales.get(name, 1.0)
                param_groups.append({"params": params, "lr": t.lr * scale, "name": name,
                                     "lr_scale": scale})
        if not param_groups:
            raise UserError("this method has no trainable parameters to optimise")
        if t.optimizer == "adamw":
            return torch.optim.AdamW(param_groups, lr=t.lr, weight_decay=t.weight_decay)
        if t.optimizer == "adam":
            return torch.optim.Adam(param_groups, lr=t.lr, weight_decay=t.weight_decay)
        if t.optimizer == "sgd":
            return torch.optim.SGD(param_groups, lr=t.lr, momentum=0.9,
                                   weight_decay=t.weight_decay)
        raise UserError(f"unknown optimizer {t.optimizer!r}; known: adamw, adam, sgd")

    def lr_factor(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        """Multiplier of every group's base lr at ``step`` of ``epoch`` (both 0-based).

        ``train.schedule_granularity=epoch``: one value per epoch (``step`` is ignored); the
        warm-up ramps (e + 1) / (warmup + 1) and the cosine runs over the epochs after it.
        ``iteration``: the official ``utils.cosine_scheduler(1, min_lr_scale, epochs, n,
        warmup_epochs)`` / ``step_scheduler`` array indexed by the global step
        it = epoch * n + step, n = ``steps_per_epoch``: a warm-up ``linspace(0, 1, W)`` over the
        W = warmup_epochs * n first steps, then min + (1 - min) (1 + cos(pi i / T)) / 2 with
        i = it - W over T = epochs * n - W steps (the floor itself is never reached); the step
        schedule is gamma ** (it // (step_epochs * n)), the same value per epoch either way.
        """
        t = self.cfg.train
        if t.scheduler not in ("step", "cosine", "none"):
            raise UserError(f"unknown scheduler {t.scheduler!r}; known: step, cosine, none")
        if t.schedule_granularity == "iteration":
            n = max(1, steps_per_epoch)
            it, warm = epoch * n + step, t.warmup_epochs * n
            if it < warm:
                return it / (warm - 1) if warm > 1 else 0.0  # np.linspace(0, 1, warm)[it]
            if t.scheduler == "step":
                return t.gamma ** (it // (max(1, t.step_epochs) * n))
            if t.scheduler == "cosine":
                span = max(1, t.epochs * n - warm)
                return t.min_lr_scale + 0.5 * (1 - t.min_lr_scale) * (
                    1 + math.cos(math.pi * (it - warm) / span))
            return 1.0
        if epoch < t.warmup_epochs:
            return (epoch + 1) / (t.warmup_epochs + 1)
        if t.scheduler == "step":
            return t.gamma ** (epoch // max(1, t.step_epochs))
        if t.scheduler == "cosine":
            span = max(1, t.epochs - t.warmup_epochs)
            prog = (epoch - t.warmup_epochs) / span
            return t.min_lr_scale + (1 - t.min_lr_scale) * 0.5 * (1 + math.cos(math.pi * prog))
        return 1.0

    def _set_lr(self, opt: torch.optim.Optimizer, factor: float) -> None:
        for g in opt.param_groups:
            g["lr"] = self.cfg.train.lr * g["lr_scale"] * factor

    # ---- checkpoints ------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.work_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.work_dir / "best.pt"

    def _rank_rng_path(self, rank: int) -> Path:
        return self.work_dir / f"rng-rank{rank}.pt"

    def _save(self, path: Path, payload: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.part")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def _rng_state(self) -> dict:
        return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def _set_rng_state(self, s: dict) -> None:
        torch.set_rng_state(s["torch"])
        np.random.set_state(s["numpy"])
        random.setstate(s["python"])
        if s.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])

    # ---- the loop ---------------------------------------------------------------------
    def fit(self, method, model: nn.Module, criterion: nn.Module, data,
            train_rows=None, select_rows=None) -> nn.Module:
        """Train ``model`` with ``criterion`` on ``data.train`` (or ``train_rows``).

        Checkpoints are selected on ``select_rows`` when given, else on the validation rows
        (``train.select=val``) or the test rows (``train.select=universal``, as the reference).
        """
        self._select_rows = select_rows
        t = self.cfg.train
        model.to(self.device)
        criterion.to(self.device)
        groups = dict(method.param_groups(model))
        proxies = [p for p in criterion.parameters() if p.requires_grad]
        if proxies:
            groups["proxies"] = groups.get("proxies", []) + proxies
        opt = self._optimizer(groups)
        scaler = self.precision.scaler()
        eval_after = set(evaluation_epochs(t))
        step_module = _TrainStep(model, criterion, self.dist.world_size)
        runner = step_module
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dist.local_rank] if self.device.startswith("cuda") else None
            runner = DDP(step_module, device_ids=ids)
        loader = self.train_loader(model, data, train_rows)
        trainable = [p for g in opt.param_groups for p in g["params"]]

        if self.resume and self.last_path.exists():
            ck = torch.load(self.last_path, map_location="cpu", weights_only=False)
            model.load_state_dict(ck["model"])
            criterion.load_state_dict(ck["criterion"])
            opt.load_state_dict(ck["optimizer"])
            scaler.load_state_dict(ck["scaler"])
            self.state = FitState(**ck["state"])
            rank_rng = self._rank_rng_path(self.dist.rank)
            if self.dist.enabled and rank_rng.exists():
                self._set_rng_state(torch.load(rank_rng, weights_only=False))
            else:
                self._set_rng_state(ck["rng"])
            if self.dist.is_main:
                self.console.print(f"resumed from {self.last_path} at epoch {self.state.epoch}")
            if self.state.eval_pending:  # the evaluation that failed before the resume
                self._evaluate_epoch(method, model, data, self.state.epoch - 1,
                                     (model, criterion, opt, scaler))

        per_step = t.schedule_granularity == "iteration"
        n_steps = len(loader)
        for epoch in range(self.state.epoch, t.epochs):
            self._set_lr(opt, self.lr_factor(epoch, 0, n_steps))
            factor_sum = 0.0
            loader.batch_sampler.set_epoch(epoch)
            model.train()
            criterion.train()
            t0 = time.perf_counter()
            loss_sum, steps, seen = 0.0, 0, 0
            with self._progress(len(loader), epoch) as (progress, task):
                for images, targets, _ in loader:
                    factor = self.lr_factor(epoch, steps, n_steps)
                    if per_step:
                        self._set_lr(opt, factor)
                    factor_sum += factor
                    images = images.to(self.device, non_blocking=True)
                    targets = targets.to(self.device, non_blocking=True)
                    with self.precision.train_autocast():
                        total, loss = runner(images, targets)
                    if not torch.isfinite(total):
                        raise TrainingFailed(
                            f"loss became {total.item()} at epoch {epoch} step {steps}; lower "
                            "train.lr or check the data (the record is marked failed)"
                        )
                    optimizer_step(total, opt, scaler, trainable, t.grad_clamp,
                                   t.grad_clip_norm)
                    loss_sum += loss.item()
                    steps += 1
                    seen += len(images) * self.dist.world_size
                    if progress is not None:
                        rate = seen / max(time.perf_counter() - t0, 1e-9)
                        progress.update(task, advance=1,
                                        info=f"loss {loss_sum / steps:.4f}  {rate:.0f} img/s")
            seconds = time.perf_counter() - t0
            self.train_seconds += seconds
            # The base lr, averaged over the epoch's steps (constant per epoch unless the
            # schedule steps per iteration).
            mean_factor = factor_sum / steps if steps else self.lr_factor(epoch, 0, n_steps)
            record = {"epoch": epoch, "loss": loss_sum / max(steps, 1),
                      "lr": t.lr * mean_factor, "seconds": round(seconds, 3),
                      "images_per_s": round(seen / max(seconds, 1e-9), 1)}
            last = epoch + 1 == t.epochs
            # With select=last the final evaluation (by the runner) scores the last epoch, so
            # evaluating it here as well would only cost time.
            due = epoch + 1 in eval_after and not (last and t.select == "last")
            self.state.history.append(record)
            self.state.epoch = epoch + 1
            self.state.eval_pending = due
            # The epoch is on disk before anything evaluates it: an evaluation that runs out
            # of memory costs that evaluation, never the training before it.
            self._checkpoint(model, criterion, opt, scaler)
            if due:
                self._evaluate_epoch(method, model, data, epoch, (model, criterion, opt, scaler))
            if self.on_epoch:
                self.on_epoch(epoch)
        if t.select != "last" and self.best_path.exists():
            model.load_state_dict(torch.load(self.best_path, map_location="cpu",
                                             weights_only=False)["model"])
        return model

    def _checkpoint(self, model, criterion, opt, scaler) -> None:
        """Write ``last.pt`` (main process) and each process's RNG state, atomically."""
        if self.dist.enabled:  # every process keeps its own random stream (dropout)
            self._save(self._rank_rng_path(self.dist.rank), self._rng_state())
        if self.dist.is_main:
            self._save(self.last_path, {
                "model": model.state_dict(), "criterion": criterion.state_dict(),
                "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "state": vars(self.state), "rng": self._rng_state(),
                "config": self.cfg.method,
            })
        barrier()

    def _evaluate_epoch(self, method, model, data, epoch: int, parts) -> None:
        """The selection evaluation of ``epoch`` (already checkpointed); on success its scores
        join the epoch's history and the checkpoint is written again with them."""
        try:
            self.state.history[-1].update(self._select(method, model, data, epoch))
        except UserError:
            raise  # a configuration mistake: resuming would meet it again
        except Exception as exc:
            raise self.evaluation_failed(exc, f"evaluation after epoch {epoch + 1}") from exc
        self.state.eval_pending = False
        self._checkpoint(*parts)

    def evaluation_failed(self, exc: BaseException, what: str) -> EvaluationFailed:
        """The one-line error for an evaluation that raised: what failed, that the checkpoint of
        the last finished epoch is on disk, and the command that resumes from it."""
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        if len(reason) > 300:
            reason = reason[:297] + "..."
        saved = (f"the checkpoint of epoch {self.state.epoch} is saved in {self.last_path}"
                 if self.last_path.exists() else f"no checkpoint in {self.work_dir}")
        return EvaluationFailed(f"{what} failed ({reason}); {saved}; resume with: "
                                f"{self.resume_command}")

    @contextlib.contextmanager
    def _progress(self, total: int, epoch: int):
        """A rich progress bar on the main process; (None, None) elsewhere."""
        if not self.dist.is_main:
            yield None, None
            return
        with Progress(
            TextColumn(f"epoch {epoch + 1}/{self.cfg.train.epochs}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), console=self.console,
        ) as progress:
            yield progress, progress.add_task("train", total=total, info="")

    def _select(self, method, model, data, epoch: int) -> dict:
        """Evaluate for checkpoint selection; returns what goes into the epoch's history."""
        t = self.cfg.train
        out = {}
        if self.dist.is_main:
            # "recall@1+map@1000" selects on the sum (ooDML's few-shot base model).
            names = [n.strip() for n in t.select_metric.split("+")]
            spec = MetricSpec.from_names(names, self.cfg.eval.cluster_rows)
            rows = self._select_rows
            if rows is None:
                rows = data.val if t.select == "val" else data.test
            if rows is None:
                raise UserError("train.select=val needs a protocol with a validation split")
            res = method.evaluate(model, data, rows, self, metrics=spec)
            key = t.select_metric
            score = sum(res.universal[n] for n in names)
            out = {f"{'val' if t.select == 'val' else 'test'}_universal_{key}": score,
                   f"{'val' if t.select == 'val' else 'test'}_harmonic_{key}":
                       res.summary["harmonic_mean"].get(key)}
            if t.select != "last" and score > self.state.best_score:
                self.state.best_score, self.state.best_epoch = score, epoch
                self._save(self.best_path, {"model": model.state_dict(), "epoch": epoch,
                                            "score": score})
            self.console.print(f"epoch {epoch + 1}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in out.items() if v is not None))
        barrier()
        return out

    # ---- evaluation -------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, method, model: nn.Module, data, rows) -> np.ndarray:
        """(N, D) float32 embeddings of ``rows`` with the eval transform."""
        model.to(self.device)
        was_training = model.training
        model.eval()
        table = ImageTable(data.sources, rows,
                           build_transform(self.transform_config(model), train=False))
        loader = eval_loader(table, self.cfg.eval.batch_size, self.cfg.data.num_workers,
                             self.cfg.data.pin_memory)
        out = []
        with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=self.console, transient=True,
                      disable=not (self.dist.is_main and self.console.is_terminal)) as progress:
            task = progress.add_task("embed", total=len(loader))
            for images, _, _ in loader:
                with self.precision.eval_autocast():
                    out.append(method.embed(model, images.to(self.device)).float().cpu())
                progress.advance(task)
        model.train(was_training)
        return torch.cat(out).numpy()

    def evaluate(self, method, model: nn.Module, data, rows, metrics=None,
                 normalize: bool = True) -> EvalResult:
        """Embed ``rows`` and score them; ``normalize=False`` ranks by the raw dot product."""
        t0 = time.perf_counter()
        ev = self.cfg.eval
        spec = metrics or MetricSpec.from_names(ev.metrics, ev.cluster_rows)
        emb = self.embed(method, model, data, rows)
        res = evaluate(emb, rows["target"].to_numpy(), rows["dataset"].to_numpy(),
                       rows["is_query"].to_numpy(), rows["is_gallery"].to_numpy(),
                       metrics=spec, device=self.device, seed=self.cfg.seed,
                       normalize=normalize)
        self.eval_seconds += time.perf_counter() - t0
        return res

