"""Run configuration: frozen dataclasses, filled from YAML files and ``key=value`` overrides.

Layers, later wins: the suite defaults (``umlbench/configs/<suite>.yaml``), the method's config
for that suite (``<method package>/configs/<suite>.yaml``), the user's ``--config FILE``, then
``--set key=value`` overrides and explicit CLI flags. An unknown key anywhere is an error that
names the key and where it came from (OML silently drops them; we do not).

Every numeric field declares its allowed range where it is declared, with :func:`num`::

    epochs: int = num(100, ge=1)
    lr: float = num(1e-4, gt=0)
    gamma: float = num(0.5, gt=0, le=1)

:func:`from_dict` checks each value against it (numbers must also be finite: nan and inf are
refused everywhere), so a typo is one ``error:`` line naming the key, the value and the range
before anything is prepared, trained or written. This holds for the dataclasses here, for every
method's ``Config`` (``umlbench/methods.py``) and, through :func:`ranged`, for the keyword
arguments of every loss factory (``loss.args``; ``umlbench/train/losses.py``).

**Adding a numeric field:** declare it with ``num(default, ge=/gt=/le=/lt=)``. A plain
``x: float = 0.1`` is refused by ``tests/test_config_ranges.py``, which walks every numeric field
of every shipped config (suite x method x protocol x loss) and feeds an out-of-range value, nan,
inf and a wrong type through ``umlbench run --dry-run --set``; it fails for a field that has no
declared range, so a new field cannot slip past the check.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from umlbench.errors import UserError

__all__ = [
    "BackboneConfig",
    "DataConfig",
    "TrainConfig",
    "LossConfig",
    "EvalConfig",
    "ProtocolConfig",
    "RunConfig",
    "from_dict",
    "to_dict",
    "load_yaml",
    "merge",
    "parse_overrides",
    "evaluation_epochs",
    "render_config",
    "batch_layout",
    "SUITE_CONFIG_DIR",
    "Range",
    "num",
    "ranged",
    "field_range",
    "check_number",
    "numeric_fields",
]

SUITE_CONFIG_DIR = Path(__file__).parent / "configs"
AMP_MODES = ("fp16", "bf16", "off")
EVAL_PRECISIONS = ("fp32", "fp16", "bf16")
EVAL_RULES = ("every", "official")
# ooDML few-shot switches (umlbench.protocols.fewshot / fewshot_adapt); first = default.
FEWSHOT_BASES = ("selected", "final")
FINETUNE_SUPPORT = ("augmented", "cached")
FINETUNE_SAMPLERS = ("replacement", "unique")
FINETUNE_MINERS = ("official", "pml")
FEWSHOT_CLUSTERS = ("support", "query")
SCHEDULE_GRANULARITIES = ("epoch", "iteration")
CLUSTER_ROWS = ("all", "queries")  # umlbench.metrics.spec.CLUSTER_ROWS (config imports no metrics)


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric config field: bounds ``ge``/``gt`` (below) and
    ``le``/``lt`` (above), any of them None; the value must also be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __contains__(self, value: float) -> bool:
        return (math.isfinite(value)
                and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        lo = (f"[{_g(self.ge)}" if self.ge is not None else
              f"({_g(self.gt)}" if self.gt is not None else None)
        hi = (f"{_g(self.le)}]" if self.le is not None else
              f"{_g(self.lt)})" if self.lt is not None else None)
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return (">= " if lo[0] == "[" else "> ") + lo[1:]
        if hi:
            return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
        return "(any finite value)"

    def outside(self, integer: bool) -> list[float]:
        """Values just outside the range (what the probe test feeds in)."""
        step = 1 if integer else 0.5
        out = []
        if self.ge is not None:
            out.append(self.ge - step)
        if self.gt is not None:
            out.append(self.gt)  # the open bound itself is outside
        if self.le is not None:
            out.append(self.le + step)
        if self.lt is not None:
            out.append(self.lt)
        return [int(v) if integer and float(v).is_integer() else v for v in out]


def _g(x: float) -> str:
    return f"{x:g}"


def num(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
        ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None) -> Any:
    """A numeric dataclass field with its allowed range (see the module docstring).

    For ``tuple[float, ...]`` and ``dict[str, float]`` fields the range holds for every element;
    ``None`` (for ``int | None`` fields) is always allowed."""
    meta = {"range": Range(ge=ge, gt=gt, le=le, lt=lt)}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_range(f: dataclasses.Field) -> Range | None:
    """The declared range of a dataclass field (None: not declared with :func:`num`)."""
    return f.metadata.get("range")


def ranged(**ranges: Range):
    """Declare the ranges of a factory's keyword arguments (loss factories):
    ``@ranged(margin=Range(ge=0), scale=Range(gt=0))``; read back as ``fn.arg_ranges``."""

    def deco(fn):
        fn.arg_ranges = dict(ranges)
        return fn

    return deco


def _is_integer_type(tp: Any) -> bool | None:
    """True for int, False for float, None for anything else (after Optional/tuple/dict)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _is_integer_type(args[0]) if len(args) == 1 else None
    if origin is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return _is_integer_type(args[0]) if args else None
    if origin is dict:
        args = typing.get_args(tp)
        return _is_integer_type(args[1]) if len(args) == 2 else None
    if tp is int:
        return True
    if tp is float:
        return False
    return None


@functools.lru_cache(maxsize=None)  # type hints are resolved once per class (slow otherwise)
def numeric_fields(cls) -> dict[str, tuple[bool, Range | None]]:
    """``{field name: (is integer, declared range or None)}`` for the numeric fields of
    dataclass ``cls`` (int/float, optionally inside Optional, tuple or dict values)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        integer = _is_integer_type(hints[f.name])
        if integer is not None:
            out[f.name] = (integer, field_range(f))
    return out


def check_number(key: str, value: Any, rng: Range | None, integer: bool) -> None:
    """Raise a one-line :class:`UserError` naming ``key``, ``value`` and the allowed range when
    ``value`` is not a finite number in ``rng`` (an integer when ``integer``)."""
    what = _describe(integer, rng)
    bad = (isinstance(value, bool) or not isinstance(value, (int, float))
           or (integer and not isinstance(value, int)))
    if not bad:
        bad = value not in rng if rng is not None else not math.isfinite(value)
    if bad:
        raise UserError(f"{key} must be {what}, got {value!r}")


def _describe(integer: bool, rng: Range | None, plural: bool = False) -> str:
    kind = (("integers" if plural else "an integer") if integer else
            ("finite numbers" if plural else "a finite number"))
    return f"{kind} {rng}" if rng is not None else kind


def _check_ranges(obj, prefix: str) -> None:
    """Check every numeric field of dataclass ``obj`` against its declared range."""
    for name, (integer, rng) in numeric_fields(type(obj)).items():
        value = getattr(obj, name)
        key = prefix + name
        if value is None:
            continue
        if isinstance(value, dict):
            for k, v in value.items():
                check_number(f"{key}.{k}", v, rng, integer)
        elif isinstance(value, tuple):
            for v in value:
                try:
                    check_number(key, v, rng, integer)
                except UserError:
                    raise UserError(f"{key} must hold {_describe(integer, rng, plural=True)}, "
                                    f"got {list(value)!r}") from None
        else:
            check_number(key, value, rng, integer)


def _check_choice(key: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise UserError(f"{key} must be one of {', '.join(known)}; got {value!r}")


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    name: str = "vit_mini_patch4_32"
    pretrained: bool = True
    weights: str | None = None  # local weights file (machines without a model hub)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    datasets: tuple[str, ...] = ()  # subset of the suite; empty = all
    input_size: int | None = num(None, ge=8)  # None: the backbone's input size
    # RandomResizedCrop scale (official: 0.2-1)
    crop_scale: tuple[float, float] = num((0.2, 1.0), gt=0, le=1)
    # eval: resize to input*ratio, then centre-crop input
    resize_ratio: float = num(256 / 224, ge=1)
    num_workers: int = num(0, ge=0)
    pin_memory: bool = False
    eval_batch_size: int = num(256, ge=1)
    use_cache: bool = True  # False: decode the original JPEGs (real datasets only)

    def __post_init__(self) -> None:
        lo, hi = (tuple(self.crop_scale) + (None, None))[:2]
        if len(self.crop_scale) != 2 or (lo is not None and hi is not None and lo > hi):
            raise UserError(f"data.crop_scale must be [min, max] with min <= max, got "
                            f"{list(self.crop_scale)!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = num(100, ge=1)
    # Images per optimiser step (the loss sees them all), split evenly over the DDP processes.
    # The official --batch_size_per_gpu 180 on --nproc_per_node=4 is 720 (configs/uml.yaml),
    # whatever --nproc is here; mini sets its own (128).
    batch_size: int = num(180, ge=1)
    lr: float = num(1e-4, gt=0)
    weight_decay: float = num(1e-4, ge=0)
    # Per-parameter-group learning-rate multipliers (groups are named by the method).
    # 0 freezes a group (its parameters get learning rate 0).
    lr_scales: dict[str, float] = num(
        factory=lambda: {"backbone": 1.0, "adapter": 10.0, "prompt": 10.0,
                         "lora": 10.0, "head": 10.0, "proxies": 1e4}, ge=0)
    optimizer: str = "adamw"  # adamw | adam | sgd
    scheduler: str = "step"  # step | cosine | none
    step_epochs: int = num(20, ge=1)  # step scheduler: multiply by gamma every step_epochs
    gamma: float = num(0.5, gt=0, le=1)  # a decay: > 1 would grow the lr
    min_lr_scale: float = num(0.1, ge=0, le=1)  # cosine scheduler floor
    warmup_epochs: int = num(0, ge=0)
    # When the lr factor changes: epoch (constant within an epoch) | iteration (every optimiser
    # step, as the official utils.cosine_scheduler / step_scheduler indexed by the global step)
    schedule_granularity: str = "epoch"
    # Mixed precision of the training step on CUDA: fp16 (autocast + GradScaler, the official
    # --use_fp16) | bf16 (autocast, no scaler) | off. On CPU training always runs in fp32.
    amp: str = "fp16"
    # element-wise gradient value clamp (official --clip_grad); 0 = off
    grad_clamp: float = num(1.0, ge=0)
    grad_clip_norm: float = num(0.0, ge=0)  # global norm clipping; 0 = off
    sampler: str = "uniform"  # uniform | unique | dcb (see data/samplers.py)
    ipc: int = num(0, ge=0)  # images per class for the unique/dcb samplers
    ipc_replace: bool = False  # True: a class's ipc images always drawn with replacement (official)
    reshuffle: bool = True  # False: the same batch order every epoch (official IPC-0 runs)
    # evaluation period in epochs (0 = only as eval_rule says for the end)
    eval_every: int = num(20, ge=0)
    # every: after every eval_every-th epoch and after the last one (umlbench);
    # official: after 0-based epoch e when e % eval_every == 0 and e > 0 (train.py), i.e. after
    # 21, 41, 61, 81 of 100 epochs; the final model is not scored unless it falls on the rule.
    eval_rule: str = "every"
    select: str = "universal"  # universal | val | last: which evaluation picks the checkpoint
    select_metric: str = "recall@1"
    # select=val: fraction of training classes held out per dataset
    val_fraction: float = num(0.15, gt=0, lt=1)
    max_steps_per_epoch: int = num(0, ge=0)  # 0 = full epochs; >0 truncates (smoke tests)
    log_every: int = num(20, ge=1)

    def __post_init__(self) -> None:
        _check_choice("train.amp", self.amp, AMP_MODES)
        _check_choice("train.eval_rule", self.eval_rule, EVAL_RULES)
        _check_choice("train.schedule_granularity", self.schedule_granularity,
                      SCHEDULE_GRANULARITIES)


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    name: str = "curricularface"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    metrics: tuple[str, ...] = (
        "recall@1", "recall@2", "recall@4", "recall@8", "precision@1",
        "r_precision", "map@r", "map@1000", "nmi", "f1",
    )
    batch_size: int = num(256, ge=1)
    # Autocast dtype of the embedding pass on CUDA: fp32 (no autocast; the official evaluation)
    # | fp16 | bf16. On CPU evaluation always runs in fp32.
    precision: str = "fp32"
    # Which rows NMI/F1 cluster where query and gallery rows differ (In-shop): all (query and
    # gallery rows together, the default) | queries (the query rows only, as
    # pytorch-metric-learning's AccuracyCalculator). Leave-one-out datasets: the same rows.
    cluster_rows: str = "all"

    def __post_init__(self) -> None:
        _check_choice("eval.precision", self.precision, EVAL_PRECISIONS)
        _check_choice("eval.cluster_rows", self.cluster_rows, CLUSTER_ROWS)


@dataclass(frozen=True, kw_only=True)
class ProtocolConfig:
    name: str = "uml"  # uml | oodml | fewshot | fewshot-train
    dataset: str | None = None  # oodml/fewshot: the dataset whose splits are used
    level: int | None = num(None, ge=1)  # oodml/fewshot: split level (1 = easiest)
    # fewshot: support images per class; fewshot-train: K per class
    shots: int | None = num(None, ge=1)
    episodes: int = num(10, ge=1)  # fewshot: episodes per shot count (at most the split file's)
    finetune_iterations: int = num(0, ge=0)  # fewshot: adaptation steps; 0 = ooDML's (1000 / 1500)
    # fewshot: Adam lr of the adaptation; 0 = 10 x train.lr (ooDML)
    finetune_lr: float = num(0.0, ge=0)
    # fewshot: the base model adapted: selected (best validation epoch) | final (the released
    # script's, whose best_weights alias the live parameters)
    fewshot_base: str = "selected"
    # fewshot adaptation, as the official scripts by default (see protocols/fewshot_adapt.py):
    # support images augmented at every step | cached un-augmented features
    finetune_support: str = "augmented"
    # augmented: 0 = fresh every step; N = N views per image, drawn
    finetune_views: int = num(0, ge=0)
    finetune_sampler: str = "replacement"  # replacement (class_random_sampler) | unique
    finetune_miner: str = "official"  # official (batchminer/distance.py) | pml
    # fewshot NMI/F1: k = number of support classes (official) | query classes
    fewshot_clusters: str = "support"
    # fewshot-train: the K-shot subsets: official (imported pickles) | seeded | auto (official
    # where imported, else seeded)
    subsets: str = "auto"
    # fewshot-train: datasets evaluated but not trained on (the official few-shot code adds no
    # Aircraft images)
    exclude_train: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("protocol.fewshot_base", self.fewshot_base, FEWSHOT_BASES)
        _check_choice("protocol.finetune_support", self.finetune_support, FINETUNE_SUPPORT)
        _check_choice("protocol.finetune_sampler", self.finetune_sampler, FINETUNE_SAMPLERS)
        _check_choice("protocol.finetune_miner", self.finetune_miner, FINETUNE_MINERS)
        _check_choice("protocol.fewshot_clusters", self.fewshot_clusters, FEWSHOT_CLUSTERS)
        # Also built directly (dataclasses.replace), where from_dict's range check does not run.
        if not isinstance(self.finetune_views, int) or self.finetune_views < 0:
            raise UserError(f"protocol.finetune_views must be an integer >= 0, got "
                            f"{self.finetune_views!r}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    method: str
    method_args: dict[str, Any] = field(default_factory=dict)
    suite: str = "mini"
    seed: int = num(0, ge=0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data_root: str | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)

    def __post_init__(self) -> None:
        # Random streams are seeded with [seed, ...]; numpy refuses negative entries.
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"seed must be an integer >= 0, got {self.seed!r}")


def evaluation_epochs(t: TrainConfig) -> list[int]:
    """After which trained-epoch counts (1-based) the trainer evaluates, in order.

    ``every``: each multiple of ``eval_every`` and the last epoch. ``official``: the official
    ``train.py`` rule on the 0-based epoch e (``e % eval_every == 0 and e > 0``), reported as
    e + 1 trained epochs; with 100 epochs and eval_every 20 that is [21, 41, 61, 81], with 101
    epochs (the dataset-specific command) [21, 41, 61, 81, 101]. eval_every 0 under ``official``
    evaluates nowhere (the official code would divide by zero).
    """
    if t.eval_rule == "official":
        if t.eval_every <= 0:
            return []
        return [e + 1 for e in range(1, t.epochs) if e % t.eval_every == 0]
    out = [n for n in range(1, t.epochs + 1) if t.eval_every > 0 and n % t.eval_every == 0]
    if t.epochs > 0 and t.epochs not in out:
        out.append(t.epochs)
    return out


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{source}: {key} must be a mapping, got {value!r}")
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = typing.get_args(tp)
        elem = inner[0] if inner else Any
        return tuple(_coerce(v, elem, key, source) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # PyYAML reads "1e-4" (no dot) as a string; accept any number spelled as text.
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{source}: {key} must be a number, got {value!r}") from None
    if tp is int and isinstance(value, bool):
        raise UserError(f"{source}: {key} must be an integer, got {value!r}")
    if tp is float and not isinstance(value, float):
        raise UserError(f"{source}: {key} must be a number, got {value!r}")
    if tp in (int, str, bool) and not isinstance(value, tp):
        if tp is str and isinstance(value, (int, float)):
            return str(value)
        raise UserError(f"{source}: {key} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, data: dict, *, source: str = "config", prefix: str = ""):
    """Build dataclass ``cls`` from a nested dict, raising on unknown keys and wrong types."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise UserError(
            f"{source}: unknown config key '{prefix}{unknown[0]}'; "
            f"known keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(types_)}"
        )
    numeric = numeric_fields(cls)
    kwargs = {}
    for k, v in data.items():
        try:
            kwargs[k] = _coerce(v, types_[k], prefix + k, source)
        except UserError:
            if k not in numeric or isinstance(v, dict):
                raise
            # A word where a number belongs: say which numbers are allowed.
            integer, rng = numeric[k]
            if isinstance(v, (list, tuple)):
                raise UserError(f"{source}: {prefix}{k} must hold "
                                f"{_describe(integer, rng, plural=True)}, got {v!r}") from None
            raise UserError(f"{source}: {prefix}{k} must be {_describe(integer, rng)}, "
                            f"got {v!r}") from None
    try:
        obj = cls(**kwargs)
        _check_ranges(obj, prefix)
    except (TypeError, UserError) as exc:
        raise UserError(f"{source}: {exc}") from None
    return obj


def to_dict(obj) -> Any:
    """Dataclass -> plain nested dict/list (JSON/YAML friendly)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def batch_layout(t: TrainConfig, processes: int = 1) -> dict:
    """Images per optimiser step and per process when ``processes`` share a step."""
    return {"per_step": t.batch_size, "per_process": t.batch_size // max(1, processes),
            "processes": processes}


def render_config(cfg: RunConfig, method_args: dict | None = None,
                  loss_args: dict | None = None, processes: int = 1) -> str:
    """The resolved config as YAML (what ``umlbench run --dry-run`` prints), with derived values
    as comments (evaluation epochs, batch per step and per process, when the lr changes), so it
    can be diffed against the official command.

    ``method_args`` / ``loss_args``: the method's / loss's complete arguments (defaults
    included) to show instead of the ones the config layers set. ``processes``: ``--nproc``."""
    t = cfg.train
    epochs = evaluation_epochs(t)
    b = batch_layout(t, processes)
    split = "" if t.batch_size % b["processes"] == 0 else " (not divisible: the run refuses it)"
    head = [f"# resolved config: method {cfg.method}, suite {cfg.suite}",
            f"# evaluates after epochs ({t.eval_rule} rule): "
            f"{', '.join(map(str, epochs)) or 'none during training'}",
            f"# batch: {b['per_step']} images per optimiser step, {b['per_process']} per "
            f"process on {b['processes']} process{'es' if b['processes'] > 1 else ''}{split}",
            f"# lr schedule: {t.scheduler}, set every {t.schedule_granularity}"]
    data = to_dict(cfg)
    if method_args is not None:
        data["method_args"] = dict(method_args)
    if loss_args is not None:
        data["loss"]["args"] = dict(loss_args)
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(head) + "\n" + body


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config; a missing or malformed file is a one-line :class:`UserError`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must hold a mapping at the top level")
    return _normalise_method(data, str(path))


def _normalise_method(data: dict, source: str) -> dict:
    """Accept OML's ``method: {name, args}`` shape and map it to method/method_args."""
    data = dict(data)
    method = data.get("method")
    if isinstance(method, dict):
        extra = set(method) - {"name", "args"}
        if extra:
            raise UserError(f"{source}: method may only hold name and args, got {sorted(extra)}")
        data["method"] = method.get("name")
        data["method_args"] = merge(data.get("method_args", {}), method.get("args") or {})
        if data["method"] is None:
            del data["method"]
    return data


def merge(base: dict, update: dict) -> dict:
    """Deep merge: mappings are merged key by key, everything else is replaced."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items: typing.Iterable[str]) -> dict:
    """``["train.epochs=3", "method.adapter_dim=64"]`` -> nested dict (values parsed as YAML).

    ``method.X`` is shorthand for ``method_args.X``.
    """
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key=value (e.g. train.epochs=3)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        if parts[0] == "method" and len(parts) > 1:
            parts = ["method_args", *(parts[2:] if parts[1] == "args" else parts[1:])]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out
