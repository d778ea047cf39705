"""What the ``umlbench`` commands share: one-line errors for every mistake, options whose help
names the real default paths, the run-input check that needs no torch, plain wrapped tables and
atomic text output. :mod:`umlbench.cli` holds the commands themselves."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.table import Table

from umlbench import paths
from umlbench.errors import UserError

__all__ = ["Group", "OneLineError", "PathHelpOption", "check_run_input", "one_line",
           "plain_table", "write_text"]


class OneLineError(click.ClickException):
    """A usage error shown as README promises: one line ``error: ...``, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def one_line(exc: click.UsageError) -> OneLineError:
    # click prints "Usage: ...", a hint and "Error: ..." on three lines; keep the message and
    # name the command whose --help explains it.
    message = " ".join(exc.format_message().split()).rstrip(".")
    path = exc.ctx.command_path if exc.ctx is not None else "umlbench"
    message = message[:1].lower() + message[1:]
    return OneLineError(f"{path}: {message} (see `{path} --help`)")


class Group(click.Group):
    """Turns :class:`UserError` and click's usage errors into ``error: <message>`` on one line
    and exit status 2; an interrupt into one line and 130."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # bare `umlbench`: the help text itself, as click shows it
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line(exc) from None
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a path the user gave cannot be read or written
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as exc:
            click.echo(f"interrupted: {exc}" if str(exc) else "interrupted", err=True)
            ctx.exit(130)


class PathHelpOption(click.Option):
    """An option whose help names a default location from :mod:`umlbench.paths` (``{results}``,
    ``{work}``, ``{data}``), resolved when the help is shown, so help and behaviour agree."""

    def get_help_record(self, ctx: click.Context):
        record = super().get_help_record(ctx)
        if record is None:
            return None
        return record[0], record[1].format(results=_shown(paths.default_results_dir()),
                                           work=_shown(paths.default_work_dir()),
                                           data=_shown(paths.data_root()))


def _shown(path: Path) -> str:
    """A path as a user would type it: relative ones from the current directory (./results)."""
    return str(path) if path.is_absolute() or str(path).startswith(".") else f"./{path}"


def plain_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    """A borderless table whose first column never wraps and whose text wraps (never cut) to
    the terminal width."""
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  pad_edge=False, show_header=True, header_style="dim")
    keep = [i for i in range(len(header)) if i == 0 or any(r[i] for r in rows)]
    for i in keep:
        table.add_column(header[i], no_wrap=i == 0, overflow="fold")
    for row in rows:
        table.add_row(*[row[i] for i in keep])
    return table


def check_run_input(method: str, suite: str, config_file: str | None, sets: list[str],
                     seed: int | None, level: str | None, data_root: str | None = None) -> None:
    """Every mistake that needs no method code (names, config keys outside ``method.*``,
    protocol selectors, datasets not prepared), found before torch is imported;
    ``build_config`` and the protocol check it all again with the method's own
    hyper-parameters."""
    from umlbench.methods import METHODS

    METHODS.check(method)
    from umlbench.config import (SUITE_CONFIG_DIR, RunConfig, from_dict, load_yaml, merge,
                                 parse_overrides)
    from umlbench.data.registry import suite_datasets
    from umlbench.protocols.base import check_protocol_config

    suite_datasets(suite)
    suite_file = SUITE_CONFIG_DIR / f"{suite}.yaml"
    layers = [(str(suite_file), load_yaml(suite_file))] if suite_file.exists() else []
    if config_file:
        layers.append((str(config_file), load_yaml(config_file)))
    layers.append(("--set", parse_overrides(sets)))
    merged: dict = {}
    for source, layer in layers:
        layer = {k: v for k, v in layer.items() if k not in ("method", "method_args")}
        from_dict(RunConfig, merge({"method": method}, layer), source=source)
        merged = merge(merged, layer)
    if seed is not None:
        merged["seed"] = seed
    cfg = from_dict(RunConfig, merge({"method": method}, merged), source="config")
    if level is not None and level != "all":
        try:
            int(level)
        except ValueError:
            raise UserError(f"--level must be an integer or 'all', got {level!r}") from None
    protocol = cfg.protocol if level is None else _with_level(cfg.protocol, level)
    check_protocol_config(protocol, suite)
    needed = [protocol.dataset] if protocol.dataset else list(cfg.data.datasets or
                                                             suite_datasets(suite))
    root = paths.data_root(data_root or cfg.data_root)
    for name in needed:
        _check_prepared(root, name, suite)


def _check_prepared(root: Path, name: str, suite: str) -> None:
    """The quick form of :func:`umlbench.data.prepare.load_prepared`'s check (same message),
    so that forgetting `prepare-data` is answered at once; the full check runs at load time."""
    from umlbench import const as C
    from umlbench.data.registry import suite_datasets

    if name not in suite_datasets(suite):
        raise UserError(f"dataset {name!r} is not in suite {suite!r}; known: "
                        + ", ".join(suite_datasets(suite)))
    if not (root / name / C.READY_FILE).is_file():
        hint = (f"umlbench prepare-data --suite {suite}" if suite == "mini"
                else f"umlbench prepare-data --dataset {name}")
        raise UserError(f"dataset {name!r} is not prepared under {root}; run `{hint}`")


def _with_level(protocol, level: str):
    import dataclasses

    return dataclasses.replace(protocol, level=1 if level == "all" else int(level))


def write_text(path: Path, text: str) -> None:
    """Write atomically (temporary file, then rename), creating missing parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(text)
    part.replace(path)
