"""Every numeric config value is checked before any work starts (issue 22, section 3).

The probe walks every numeric field of every shipped config (suite x method x protocol, and
every loss of ``finetune``): the run config's dataclasses, the method's ``Config``, the
``lr_scales`` entries and the loss factory's keyword arguments. A field without a declared range
fails the probe (declare it with ``umlbench.config.num`` or ``ranged``; see config.py's
docstring). Every declared range is then fed values just outside it, nan, inf and a wrong type
through ``umlbench run --dry-run --set KEY=VALUE``: exactly one ``error:`` line naming the key,
the value and the allowed range, exit status 2, nothing written.
"""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from umlbench.cli import cli
from umlbench.config import RunConfig, from_dict, numeric_fields
from umlbench.errors import UserError
from umlbench.methods import METHODS
from umlbench.protocols.base import PROTOCOLS
from umlbench.runner import build_config, method_class
from umlbench.train.losses import loss_arguments
from umlbench.train.registry import LOSSES

SUITES = ("mini", "uml")
# Selectors a protocol needs before its config resolves (the rest are optional).
PROTOCOL_SETS = {"fewshot-train": ["protocol.shots=2"]}


def shipped_configs() -> list[tuple[str, str, list[str]]]:
    """(method, suite, --set items) of every shipped config combination."""
    out = []
    # The built-in index only: a plugin another test installs is not a shipped config.
    for method in sorted(METHODS._lazy):
        for suite in SUITES:
            for protocol in PROTOCOLS:
                sets = [f"protocol.name={protocol}", *PROTOCOL_SETS.get(protocol, [])]
                out.append((method, suite, sets))
                if method == "finetune":  # every loss's config file (configs/loss/*.yaml)
                    out += [(method, suite, [*sets, f"loss.name={loss}"])
                            for loss in sorted(LOSSES._lazy)]
    return out


def _walk(cls, value, prefix: str):
    """(key, is integer, range, kind) of every numeric field below dataclass ``cls``; kind is
    scalar, tuple, or dict (one key per entry of the resolved mapping)."""
    import dataclasses

    for f in dataclasses.fields(cls):
        sub = getattr(value, f.name)
        if dataclasses.is_dataclass(sub):
            yield from _walk(type(sub), sub, f"{prefix}{f.name}.")
    for name, (integer, rng) in numeric_fields(cls).items():
        sub = getattr(value, name)
        if isinstance(sub, dict):
            for k in sub:
                yield f"{prefix}{name}.{k}", integer, rng, "scalar"
        else:
            yield f"{prefix}{name}", integer, rng, "tuple" if isinstance(sub, tuple) else "scalar"


def numeric_keys(method: str, suite: str, sets: list[str]):
    """(owner, key, is integer, range, kind) of every numeric field of one resolved config;
    owner tells apart same-named keys of different method configs and losses."""
    cfg = build_config(method, suite, None, sets)
    for key, integer, rng, kind in _walk(RunConfig, cfg, ""):
        yield "run", key, integer, rng, kind
    m = method_class(method)(cfg)
    for key, integer, rng, kind in _walk(type(m.args), m.args, "method."):
        yield f"method {method}", key, integer, rng, kind
    for arg, (default, rng) in loss_arguments(cfg.loss.name).items():
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            yield f"loss {cfg.loss.name}", f"loss.args.{arg}", isinstance(default, int), rng, \
                "scalar"


@pytest.fixture(scope="module")
def probe_plan():
    """Every numeric key of every shipped config: {(owner, key): (method, suite, sets, integer,
    range, kind)} for the first config that has it, and the keys without a declared range."""
    plan, undeclared = {}, set()
    for method, suite, sets in shipped_configs():
        for owner, key, integer, rng, kind in numeric_keys(method, suite, sets):
            if rng is None:
                undeclared.add(f"{key} ({owner})")
            plan.setdefault((owner, key), (method, suite, sets, integer, rng, kind))
    return plan, undeclared


def test_every_numeric_field_of_every_shipped_config_declares_its_range(probe_plan):
    plan, undeclared = probe_plan
    assert len(plan) > 50  # the walk found the fields (run config, methods, losses)
    assert not undeclared, (
        "numeric config fields without a declared range (declare them with "
        f"umlbench.config.num(...) or @ranged(...)): {sorted(undeclared)}")


def _bad_values(integer: bool, rng) -> list:
    values = list(rng.outside(integer)) if rng is not None else []
    values += ["abc"]  # a word where a number belongs
    if integer:
        values += [1.5]
    else:
        values += [float("nan"), float("inf"), float("-inf")]
    return values


def _spelled(v) -> str:
    """The --set spelling of ``v`` (YAML: .nan, .inf)."""
    if isinstance(v, float) and math.isnan(v):
        return ".nan"
    if isinstance(v, float) and math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    return str(v)


def _shown(v) -> set[str]:
    """How the error line may print ``v``."""
    if isinstance(v, str):
        return {repr(v)}
    return {repr(v), repr(float(v)), str(v)}


def test_every_out_of_range_value_is_one_error_line_naming_key_value_and_range(
        probe_plan, tmp_path, monkeypatch):
    monkeypatch.setenv("UMLBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("UMLBENCH_WORK", str(tmp_path / "runs"))
    plan, _ = probe_plan
    runner = CliRunner()
    failures = []
    for (owner, key), (method, suite, sets, integer, rng, kind) in sorted(plan.items()):
        if rng is None:
            continue  # reported by the test above
        for bad in _bad_values(integer, rng):
            value = f"[{_spelled(bad)}, {_spelled(bad)}]" if kind == "tuple" else _spelled(bad)
            args = ["run", "--method", method, "--suite", suite, "--dry-run",
                    *[a for s in sets for a in ("--set", s)], "--set", f"{key}={value}"]
            res = runner.invoke(cli, args)
            lines = res.output.strip().splitlines()
            ok = (res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
                  and f"{key} must" in lines[0] and str(rng) in lines[0]
                  and any(s in lines[0] for s in _shown(bad)))
            if not ok:
                failures.append(f"{owner}: {key}={value} -> exit {res.exit_code}: "
                                f"{res.output.strip()[:200]}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method, suite, sets", shipped_configs(),
                         ids=lambda v: "+".join(v) if isinstance(v, list) else str(v))
def test_every_key_of_every_shipped_config_refuses_an_out_of_range_value(method, suite, sets):
    """The exhaustive form of the probe above: in every shipped config, not only the first that
    has a key, one value outside each declared range is one error line (about a minute)."""
    runner = CliRunner()
    failures = []
    for owner, key, integer, rng, kind in numeric_keys(method, suite, sets):
        assert rng is not None, f"{key} ({owner}) declares no range"
        bad = rng.outside(integer)[0]
        value = f"[{bad}, {bad}]" if kind == "tuple" else str(bad)
        res = runner.invoke(cli, ["run", "--method", method, "--suite", suite, "--dry-run",
                                  *[a for s in sets for a in ("--set", s)],
                                  "--set", f"{key}={value}"])
        lines = res.output.strip().splitlines()
        if not (res.exit_code == 2 and len(lines) == 1 and f"{key} must" in lines[0]
                and str(rng) in lines[0]):
            failures.append(f"{key}={value}: exit {res.exit_code}: {res.output.strip()[:200]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("setting", ["train.epochs=-1", "train.lr=nan", "train.batch_size=0"])
def test_a_real_run_with_a_bad_value_stops_before_data_and_writes_nothing(env_root, setting):
    """The issue's cases, without --dry-run: one line, exit 2, no record, no checkpoint."""
    res = CliRunner().invoke(cli, ["run", "--method", "puma", "--set", setting])
    assert res.exit_code == 2, res.output
    [line] = res.output.strip().splitlines()
    key, value = setting.split("=")
    assert line.startswith("error: ") and f"{key} must be" in line and value in line
    assert not (env_root / "results").exists() and not (env_root / "runs").exists()


def test_a_probe_value_inside_the_range_passes():
    """The checks refuse only what is outside: the bounds themselves are allowed."""
    cfg = build_config("puma", "mini", overrides=[
        "train.weight_decay=0", "train.gamma=1", "train.min_lr_scale=0", "train.eval_every=0",
        "method.adapter_drop=0", "data.crop_scale=[1, 1]", "loss.args.margin=0"])
    assert cfg.train.gamma == 1.0 and cfg.data.crop_scale == (1.0, 1.0)


def test_direct_from_dict_checks_ranges_and_crop_order():
    with pytest.raises(UserError, match=r"train.epochs must be an integer >= 1, got 0"):
        from_dict(RunConfig, {"method": "x", "train": {"epochs": 0}})
    with pytest.raises(UserError, match=r"data.crop_scale must be \[min, max\] with min <= max"):
        from_dict(RunConfig, {"method": "x", "data": {"crop_scale": [0.9, 0.2]}})


def test_prepare_data_with_a_missing_source_is_one_line_and_prints_nothing_else(tmp_path):
    res = CliRunner().invoke(cli, ["prepare-data", "--dataset", "cub", "--source",
                                   str(tmp_path / "MISSING"), "--data-root",
                                   str(tmp_path / "root")])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [
        f"error: --source {tmp_path / 'MISSING'}: no such file or folder"]
    assert not (tmp_path / "root").exists()


def test_a_numeric_field_without_a_range_is_what_the_probe_reports():
    """How the first probe catches a new field: a plain ``x: float = 0.1`` has no range."""
    from dataclasses import dataclass

    from umlbench.config import Range, num

    @dataclass(frozen=True, kw_only=True)
    class NewConfig:
        plain: float = 0.1
        declared: int = num(1, ge=1)
        scales: dict[str, float] = num(factory=dict, ge=0)
        name: str = ""
        flag: bool = False

    assert numeric_fields(NewConfig) == {"plain": (False, None), "declared": (True, Range(ge=1)),
                                         "scales": (False, Range(ge=0))}
    with pytest.raises(UserError, match=r"declared must be an integer >= 1, got 0"):
        from_dict(NewConfig, {"declared": 0})
    with pytest.raises(UserError, match=r"plain must be a finite number, got nan"):
        from_dict(NewConfig, {"plain": "nan"})  # undeclared: still finite
