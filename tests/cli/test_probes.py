"""Every bad input gets one line ``error: ...``, exit status 2, no traceback, and writes nothing.

The probe list has two parts. Usage probes are generated from the click command tree, so a new
command or option joins automatically: an unknown option for every command, an invalid value for
every choice, a value below the minimum of every integer range, a word for every integer, and
each required option left out. Input probes are the semantic mistakes click cannot see (unknown
names, selectors a protocol ignores, files that are not what they claim).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from umlbench.cli import cli

# A valid value for each required parameter, so that a probe fails on exactly one thing. A new
# required parameter without an entry here fails test_every_required_parameter_has_a_value.
VALID = {"method": "puma", "methods": "puma", "kind": "datasets", "out_file": "{tmp}/fig.png",
         "embeddings": "{tmp}/missing.npz", "record": "{tmp}/missing.json",
         "paths_": "{tmp}/empty", "a": "{tmp}/missing.json", "b": "{tmp}/missing.json"}


def _commands() -> dict[str, click.Command]:
    return dict(sorted(cli.commands.items()))


def _required(cmd: click.Command, skip: str | None = None) -> list[str]:
    args: list[str] = []
    for p in cmd.params:
        if not p.required or p.name == skip:
            continue
        value = VALID.get(p.name)
        if value is None and isinstance(p.type, click.Choice):
            value = p.type.choices[0]
        if isinstance(p, click.Argument):
            args.append(value)
        else:
            args += [p.opts[0], value]
    return args


def _usage_probes() -> list[tuple[str, list[str]]]:
    probes = []
    for name, cmd in _commands().items():
        probes.append((f"{name} unknown option", [name, *_required(cmd), "--no-such-option"]))
        for p in cmd.params:
            if p.name == "help":
                continue
            base = [name, *_required(cmd, skip=p.name if p.required else None)]
            flag = [p.opts[0]] if isinstance(p, click.Option) else []
            if p.required:
                probes.append((f"{name} without {p.name}",
                               [name, *_required(cmd, skip=p.name)]))
            if isinstance(p.type, click.Choice):
                probes.append((f"{name} {p.name} bad choice", [*base, *flag, "no-such-choice"]))
            if isinstance(p.type, click.IntRange) and p.type.min is not None:
                probes.append((f"{name} {p.name} below min", [*base, *flag, str(p.type.min - 1)]))
            if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
                probes.append((f"{name} {p.name} not a number", [*base, *flag, "many"]))
    probes.append(("no such command", ["no-such-command"]))
    return probes


# The mistakes from issue 16's probe table, and their relatives.
INPUT_PROBES = [
    ("run negative seed", ["run", "--method", "puma", "--seed", "-1"]),
    ("run negative seed via --set", ["run", "--method", "puma", "--set", "seed=-1"]),
    ("prepare-data negative seed", ["prepare-data", "--seed", "-1"]),
    ("run unknown method", ["run", "--method", "nope"]),
    ("run --dataset under uml", ["run", "--method", "puma", "--dataset", "nosuch"]),
    ("run --level under uml", ["run", "--method", "puma", "--level", "99"]),
    ("run --shots under oodml", ["run", "--method", "puma", "--protocol", "oodml",
                                 "--dataset", "mini-cub", "--level", "1", "--shots", "2"]),
    ("run unknown dataset for oodml", ["run", "--method", "puma", "--protocol", "oodml",
                                       "--dataset", "nosuch", "--level", "1"]),
    ("run level zero", ["run", "--method", "puma", "--protocol", "oodml",
                        "--dataset", "mini-cub", "--level", "0"]),
    ("run level not a number", ["run", "--method", "puma", "--protocol", "oodml",
                                "--dataset", "mini-cub", "--level", "hard"]),
    ("run unknown protocol", ["run", "--method", "puma", "--protocol", "nosuch"]),
    ("run unknown suite", ["run", "--method", "puma", "--suite", "nosuch"]),
    ("run unknown config key", ["run", "--method", "puma", "--set", "train.epoch=1"]),
    ("run malformed --set", ["run", "--method", "puma", "--set", "oops"]),
    ("run before prepare-data", ["run", "--method", "off-the-shelf"]),
    ("run dataset outside the suite", ["run", "--method", "puma",
                                       "--set", "data.datasets=[cub]"]),
    ("run missing config file", ["run", "--method", "puma", "--config", "{tmp}/none.yaml"]),
    ("prepare-data image size 0", ["prepare-data", "--image-size", "0"]),
    ("prepare-data image size -3", ["prepare-data", "--image-size", "-3"]),
    ("prepare-data unknown dataset", ["prepare-data", "--dataset", "imagenet"]),
    ("prepare-data suite and dataset", ["prepare-data", "--suite", "mini", "--dataset", "cub"]),
    ("prepare-splits unknown dataset", ["prepare-splits", "--dataset", "nosuch"]),
    ("leaderboard xml", ["leaderboard", "--format", "xml"]),
    ("leaderboard unknown suffix", ["leaderboard", "--out", "{tmp}/board.pdf"]),
    ("leaderboard no results", ["leaderboard", "--results-dir", "{tmp}/empty"]),
    ("leaderboard paper view of ooDML", ["leaderboard", "--view", "paper", "--protocol",
                                         "oodml"]),
    ("plot pdf", ["plot", "--kind", "datasets", "--out", "{tmp}/fig.pdf"]),
    ("plot no results", ["plot", "--kind", "datasets", "--out", "{tmp}/fig.png",
                         "--results-dir", "{tmp}/empty"]),
    ("evaluate random bytes", ["evaluate", "{tmp}/random.npz"]),
    ("evaluate missing file", ["evaluate", "{tmp}/missing.npz"]),
    ("sweep negative seed", ["sweep", "--methods", "puma", "--seeds", "-1"]),
    ("sweep unknown method", ["sweep", "--methods", "nope", "--seeds", "0"]),
    ("info unknown suite", ["info", "--suite", "nosuch"]),
    ("params unknown method", ["params", "--method", "nope"]),
    ("leaderboard unknown --group-by", ["leaderboard", "--group-by", "config,seed"]),
    ("validate missing path", ["validate", "{tmp}/missing"]),
    ("reproduce missing record", ["reproduce", "{tmp}/missing.json"]),
    ("reproduce random bytes", ["reproduce", "{tmp}/random.npz"]),
]

PROBES = _usage_probes() + INPUT_PROBES


@pytest.fixture()
def sandbox(tmp_path, monkeypatch) -> Path:
    """An empty data root, work dir and current directory; random bytes named like an .npz."""
    for sub in ("data", "work", "cwd", "empty"):
        (tmp_path / sub).mkdir()
    (tmp_path / "random.npz").write_bytes(os.urandom(300))
    monkeypatch.setenv("UMLBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("UMLBENCH_WORK", str(tmp_path / "work"))
    monkeypatch.delenv("UMLBENCH_RESULTS", raising=False)
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_every_required_parameter_has_a_value():
    for name, cmd in _commands().items():
        for p in cmd.params:
            if p.required and not isinstance(p.type, click.Choice):
                assert p.name in VALID, f"add a valid value for {name} {p.name} to VALID"


def test_probe_list_covers_every_command():
    assert {args[0] for _, args in _usage_probes() if args[0] in cli.commands} == set(cli.commands)


@pytest.mark.parametrize("args", [a for _, a in PROBES], ids=[n for n, _ in PROBES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(sandbox, args):
    args = [a.format(tmp=sandbox) for a in args]
    before = _files(sandbox)
    res = CliRunner().invoke(cli, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"traceback: {res.exception!r}")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output and "Usage:" not in res.output
    assert res.stdout == ""
    assert _files(sandbox) == before, "a failed command left files behind"


def test_usage_error_names_the_command_and_its_help(sandbox):
    res = CliRunner().invoke(cli, ["leaderboard", "--format", "xml"])
    assert res.stderr == ("error: umlbench leaderboard: invalid value for '--format': 'xml' is "
                          "not one of 'markdown', 'latex', 'csv', 'html', 'json' "
                          "(see `umlbench leaderboard --help`)\n")


def test_names_and_mistakes_never_import_torch(sandbox):
    """`list` and mistakes in names or flags answer without torch/timm/faiss (the startup
    benchmark, benchmarks/test_startup.py, measures how long they take)."""
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from umlbench.cli import cli\n"
        "for args in (['list'], ['run', '--method', 'nope'], ['run', '--method', 'puma',"
        " '--dataset', 'x'], ['run', '--method', 'puma', '--set', 'train.epoch=1'],"
        " ['evaluate', 'x.npz'], ['leaderboard', '--format', 'xml'], ['--help'],"
        " ['run', '--help']):\n"
        "    CliRunner().invoke(cli, args)\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'faiss', 'sklearn', 'matplotlib')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, check=True)
    assert proc.stdout.strip() == ""
