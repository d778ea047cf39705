"""The ``umlbench`` command line. Each command parses its input and calls one library function.

Startup stays cheap: torch, timm, faiss and matplotlib are imported inside the commands that use
them, after the input is checked, so `umlbench list`, `--help` and every mistake in a name or a
flag answer in well under a second (``benchmarks/test_startup.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from umlbench import paths
from umlbench.cli_util import Group, PathHelpOption, check_run_input, plain_table, write_text
from umlbench.errors import UserError

console = Console(stderr=True)
out = Console()


_SEED = click.IntRange(min=0)
_POSITIVE = click.IntRange(min=1)


@click.group(name="umlbench", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="umlbench")
def cli() -> None:
    """umlbench: benchmark suite and leaderboard for Unified Metric Learning."""


# ---- data ------------------------------------------------------------------------------------


@cli.command("prepare-data")
@click.option("--suite", default=None, help="Suite to prepare: mini (default) or uml.")
@click.option("--dataset", "datasets", multiple=True, help="Prepare only these datasets.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, cls=PathHelpOption,
              help="Data root (default: $UMLBENCH_DATA or ~/.cache/umlbench; now {data}).")
@click.option("--source", default=None,
              help="URL, archive or extracted folder to use instead of the official download.")
@click.option("--image-size", type=click.IntRange(min=8), default=None,
              help="mini: image side (default 32); real datasets: the resized cache's shorter "
                   "side (default 256; implies --cache resized).")
@click.option("--seed", type=_SEED, default=0, show_default=True, help="mini generator seed.")
@click.option("--workers", type=_POSITIVE, default=min(8, os.cpu_count() or 1),
              show_default=True)
@click.option("--cache", "image_source", type=click.Choice(["packed", "resized"]), default=None,
              help="Real datasets: packed (default; the original files in one indexed file, "
                   "full resolution) or resized (decoded uint8 pixels, faster, blurrier crops).")
@click.option("--no-cache", is_flag=True, help="Keep reading the original JPEGs (no cache).")
@click.option("--force", is_flag=True, help="Rebuild datasets that are already prepared.")
def prepare_data(suite, datasets, data_root, source, image_size, seed, workers, image_source,
                 no_cache, force):
    """Prepare a suite or datasets (default: the offline `mini` suite)."""
    from umlbench.data.prepare import check_prepare_args, prepare
    from umlbench.data.registry import DATASETS, suite_datasets

    if datasets and suite:
        raise UserError("give either --suite or --dataset, not both")
    names = list(datasets) or list(suite_datasets(suite or "mini"))
    for n in names:
        DATASETS.get(n)
    check_prepare_args(seed=seed, image_size=image_size, workers=workers)
    if source and len(names) != 1:
        raise UserError("--source applies to one dataset; add --dataset NAME")
    if no_cache and image_source:
        raise UserError("give either --cache or --no-cache, not both")
    if (no_cache or image_source) and any(DATASETS.get(n).generated for n in names):
        raise UserError("--cache/--no-cache apply to real datasets; the mini suite's generated "
                        "images are always stored as uint8 pixels")
    root = paths.data_root(data_root)
    console.print(f"data root: {root}")

    def done(report):
        counts = ", ".join(f"{s} {c['images']} img/{c['classes']} cls"
                           for s, c in report.counts.items())
        verb = "already prepared" if report.status == "skipped" else \
            f"prepared in {report.seconds:.1f}s"
        console.print(f"  {report.name}: {verb} ({counts}; images {report.images})")

    prepare(names, root, seed=seed, image_size=image_size, source=source, workers=workers,
            image_source="files" if no_cache else image_source, force=force, on_done=done)


@cli.command("prepare-splits")
@click.option("--protocol", type=click.Choice(["oodml", "fewshot-train"]), default="oodml",
              show_default=True)
@click.option("--dataset", "datasets", multiple=True, help="Datasets (default: the suite's).")
@click.option("--suite", default="mini", show_default=True)
@click.option("--schedule", type=click.Choice(["official", "fid"]), default=None,
              help="official: the ooDML tables (cub, cars, sop; their default); fid: --levels "
              "splits spaced evenly in FID (every other dataset's default).")
@click.option("--levels", type=_POSITIVE, default=None,
              help="fid schedule: number of levels to keep (default 8; strictly increasing FID).")
@click.option("--removal-rule", type=click.Choice(["official", "monotone"]), default="official",
              show_default=True, help="Class removal: as released (remove when a swap does not "
              "lower the FID) or umlbench's monotone reading (remove when it does not raise it).")
@click.option("--backbone", default=None,
              help="Feature backbone for the FID (default: resnet50.tv_in1k; mini: its ViT).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Local weights for --backbone (machines without a model hub).")
@click.option("--import", "import_file", type=click.Path(), default=None,
              help="Import a published ooDML split pickle instead of building splits; "
                   "fewshot-train: the official few_shot/ folder of PUMA's K-shot subsets.")
@click.option("--source", type=click.Path(file_okay=False), default=None,
              help="--import cars: folder with the devkit's cars_train_annos.mat and "
              "cars_test_annos_withlabels.mat (the pickle names devkit images).")
@click.option("--seed", type=_SEED, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
def prepare_splits(protocol, datasets, suite, schedule, levels, removal_rule, backbone, weights,
                   import_file, source, seed, device, data_root):
    """Build ooDML shift splits (or import the published ones) and write split files."""
    from umlbench.data.registry import DATASETS, suite_datasets

    names = list(datasets) or list(suite_datasets(suite))
    for n in names:
        DATASETS.check(n)
    root = paths.data_root(data_root)
    if protocol == "fewshot-train":
        from umlbench.protocols.fewshot_subsets import import_subsets

        if not import_file:
            raise UserError("--protocol fewshot-train imports the official subsets: "
                            "add --import DIR (the official few_shot/ folder)")
        for res in import_subsets(Path(import_file), root, list(datasets) or None):
            note = (f"; {res['checkpoint_copies']} Jupyter checkpoint copies mapped to their "
                    "originals" if res["checkpoint_copies"] else "")
            console.print(f"  {res['dataset']} {res['shots']}-shot: {res['images']} images "
                          f"({res['distinct']} distinct{note}) -> {res['path']}")
        return
    from umlbench.protocols.oodml import load_splits, prepare_splits as build_splits

    if import_file:
        from umlbench.protocols.oodml_import import import_reference_splits

        if len(names) != 1:
            raise UserError("--import applies to one dataset; add --dataset NAME")
        if Path(import_file).is_dir():
            raise UserError(f"--import {import_file}: ooDML splits are one .pkl file, not a folder")
        written = [import_reference_splits(Path(import_file), root, names[0],
                                           Path(source) if source else None)]
    else:
        if source:
            raise UserError("--source is only read with --import")
        written = []
        for name in names:
            console.print(f"{name}: extracting features and building splits ...")
            written.append(build_splits(root, name, levels=levels, schedule=schedule,
                                        removal_rule=removal_rule, backbone=backbone,
                                        weights=weights, seed=seed, device=device))
    for path in written:
        data = load_splits(root, path.stem)
        fids = ", ".join(f"L{lv['level']} {lv['fid']:.2f}" for lv in data["levels"])
        console.print(f"  {path}: {fids}")
        values = [lv["fid"] for lv in data["levels"]]
        if any(b <= a for a, b in zip(values, values[1:])):
            click.echo(f"warning: {path.stem}: the levels' FIDs do not rise strictly (the "
                       "official procedure does not guarantee it); --schedule fid picks "
                       "levels by FID", err=True)


@cli.command("list")
@click.argument("kind", required=False, default="all",
                type=click.Choice(["all", "datasets", "suites", "methods", "protocols",
                                   "losses", "metrics"]))
def list_(kind):
    """List datasets, suites, methods, protocols, losses and metrics."""
    from umlbench.data.info import dataset_catalogue
    from umlbench.data.registry import SUITES
    from umlbench.methods import METHODS
    from umlbench.protocols.base import PROTOCOL_SELECTORS, PROTOCOLS
    from umlbench.registry import source_summary
    from umlbench.train.registry import LOSSES

    # Every registry answers from its index: nothing here imports torch.
    sections = {
        "suites": (["suite", "datasets"], [[s, ", ".join(v)] for s, v in SUITES.items()]),
        "datasets": dataset_catalogue(),
        "methods": (["method", "description"], [[n, METHODS.summary(n)] for n in METHODS]),
        "protocols": (["protocol", "selectors", "description"],
                      [[p, " ".join(f"--{f}" for f in PROTOCOL_SELECTORS.get(p, ())),
                        source_summary(target.split(":")[0]).replace("``", "")]
                       for p, target in PROTOCOLS.items()]),
        "losses": (["loss", "description"], [[n, LOSSES.summary(n)] for n in LOSSES]),
        "metrics": (["metric", "description"], [
            ["recall@K", "a same-class item among the K nearest (K = 1, 2, 4, 8)"],
            ["precision@1", "the nearest item has the query's class"],
            ["r_precision", "precision among the R nearest (R = same-class items)"],
            ["map@r", "mean average precision at R"],
            ["map@1000", "ooDML's mean average precision at 1000"],
            ["nmi", "normalised mutual information of a k-means clustering"],
            ["f1", "pairwise F1 of the same clustering"]]),
    }
    for name, (header, rows) in sections.items():
        if kind in ("all", name):
            out.print(plain_table(name, header, rows))


@cli.command()
@click.option("--data-root", type=click.Path(file_okay=False), default=None, cls=PathHelpOption,
              help="Data root (default: $UMLBENCH_DATA or ~/.cache/umlbench; now {data}).")
@click.option("--suite", default=None, help="Only this suite.")
def info(data_root, suite):
    """What is prepared where: counts per split, disk use, source; checkpoint disk use."""
    from umlbench.data.info import checkpoint_usage, dataset_status, human_size
    from umlbench.data.registry import suite_datasets

    if suite is not None:
        suite_datasets(suite)
    root = paths.data_root(data_root)
    table = Table(title=f"datasets under {root}", title_justify="left", pad_edge=False)
    for col in ("dataset", "ready", "train img/cls", "test img/cls", "disk", "source"):
        table.add_column(col, no_wrap=col in ("dataset", "ready", "disk"), overflow="fold",
                         justify="right" if col == "disk" else "left")
    for row in dataset_status(root, suite):
        table.add_row(*row)
    out.print(table)
    out.print("test img/cls: query | gallery where a dataset has both (In-shop)", style="dim")
    work = paths.default_work_dir(data_root)
    runs = checkpoint_usage(work)
    total = sum(size for _, size, _ in runs)
    out.print(f"checkpoints: {len(runs)} run folder{'s' if len(runs) != 1 else ''}, "
              f"{human_size(total)} in {work}", markup=False, highlight=False)
    if runs:
        ck = Table(box=None, pad_edge=False, header_style="dim")
        ck.add_column("run (resume with --resume; delete when no longer needed)",
                      overflow="fold")
        ck.add_column("size", justify="right", no_wrap=True)
        ck.add_column("last written", no_wrap=True)
        for name, size, when in runs:
            ck.add_row(name, human_size(size), when)
        out.print(ck)


# ---- runs --------------------------------------------------------------------------------


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
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              cls=PathHelpOption,
              help="Records go to DIR/<suite>/<run id>.json (default DIR: {results}).")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None, cls=PathHelpOption,
              help="Checkpoints go to DIR/<run>-<config hash>/ until the run completes "
              "(default DIR: <data root>/runs, now {work}).")
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
    from umlbench.runner import build_config, run as run_one

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
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              cls=PathHelpOption,
              help="Records go to DIR/<suite>/<run id>.json (default DIR: {results}).")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None, cls=PathHelpOption,
              help="Checkpoints go to DIR/<run>-<config hash>/ until each run completes "
              "(default DIR: <data root>/runs, now {work}).")
@click.option("--keep-checkpoints", is_flag=True,
              help="Keep the checkpoints of completed runs.")
def sweep(methods, seeds, suite, config_file, overrides, executor, slurm_opts, folder, wait,
          rerun, data_root, results_dir, work_dir, keep_checkpoints):
    """Run a grid of methods x seeds, locally or on SLURM via submitit."""
    import yaml

    from umlbench.data.registry import suite_datasets
    from umlbench.methods import METHODS
    from umlbench.sweep import parse_grid, sweep as run_sweep

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
    return "–" if v is None or v != v else f"{100 * v:.2f}"


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


# ---- results ------------------------------------------------------------------------------


_RESULTS_HELP = ("Folder of run records, searched recursively, with reported rows in "
                 "DIR/reference/ (default: {results}).")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "csv", "html", "json"]),
              default=None, help="Output format (default: a table in the terminal).")
@click.option("--metric", default="recall@1", show_default=True,
              help="Any recorded metric: recall@K (e.g. recall@10), map@r, map@1000, ...")
@click.option("--view", type=click.Choice(["metric", "paper"]), default="metric",
              show_default=True,
              help="metric: --metric on every dataset; paper: each dataset's Recall@K list as "
              "the literature reports it (SOP 1/10/100/1000, In-shop 1/10/20/30, others "
              "1/2/4/8; universal and HM at R@1).")
@click.option("--std", "show_std", is_flag=True,
              help="Terminal table: show the std over seeds (always in the file formats).")
@click.option("--suite", default=None)
@click.option("--protocol", default="uml", show_default=True)
@click.option("--dataset", default=None, help="oodml: only this dataset.")
@click.option("--method", "methods", multiple=True, help="Only these methods.")
@click.option("--sort", default=None, help="Column to sort by (default: harmonic mean).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None)
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              cls=PathHelpOption, help=_RESULTS_HELP)
@click.option("--no-reference", is_flag=True, help="Hide reported (non-measured) rows.")
@click.option("--group-by", "group_by", default="config,data", show_default=True,
              help="What runs must share to be one row (comma-separated: config, data, code; "
              "'name' pools every run of a display name).")
def leaderboard(fmt, metric, view, show_std, suite, protocol, dataset, methods, sort, out_file,
                results_dir, no_reference, group_by):
    """Aggregate run records into a leaderboard table."""
    from umlbench.results.grouping import parse_group_by
    from umlbench.results.leaderboard import build_board, build_paper_board, render
    from umlbench.results.terminal import to_rich
    from umlbench.results.store import load_store

    grouping = parse_group_by(group_by)
    if out_file and fmt is None:
        fmt = _format_from_suffix(out_file)
        if fmt not in ("markdown", "latex", "csv", "html", "json"):
            raise UserError(f"cannot tell the format of {out_file}; add --format or use .md, "
                            ".tex, .csv, .html or .json")
    df = load_store(Path(results_dir) if results_dir else paths.default_results_dir(),
                    include_reference=not no_reference,
                    warn=lambda m: click.echo(f"warning: {m}", err=True))
    if view == "paper":
        board = build_paper_board(df, suite=suite, protocol=protocol,
                                  methods=list(methods) or None, sort=sort, group_by=grouping)
    else:
        board = build_board(df, metric, suite=suite, protocol=protocol,
                            methods=list(methods) or None, sort=sort, dataset=dataset,
                            group_by=grouping)
    for note in board.notes + board.footnotes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if fmt is None:
        out.print(to_rich(board, width=out.width, std=show_std))
        return
    text = render(board, fmt)
    if out_file:
        write_text(Path(out_file), text)
        console.print(f"wrote {out_file}", markup=False, highlight=False)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.option("--kind", type=click.Choice(["datasets", "params", "shift", "fewshot"]),
              required=True, help="datasets: bars per dataset; params: HM vs trainable params; "
              "shift: metric vs ooDML level; fewshot: metric vs shots.")
@click.option("--metric", default="recall@1", show_default=True)
@click.option("--suite", default=None)
@click.option("--dataset", default=None, help="shift/fewshot: only this dataset.")
@click.option("--method", "methods", multiple=True,
              help="Only these methods (method id or row label; repeatable).")
@click.option("--ablations", is_flag=True,
              help="Also draw ablations (rows labelled 'Name (variant)' beside a 'Name' row of "
              "the same method); hidden by default unless named with --method.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True,
              help="Output file; .png or .svg (both written when the suffix is omitted).")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              cls=PathHelpOption, help=_RESULTS_HELP)
@click.option("--no-reference", is_flag=True, help="Hide reported (non-measured) rows.")
def plot(kind, metric, suite, dataset, methods, ablations, out_file, results_dir, no_reference):
    """Publication-quality figures from run records (PNG/SVG)."""
    from umlbench.results.grouping import deduplicate, mixed_data
    from umlbench.results.plots import check_target, plot_kind
    from umlbench.results.store import load_store

    check_target(Path(out_file))
    df = load_store(Path(results_dir) if results_dir else paths.default_results_dir(),
                    include_reference=not no_reference,
                    warn=lambda m: click.echo(f"warning: {m}", err=True))
    df, dropped = deduplicate(df)
    if dropped:
        console.print(f"note: {len(dropped)} duplicate record(s) set aside (same config, data "
                      f"and seed as a newer one): {', '.join(dropped[:3])}"
                      + (", …" if len(dropped) > 3 else ""), markup=False)
    for name in mixed_data(df):
        console.print(f"note: {name} pools runs of different data identities; "
                      "`umlbench leaderboard` shows them apart", markup=False)
    written = plot_kind(df, kind, Path(out_file), metric=metric, suite=suite, dataset=dataset,
                        methods=list(methods) or None, ablations=ablations)
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)


@cli.command()
@click.argument("paths_", metavar="PATH...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
def validate(paths_):
    """Check run records (*.json) and reference rows (*.yaml, *.csv) against their schemas.

    Prints one line per problem; exits with status 1 if there is any."""
    from umlbench.results.validate import validate_paths

    report = validate_paths(paths_)
    for line in report.problems:
        click.echo(line)
    click.echo(f"{report.files} file(s) checked, {len(report.problems)} problem(s)", err=True)
    if not report.ok:
        click.get_current_context().exit(1)


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
    if rep.identical:
        click.echo(f"identical: all {rep.compared} metrics equal the original; "
                   f"record: {rep.path}")
        return
    rows = []
    for key, was, now in rep.differences:
        numbers = isinstance(was, (int, float)) and isinstance(now, (int, float))
        rows.append([key, _num(was), _num(now), f"{now - was:+.6g}" if numbers else "–"])
    out.print(plain_table(f"{len(rep.differences)} of {rep.compared} metrics differ",
                          ["metric", "original", "reproduced", "difference"], rows))
    click.echo(f"record: {rep.path}")
    click.get_current_context().exit(1)


def _num(v) -> str:
    return "–" if v is None else f"{v:.6g}"


def _format_from_suffix(path: str) -> str:
    suffix = Path(path).suffix.lstrip(".")
    return {"md": "markdown", "tex": "latex", "htm": "html"}.get(suffix, suffix)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="umlbench")


if __name__ == "__main__":  # pragma: no cover
    main()
