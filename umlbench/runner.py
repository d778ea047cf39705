"""One run, end to end: config -> protocol data -> method -> train -> evaluate -> run record."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from umlbench import paths
from umlbench.config import (SUITE_CONFIG_DIR, RunConfig, batch_layout, from_dict, load_yaml,
                             merge, parse_overrides, to_dict)
from umlbench.data.registry import dataset_recall_ks
from umlbench.env import code_identity, hardware, package_versions
from umlbench.errors import UserError
from umlbench.methods import METHODS, DataInfo, Method
from umlbench.metrics import MetricSpec
from umlbench.protocols.base import (PROTOCOLS, ProtocolData, check_protocol_config,
                                     image_ids, protocol_defaults)
from umlbench.results.identity import config_identity, data_identity, rows_sha256
from umlbench.results.perquery import PerQuery, episode_scope
from umlbench.results.record import RunRecord, new_run_id, write_record
from umlbench.train.distributed import DistInfo, barrier, init_distributed
from umlbench.train.losses import check_loss_args
from umlbench.train.trainer import Trainer, TrainingFailed, resolve_device, seed_everything

__all__ = ["build_config", "run", "method_class", "load_protocol", "run_prefix",
           "remove_checkpoints", "resume_command", "run_identity", "protocol_data_identity",
           "per_query_outcomes"]


def method_class(name: str) -> type[Method]:
    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"method plugin {name!r} is not a umlbench.methods.Method subclass")
    if not cls.name:
        cls.name = name
    return cls


def method_config_file(cls: type[Method], suite: str) -> Path | None:
    path = Path(inspect.getfile(cls)).parent / "configs" / f"{suite}.yaml"
    return path if path.exists() else None


def build_config(
    method: str,
    suite: str = "mini",
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **explicit,
) -> RunConfig:
    """Layer suite defaults, the method's config, ``config_file``, overrides and flags."""
    cls = method_class(method)
    layers: list[tuple[str, dict]] = []
    suite_file = SUITE_CONFIG_DIR / f"{suite}.yaml"
    if suite_file.exists():
        layers.append((str(suite_file), load_yaml(suite_file)))
    mfile = method_config_file(cls, suite)
    if mfile:
        layers.append((str(mfile), load_yaml(mfile)))
    user = [(str(config_file), load_yaml(config_file))] if config_file else []
    user.append(("--set", parse_overrides(overrides)))
    # Per-loss defaults of the method (e.g. the sampler a loss was run with officially) and
    # what the protocol implies (e.g. few-shot training epochs), below the user's own layers.
    loss_name = protocol = shots = None
    for _, layer in layers + user:
        loss_name = (layer.get("loss") or {}).get("name", loss_name)
        protocol = (layer.get("protocol") or {}).get("name", protocol)
        shots = (layer.get("protocol") or {}).get("shots", shots)
    for source, layer in user:
        # The user's own values first: a protocol's derived defaults read some of them (shots),
        # and an out-of-range one must be named by its key and range, not by what it breaks.
        from_dict(RunConfig, merge({"method": method},
                                   {k: v for k, v in layer.items() if k != "method_args"}),
                  source=source)
    if protocol:
        # The method's protocol config, then its overlay for this suite (e.g. mini's scale).
        pdir = Path(inspect.getfile(cls)).parent / "configs" / "protocol"
        for pfile in (pdir / f"{protocol}.yaml", pdir / suite / f"{protocol}.yaml"):
            if pfile.exists():
                layers.append((str(pfile), load_yaml(pfile)))
        layers.append((f"protocol {protocol}", protocol_defaults(protocol, shots)))
    if loss_name:
        lfile = Path(inspect.getfile(cls)).parent / "configs" / "loss" / f"{loss_name}.yaml"
        if lfile.exists():
            layers.append((str(lfile), load_yaml(lfile)))
    layers += user
    layers.append(("flags", {k: v for k, v in explicit.items() if v is not None}))
    merged: dict = {"method": method, "suite": suite}
    for source, layer in layers:
        # Validate each layer on its own so an unknown key names the file it came from.
        probe = merge({"method": method}, {k: v for k, v in layer.items() if k != "method_args"})
        from_dict(RunConfig, probe, source=source)
        loss = (layer.get("loss") or {}).get("name")
        if loss and loss != (merged.get("loss") or {}).get("name"):
            # A layer that names another loss starts from that loss's own defaults: arguments
            # of the previous loss (CurricularFace's scale) would not fit it.
            merged = {**merged, "loss": {}}
        merged = merge(merged, layer)
    merged["method"] = method
    cfg = from_dict(RunConfig, merged, source="config")
    check_protocol_config(cfg.protocol, cfg.suite)
    cls(cfg)  # validates method_args against the method's Config (names the bad key)
    check_loss_args(cfg.loss)  # names and ranges of loss.args, before any data loads
    return cfg


def load_protocol(cfg: RunConfig, root: Path) -> ProtocolData:
    if cfg.protocol.name not in PROTOCOLS:
        raise UserError(f"unknown protocol {cfg.protocol.name!r}; known: {', '.join(PROTOCOLS)}")
    module, fn = PROTOCOLS[cfg.protocol.name].split(":")
    return getattr(importlib.import_module(module), fn)(cfg, root)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run_prefix(display: str, cfg: RunConfig, info: dict) -> str:
    parts = [_slug(display), cfg.suite, info.get("name", cfg.protocol.name)]
    for key, tag in (("dataset", ""), ("level", "l"), ("shots", "k")):
        if info.get(key) is not None:
            parts.append(f"{tag}{info[key]}")
    parts.append(f"s{cfg.seed}")
    return "-".join(str(p) for p in parts)


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:8]


def protocol_data_identity(data: ProtocolData) -> dict:
    """``identity.data`` of the datasets (and split files) ``data`` reads."""
    # A prepared dataset that names its image source itself (Prepared.image_source) is
    # believed; older ones are described from their READY marker.
    return data_identity(((p.name, p.ready, _rows_hash(p), getattr(p, "image_source", None),
                           getattr(p, "image_size", None)) for p in data.sources),
                         data.split_files)


_ROWS_HASHES: dict[tuple[str, str], str] = {}


def _rows_hash(prep) -> str:
    # Cached per prepared copy (its path and manifest file hash): sweeps ask many times.
    key = (str(prep.path), str((prep.ready.get("sha256") or {}).get("manifest.parquet")))
    if key not in _ROWS_HASHES:
        _ROWS_HASHES[key] = rows_sha256(prep.manifest)
    return _ROWS_HASHES[key]


def run_identity(cfg: RunConfig, data: ProtocolData) -> dict:
    """The ``identity`` block of the records of a run (results/identity.py)."""
    return {"config": config_identity(to_dict(cfg)), "data": protocol_data_identity(data),
            "code": code_identity()}


def run(
    cfg: RunConfig,
    *,
    results_dir: Path | None = None,
    work_dir: Path | None = None,
    resume: bool = False,
    console: Console | None = None,
    data: ProtocolData | None = None,
    keep_checkpoints: bool = False,
    resume_cmd: str | None = None,
) -> list[tuple[RunRecord, Path | None]]:
    """Train and evaluate one configuration; write and return its records (one per outcome;
    paths are None on non-main processes).

    Checkpoints live in ``<work dir>/<run prefix>-<config hash>/`` while the run can still be
    resumed; once its records are written they are deleted unless ``keep_checkpoints``.
    An evaluation that raises is reported as :class:`EvaluationFailed`, naming the saved
    checkpoint and ``resume_cmd`` (default: :func:`resume_command`)."""
    console = console or Console(stderr=True)
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    dist: DistInfo = init_distributed(device)
    if dist.enabled and device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"
    # Each process gets its own stream (dropout masks); data order and augmentation come from
    # the sampler's (seed, epoch) and are the same for any number of processes.
    seed_everything(cfg.seed + 1_000_003 * dist.rank)
    cls = method_class(cfg.method)
    method = cls(cfg)
    root = paths.data_root(cfg.data_root)
    data = data or load_protocol(cfg, root)
    identity = run_identity(cfg, data)  # before training: what the run starts from
    info = DataInfo(num_classes=data.num_classes, datasets=tuple(data.datasets),
                    class_dataset=data.class_dataset() if data.num_classes else np.zeros(0),
                    suite=cfg.suite)
    model = method.build(info)
    criterion = method.criterion(info, model.embedding_dim) if cls.trains else None
    params = method.parameter_counts(model, criterion)
    display = method.display_name()
    prefix = run_prefix(display, cfg, data.info)
    work = (work_dir or paths.default_work_dir(cfg.data_root)) / f"{prefix}-{config_hash(cfg)}"
    trainer = Trainer(cfg, device, work, dist, console, resume=resume,
                      resume_command=resume_cmd or resume_command(cfg, work_dir))
    status, error = "completed", None
    outcomes = [{"protocol": dict(data.info), "metrics": {"per_dataset": {}, "universal": {},
                                                         "summary": {}}, "harmonic": None}]
    try:
        model = method.train(model, criterion, data, trainer) if cls.trains else model
        if dist.is_main:
            try:
                outcomes = evaluate_protocol(method, model, data, trainer, root)
            except UserError:
                raise
            except Exception as exc:  # the trained model is in last.pt: say how to resume
                raise trainer.evaluation_failed(exc, "the final evaluation") from exc
    except TrainingFailed as exc:
        status, error = "failed", str(exc)
    except KeyboardInterrupt:
        status, error = "interrupted", f"interrupted; resume with --resume (checkpoint in {work})"
    barrier()
    written: list[tuple[RunRecord, Path | None]] = []
    for outcome in outcomes:
        info = outcome["protocol"]
        record = RunRecord(
            run_id=new_run_id(run_prefix(display, cfg, info)),
            method=cfg.method,
            display_name=display,
            suite=cfg.suite,
            seed=cfg.seed,
            status=status,
            protocol=info,
            config=to_dict(cfg),
            backbone=cfg.backbone.name,
            params=params,
            metrics=outcome["metrics"],
            harmonic_mean=outcome["harmonic"],
            timings={"train_s": round(trainer.train_seconds, 2),
                     "eval_s": round(trainer.eval_seconds, 2),
                     "total_s": round(time.perf_counter() - t_start, 2)},
            # Effective precisions (fp32 on CPU whatever train.amp / eval.precision request).
            # The batch as trained: images per optimiser step and per process.
            hardware={**hardware(device, dist.world_size),
                      "precision": trainer.precision.as_dict(),
                      "batch": batch_layout(cfg.train, dist.world_size)},
            packages=package_versions(),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            identity=identity,
            history=trainer.state.history,
            error=error,
        )
        path = None
        if dist.is_main:
            path = write_record(record, (results_dir or paths.default_results_dir()) / cfg.suite,
                                per_query=outcome.get("per_query"))
        written.append((record, path))
    if status == "completed" and dist.is_main and not keep_checkpoints:
        remove_checkpoints(work)
    if status == "failed":
        raise TrainingFailed(f"{error} (record: {written[0][1]})")
    if status == "interrupted":
        raise KeyboardInterrupt(error)
    return written


def resume_command(cfg: RunConfig, work_dir: Path | None = None) -> str:
    """The command that continues this run from its checkpoint.

    From the command line: the same ``umlbench run`` arguments plus ``--resume`` (one level in
    place of ``--level all``); a sweep resumes by itself, so it is the same sweep command. From
    Python: the ``run`` call with ``resume=True``."""
    argv = list(sys.argv[1:])
    if argv[:1] == ["sweep"]:
        return shlex.join(["umlbench", *argv])
    if argv[:1] == ["run"]:
        level = cfg.protocol.level
        for i, a in enumerate(argv):
            if level is not None and a == "--level" and argv[i + 1:i + 2] == ["all"]:
                argv[i + 1] = str(level)
            elif level is not None and a == "--level=all":
                argv[i] = f"--level={level}"
        return shlex.join(["umlbench", *argv, *([] if "--resume" in argv else ["--resume"])])
    where = f", work_dir=Path({str(work_dir)!r})" if work_dir else ""
    return f"umlbench.runner.run(cfg, resume=True{where})"


def remove_checkpoints(work: Path) -> None:
    """Delete one run's checkpoint folder (``last.pt``, ``best.pt``, per-rank RNG states, the
    per-dataset members of ``finetune --setting specific``): a completed run needs none of them,
    and each is megabytes (hundreds on real data)."""
    import shutil

    if work.is_dir():
        shutil.rmtree(work, ignore_errors=True)


def evaluate_protocol(method: Method, model, data: ProtocolData, trainer: Trainer,
                      root: Path) -> list[dict]:
    """Final scores: one outcome for uml/oodml, one per shot count for few-shot episodes;
    each with the per-query outcomes its record's sidecar keeps."""
    if data.name == "fewshot":
        from umlbench.protocols.fewshot import run_episodes

        out = []
        for res in run_episodes(method, model, data, trainer, root):
            ds = data.info["dataset"]
            # One scope per episode: the record's score is the mean of the episode means.
            per_query = PerQuery.from_queries(
                {episode_scope(e): terms for e, terms in enumerate(res["per_query"])},
                episodic=True) if res["per_query"] else None
            out.append({
                "protocol": {**data.info, "shots": res["shots"], "episodes": res["episodes"],
                             "iterations": res["iterations"]},
                "metrics": {"per_dataset": {ds: res["universal"]}, "universal": res["universal"],
                            "summary": {}, "extra": res["extra"]},
                "harmonic": None,
                "per_query": per_query,
            })
        return out
    # The configured metrics everywhere, plus each dataset's literature Recall@K list in its
    # own scope (universal and the harmonic mean keep the configured ones).
    ev = trainer.cfg.eval
    spec = MetricSpec.from_names(ev.metrics, ev.cluster_rows).with_dataset_recall_ks(
        dataset_recall_ks(data.datasets))
    result = method.evaluate(model, data, data.test, trainer, metrics=spec)
    return [{"protocol": dict(data.info),
             "metrics": {"per_dataset": result.per_dataset, "universal": result.universal,
                         "summary": result.summary},
             "harmonic": result.harmonic_mean,
             "per_query": per_query_outcomes(result, data, data.test)}]


def per_query_outcomes(result, data: ProtocolData, rows) -> PerQuery | None:
    """The per-query outcomes of ``result`` (an EvalResult of ``rows``), keyed by the queries'
    datasets and manifest image ids; None when no retrieval metric was scored."""
    if not result.per_query:
        return None
    datasets = rows["dataset"].to_numpy().astype(str)
    ids = image_ids(data.sources, rows)
    return PerQuery.from_queries({scope: (datasets[q.rows], ids[q.rows], q.values)
                                  for scope, q in result.per_query.items()})
