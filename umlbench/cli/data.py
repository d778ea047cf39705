"""Commands that prepare and describe data: prepare-data, prepare-splits, list, info."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import click
from rich.table import Table

from umlbench import paths
from umlbench.cli.base import _POSITIVE, _SEED, cli, console, out
from umlbench.cli_util import PathHelpOption, plain_table
from umlbench.errors import UserError


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
    if source and len(names) != 1:
        raise UserError("--source applies to one dataset; add --dataset NAME")
    check_prepare_args(seed=seed, image_size=image_size, workers=workers, source=source)
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
@click.option("--removal-pairing", type=click.Choice(["aligned", "released"]), default="aligned",
              show_default=True, help="Where removal starts: the last swap split with its own "
              "class means, or as the released create_dataset_splits.py (the class means after "
              "one more swap iteration paired with the names of key 48).")
@click.option("--class-order", type=click.Choice(["official", "label"]), default=None,
              help="Each side's starting class order: official (class names sorted as text, as "
              "split_helpers; the official schedules' default) or label (the fid schedule's).")
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
def prepare_splits(protocol, datasets, suite, schedule, levels, removal_rule, removal_pairing,
                   class_order, backbone, weights, import_file, source, seed, device, data_root):
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
    from umlbench.protocols.oodml import load_splits
    from umlbench.protocols.oodml import prepare_splits as build_splits

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
                                        removal_rule=removal_rule,
                                        removal_pairing=removal_pairing,
                                        class_order=class_order, backbone=backbone,
                                        weights=weights, seed=seed, device=device))
    for path in written:
        data = load_splits(root, path.stem)
        fids = ", ".join(f"L{lv['level']} {lv['fid']:.2f}" for lv in data["levels"])
        console.print(f"  {path}: {fids}")
        values = [lv["fid"] for lv in data["levels"]]
        if any(b <= a for a, b in itertools.pairwise(values)):
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
