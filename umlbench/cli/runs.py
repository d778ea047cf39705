"""Commands that train and score: run, sweep, evaluate, params, reproduce."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import click
from rich.table import Table

from umlbench import paths
from umlbench.cli.base import _POSITIVE, _SEED, cli, console, out
from umlbench.cli_util import PathHelpOption, check_run_input, plain_table
from umlbench.errors import UserError


def _output_dirs(fn):
    """--results-dir and --work-dir, shared by `run` and `sweep`."""
    fn = click.option("--work-dir", type=click.Path(file_okay=False), default=None,
                      cls=PathHelpOption,
                      help="Checkpoints go to DIR/<run>-<config hash>/ until its run completes "
                      "(default DIR: <data root>/runs, now {work}).")(fn)
    return click.option("--results-dir", type=click.Path(file_okay=False), default=None,
                        cls=PathHelpOption,
                        help="Records go to DIR/<suite>/<run id>.json (default DIR: {results})."
                        )(fn)


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("--method", required=True, help="Method name (see `umlbench list methods`).")
@click.option("--suite", default="mini", show_default=True)
@click.option("--seed", type=_SEED, default=None, help="Random seed >= 0 (default 0).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML config layered over the method's defaults.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config field, e.g. --set train.epochs=3 --set method.adapter_dim=64")
@click.option("--loss", default=None, help="Loss name (shorthand for --set loss.name=...).")
@click.option("--setting", type=click.Choice(["unified", "specific"]), default=None,
              help="Fine-tuning setting (finetune method).")
@click.option("--protocol", default=None, help="uml (default), oodml, fewshot, fewshot-train.")
@click.option("--dataset", default=None, help="oodml/fewshot: dataset to run on.")
@click.option("--level", default=None, help="oodml/fewshot: split level, or 'all'.")
@click.option("--shots", default=None, type=_POSITIVE, help="fewshot-train: images per class.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, cls=PathHelpOption,
              help="Data root (default: $UMLBENCH_DATA or ~/.cache/umlbench; now {data}).")
@_output_dirs
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of this config.")
@click.option("--keep-checkpoints", is_flag=True,
              help="Keep the checkpoints of a completed run (default: deleted once its record "
              "is written).")
@click.option("--nproc", type=_POSITIVE, default=1, show_default=True,
              help="Processes (GPUs) on this node; launches torchrun.")
@click.option("--dry-run", "--print-config", "dry_run", is_flag=True,
              help="Print the resolved config (YAML) and exit without training.")
def run(method, suite, seed, config_file, overrides, loss, setting, protocol, dataset, level,
        shots, device, data_root, results_dir, work_dir, resume, keep_checkpoints, nproc,
        dry_run):
    """Train (if the method trains) and evaluate one method; writes a run record."""
    sets = list(overrides)
    if loss:
        sets.append(f"loss.name={loss}")
    if setting:
        sets.append(f"method.setting={setting}")
    if protocol:
        sets.append(f"protocol.name={protocol}")
    if dataset:
        sets.append(f"protocol.dataset={dataset}")
    if shots is not None:
        sets.append(f"protocol.shots={shots}")
    if not dry_run:  # a dry run needs no prepared data; build_config below validates the rest
        check_run_input(method, suite, config_file, sets, seed, level, data_root)
    if nproc > 1 and "LOCAL_RANK" not in os.environ and not dry_run:
        _launch_torchrun(nproc)
        return
    from umlbench.runner import build_config
    from umlbench.runner import run as run_one

    levels = _levels(level, suite, dataset, data_root, protocol)
    for lv in levels:
        lv_sets = sets + ([f"protocol.level={lv}"] if lv is not None else [])
        cfg = build_config(method, suite, config_file, lv_sets, seed=seed, device=device,
                           data_root=data_root)
        if dry_run:
            from umlbench.config import render_config
            from umlbench.runner import method_class

            full_args = method_class(cfg.method)(cfg).config_dict()
            click.echo(render_config(cfg, full_args), nl=False)
            continue
        for record, path in run_one(cfg, results_dir=Path(results_dir) if results_dir else None,
                                    work_dir=Path(work_dir) if work_dir else None,
                                    resume=resume, console=console,
                                    keep_checkpoints=keep_checkpoints):
            if path is not None:
                _print_record(record, path)


def _levels(level, suite, dataset, data_root, protocol):
    if level is None:
        return [None]
    if level == "all":
        from umlbench.protocols.oodml import available_levels

        return available_levels(paths.data_root(data_root), suite, dataset)
    try:
        return [int(level)]
    except ValueError:
        raise UserError(f"--level must be an integer or 'all', got {level!r}") from None


def _launch_torchrun(nproc: int) -> None:
    args = sys.argv[1:]
    cleaned, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        cleaned.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "umlbench", *cleaned]
    console.print("launching: " + " ".join(cmd))
    raise SystemExit(subprocess.call(cmd))


def _print_record(record, path: Path) -> None:
    m = record.metrics
    table = Table(title=f"{record.display_name} ({record.suite}, seed {record.seed})")
    table.add_column("scope")
    keys = ["recall@1", "map@r", "map@1000"]
    for k in keys:
        table.add_column(k, justify="right")
    for scope, vals in list(m["per_dataset"].items()) + [("universal", m["universal"])]:
        table.add_row(scope, *[f"{100 * vals[k]:.2f}" if vals.get(k) is not None else "–"
                               for k in keys])
    hm = m.get("summary", {}).get("harmonic_mean", {})
    table.add_row("harmonic mean", *[f"{100 * hm[k]:.2f}" if hm.get(k) is not None else "–"
                                     for k in keys])
    out.print(table)
    out.print(f"trainable params {record.params['trainable']:,}; "
              f"{record.timings['total_s']:.1f}s; record: {path}")


@cli.command()
@click.option("--methods", required=True,
              help="Comma-separated entries: name or name:key=value:... "
              "(e.g. puma,finetune:loss.name=arcface).")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--suite", default="mini", show_default=True)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Overrides applied to every job.")
@click.option("--executor", type=click.Choice(["local", "slurm", "submitit-local"]),
              default="local", show_default=True)
@click.option("--slurm", "slurm_opts", multiple=True, metavar="KEY=VALUE",
              help="submitit/SLURM parameters, e.g. --slurm partition=gpu --slurm gpus_per_node=1")
@click.option("--folder", type=click.Path(file_okay=False), default="sweeps", show_default=True,
              help="submitit logs.")
@click.option("--wait", is_flag=True, help="With submitit: wait for the jobs and report.")
@click.option("--rerun", is_flag=True, help="Run jobs that already have a completed record.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@_output_dirs
@click.option("--keep-checkpoints", is_flag=True,
              help="Keep the checkpoints of completed runs.")
def sweep(methods, seeds, suite, config_file, overrides, executor, slurm_opts, folder, wait,
          rerun, data_root, results_dir, work_dir, keep_checkpoints):
    """Run a grid of methods x seeds, locally or on SLURM via submitit."""
    import yaml

    from umlbench.data.registry import suite_datasets
    from umlbench.methods import METHODS
    from umlbench.sweep import parse_grid
    from umlbench.sweep import sweep as run_sweep

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if not seed_list or min(seed_list) < 0:
        raise UserError(f"--seeds must be integers >= 0, got {seeds!r}")
    suite_datasets(suite)
    jobs = parse_grid([m.strip() for m in methods.split(",") if m.strip()], seed_list,
                      list(overrides), suite=suite, config_file=config_file,
                      data_root=data_root, results_dir=results_dir, work_dir=work_dir,
                      keep_checkpoints=keep_checkpoints)
    for name in dict.fromkeys(job.method for job in jobs):
        METHODS.check(name)
    slurm = {}
    for item in slurm_opts:
        key, _, value = item.partition("=")
        slurm[key] = yaml.safe_load(value)
    out = run_sweep(jobs, executor, Path(folder), slurm, skip_done=not rerun,
                    echo=console.print)
    if executor != "local":
        if wait:
            for job in out:
                console.print(f"{job.job_id}: {job.result()}")
        return
    console.print(f"{len(out)} records written")


@cli.command()
@click.argument("embeddings", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--metrics", default=None,
              help="Comma-separated metric names (default: all).")
@click.option("--backend", default=None,
              help="Search backend: torch (default), torch-fp32, faiss-cpu or faiss-gpu; all "
                   "give the same exact scores.")
def evaluate(embeddings, as_json, device, metrics, backend):
    """Score saved embeddings (.npz: embeddings, labels, datasets[, is_query, is_gallery])."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from umlbench.evaluate_file import evaluate_npz, json_ready

    with Progress(TextColumn("similarity blocks"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("search", total=None)
        res = evaluate_npz(Path(embeddings), device=device,
                           metrics=metrics.split(",") if metrics else None, backend=backend,
                           progress=lambda done, total: progress.update(task, completed=done,
                                                                        total=total))
    if as_json:
        click.echo(json.dumps(json_ready(res.to_dict()), indent=2, allow_nan=False))
        return
    table = Table(title=f"{embeddings} ({res.backend}, {res.seconds:.1f}s)")
    names = [k for k in res.universal if not k.startswith("num_")]
    table.add_column("scope")
    for k in names:
        table.add_column(k, justify="right")
    table.add_column("excluded", justify="right")
    for scope, vals in list(res.per_dataset.items()) + [("universal", res.universal)]:
        table.add_row(scope, *[_fmt(vals.get(k)) for k in names],
                      str(vals.get("num_excluded_queries", 0)))
    out.print(table)
    if res.per_dataset:
        out.print(f"harmonic mean of per-dataset {res.summary_metric} "
                  f"{_fmt(res.harmonic_mean)}, arithmetic mean {_fmt(res.arithmetic_mean)}")


def _fmt(v) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.2f}"


@cli.command()
@click.option("--method", required=True)
@click.option("--backbone", default=None, help="Any timm model (default: the suite's).")
@click.option("--suite", default="uml", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--json", "as_json", is_flag=True)
def params(method, backbone, suite, overrides, as_json):
    """Trainable parameters of a method, and the ratio to fully fine-tuned models."""
    from umlbench.data.registry import suite_datasets
    from umlbench.params import parameter_report

    rep = parameter_report(method, suite, backbone, overrides)
    if as_json:
        click.echo(json.dumps(rep, indent=2))
        return
    table = Table(title=f"{rep['display_name']} on {rep['backbone']} ({suite})")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for group, n in rep["groups"].items():
        table.add_row(f"trainable: {group}", f"{n:,}")
    table.add_row("[bold]trainable total[/]", f"[bold]{rep['trainable']:,}[/]")
    table.add_row(f"loss proxies ({rep['num_classes']:,} classes; not counted)",
                  f"{rep['proxies']:,}")
    table.add_row("whole model", f"{rep['total']:,}")
    table.add_row("one fully fine-tuned backbone + head", f"{rep['full_finetune_one']:,}")
    n = len(suite_datasets(suite))
    table.add_row(f"{n} dataset-specific fine-tuned models", f"{rep['full_finetune_specific']:,}")
    out.print(table)
    out.print(f"{rep['vs_specific']:.1f}x fewer trainable parameters than {n} dataset-specific "
              f"models; {rep['vs_unified']:.1f}x fewer than one unified fine-tuned model")


@cli.command()
@click.argument("record", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-root", type=click.Path(file_okay=False), default=None, cls=PathHelpOption,
              help="Data root (default: $UMLBENCH_DATA or ~/.cache/umlbench; now {data}).")
@click.option("--device", default=None, help="Override the record's device (auto, cpu, cuda).")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              cls=PathHelpOption,
              help="The new record goes to DIR/<suite>/<run id>.json (default DIR: {results}).")
def reproduce(record, data_root, device, results_dir):
    """Rerun RECORD with its exact config and seed; print the metric differences.

    Exits with status 1 when a metric differs from the original record."""
    from umlbench.reproduce import reproduce as rerun

    rep = rerun(record, data_root=data_root, device=device,
                results_dir=Path(results_dir) if results_dir else None, console=console)
    queries = ("per-query outcomes: none in the original record (written before schema 3)"
               if rep.per_query is None else
               "per-query outcomes identical" if not rep.per_query else
               f"per-query outcomes differ in {len(rep.per_query)} scope/metric pair(s)")
    if rep.identical:
        click.echo(f"identical: all {rep.compared} metrics equal the original; {queries}; "
                   f"record: {rep.path}")
        return
    rows = []
    for key, was, now in rep.differences:
        numbers = isinstance(was, (int, float)) and isinstance(now, (int, float))
        rows.append([key, _num(was), _num(now), f"{now - was:+.6g}" if numbers else "–"])
    for key, differ, n in rep.per_query or []:
        rows.append([key, "–", "–", f"{differ} of {n} queries" if n else "missing or other "
                     "queries"])
    out.print(plain_table(f"{len(rep.differences)} of {rep.compared} metrics differ; {queries}",
                          ["metric", "original", "reproduced", "difference"], rows))
    click.echo(f"record: {rep.path}")
    click.get_current_context().exit(1)


def _num(v) -> str:
    return "–" if v is None else f"{v:.6g}"
