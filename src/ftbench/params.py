"""Read params.yaml into typed configs, rejecting unknown names, wrong types and out-of-range values.

A typo such as ``methods.lora.rank`` must stop the run with a message, not silently fall back
to a default, because the comparison would then measure something the user did not ask for.
Likewise ``train.batch_size: eight`` or ``train.epochs: -1`` must fail when params.yaml is read,
with the key and the fix, not minutes later deep inside torch (or never, training zero steps).

Each knob's type is its dataclass annotation; what it must satisfy beyond that (a range, a set of
choices) is a :class:`Rule` in the ``rules`` table beside the dataclass. One validator, :func:`_check`,
applies both, so adding a knob means adding a field and, if it has a range, one table entry.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ftbench.io import ConfigError

PARAMS_FILE = "params.yaml"
DTYPES = ("float32", "bfloat16", "float16")
TRANSLATION_BACKENDS = ("memory", "marian")  # the names translate.make_backends knows
_UNSET = object()  # "no example given" and "not of the knob's type": never a value YAML produces


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    if not close:  # short names defeat difflib: 'rank' -> 'r'
        close = sorted((c for c in choices if name.startswith(c) or c.startswith(name)), key=len, reverse=True)
    return f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(choices)}"


@dataclass(frozen=True)
class Rule:
    """What one knob must satisfy beyond its annotated type.

    For a list or a mapping, the range and choices apply to each item, and a list must be non-empty
    without repeats (every list here is a set of names or seeds: an empty one runs nothing, a repeat
    runs the same thing twice). ``test`` checks the whole value and says in words what it requires.
    """

    low: float | None = None
    low_open: bool = False  # low < value rather than low <= value
    high: float | None = None  # value < high: every upper bound here (dropout, ratios, fractions) is open
    choices: tuple = ()
    noun: str = ""  # names a bad choice as the user thinks of it: "unknown method 'dora'"
    keys: tuple[str, ...] = ()  # the keys a mapping may have
    test: tuple[Callable[[Any], bool], str] | None = None
    example: Any = _UNSET  # shown in the fix; the field's default when not given
    why: str = ""


def at_least(low: float, **kw: Any) -> Rule:
    return Rule(low=low, **kw)


def above(low: float, **kw: Any) -> Rule:
    return Rule(low=low, low_open=True, **kw)


def fraction(**kw: Any) -> Rule:
    return Rule(low=0, high=1, **kw)


def one_of(*choices: Any, **kw: Any) -> Rule:
    return Rule(choices=choices, **kw)


def _is_device(name: str) -> bool:
    return re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name) is not None


def _is_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML (true, null, 'eight'), so the message points at the line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _kind(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list", dict: "a mapping"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _as(value: Any, typ: type) -> Any:
    """``value`` as ``typ``, or ``_UNSET`` when it is not one.

    bool and int are kept apart (YAML ``true`` is not a batch size, ``1`` is not a switch). A float knob
    takes an int as it is, and a string that float() reads: YAML 1.1 reads ``1e-3`` (no dot) as a string.
    """
    if typ is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return _UNSET
    if isinstance(value, bool) != (typ is bool):
        return _UNSET
    if typ is float and isinstance(value, int | float):
        return value if math.isfinite(value) else _UNSET
    return value if isinstance(value, typ) else _UNSET


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether null is allowed)."""
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _need(hint: Any, rule: Rule) -> str:
    """What the knob accepts, in words: the start of every fix."""
    typ, optional = _unwrap(hint)
    origin = typing.get_origin(typ) or typ
    if rule.test:
        text = rule.test[1]
    elif origin is list:
        text = "a non-empty list without repeats"
    elif origin is dict:
        text = "a mapping"
    elif rule.choices:
        text = "one of " + ", ".join(str(c) for c in rule.choices)
    elif typ is bool:
        text = "true or false"
    elif typ in (int, float):
        noun = "an integer" if typ is int else "a number"
        if typ is int and rule.low == 1 and rule.high is None:
            text = "a positive integer"
        elif rule.low is None:
            text = noun
        elif rule.high is not None:
            text = f"{noun} in {'(' if rule.low_open else '['}{rule.low}, {rule.high})"
        else:
            text = f"{noun} {'>' if rule.low_open else '>='} {rule.low}"
    else:
        text = "a string"
    return text + (" or null" if optional else "")


def _error(key: str, value: Any, hint: Any, rule: Rule, example: Any, *, wrong_type: bool = False) -> ConfigError:
    fix = f"use {_need(hint, rule)}"
    if example is not None and not (rule.choices and not isinstance(example, list)):  # choices are listed already
        fix += f", e.g. {_show(example)}"
    if rule.why and not isinstance(value, list | dict):  # the why is about the values, not the list
        fix += f" ({rule.why})"
    if rule.noun and rule.choices and not wrong_type and not isinstance(value, list | dict):
        return ConfigError(f"{PARAMS_FILE}: unknown {rule.noun} {_show(value)} in {key}", fix=fix)
    detail = f" ({_kind(value)})" if wrong_type and value is not None else ""
    return ConfigError(f"{PARAMS_FILE}: {key} is {_show(value)}{detail}", fix=fix)


def _check(value: Any, hint: Any, rule: Rule, key: str, example: Any) -> Any:
    """``value`` checked against its annotation ``hint`` and ``rule``; returns it (a numeric string as float)."""
    typ, optional = _unwrap(hint)
    if value is None and optional:
        return None
    if dataclasses.is_dataclass(typ):
        return _build(typ, value, key)
    origin, args = typing.get_origin(typ) or typ, typing.get_args(typ)
    items_rule = dataclasses.replace(rule, test=None)
    if origin is list:
        if not isinstance(value, list):
            raise _error(key, value, hint, rule, example, wrong_type=True)
        first = example[0] if example else None
        checked = [_check(v, args[0], items_rule, f"{key}[{i}]", first) for i, v in enumerate(value)]
        if not checked or len(set(checked)) < len(checked):
            raise _error(key, value, hint, rule, example)
    elif origin is dict:
        if not isinstance(value, dict):
            raise _error(key, value, hint, rule, example, wrong_type=True)
        if rule.keys:
            _reject_unknown(value, list(rule.keys), key)
        checked = {k: _check(v, args[1], items_rule, f"{key}.{k}", (example or {}).get(k)) for k, v in value.items()}
    else:
        checked = _as(value, typ)
        if checked is _UNSET:
            raise _error(key, value, hint, rule, example, wrong_type=True)
        in_range = ((rule.low is None or (checked > rule.low if rule.low_open else checked >= rule.low))
                    and (rule.high is None or checked < rule.high))
        if not in_range or (rule.choices and checked not in rule.choices):
            raise _error(key, value, hint, rule, example)
    if rule.test and not rule.test[0](checked):
        raise _error(key, value, hint, rule, example)
    return checked


def _reject_unknown(raw: dict, names: list[str], where: str) -> None:
    for key in raw:
        if key not in names:
            if not where:
                raise ConfigError(f"{PARAMS_FILE}: unknown top-level key '{key}'", fix=_suggest(str(key), names))
            raise ConfigError(f"{PARAMS_FILE}: {where} has unknown key '{key}'", fix=_suggest(str(key), names))


def _mapping(raw: Any, where: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{PARAMS_FILE}: {where} must be a mapping, got {type(raw).__name__}",
                          fix=f"write {where} as key: value pairs")
    return raw


def _build(cls: type, raw: Any, where: str, **built: Any):
    """Instantiate dataclass ``cls`` from ``raw``, checking every field against its type and ``cls.rules``.

    Absent keys take the field's default, which is checked too (an empty ``run.models`` is an error
    whether written or left out). ``built`` passes fields the caller has already made.
    """
    raw = _mapping(raw, where)
    fields = dataclasses.fields(cls)
    _reject_unknown(raw, [f.name for f in fields], where)
    hints, rules = typing.get_type_hints(cls), getattr(cls, "rules", {})
    values = dict(built)
    for f in fields:
        if f.name in built:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rule = rules.get(f.name, Rule())
        example = default if rule.example is _UNSET else rule.example
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in raw and default is dataclasses.MISSING and not dataclasses.is_dataclass(hints[f.name]):
            raise ConfigError(f"{PARAMS_FILE}: {key} is missing", fix=f"add it: {f.name}: {_show(example)}")
        value = raw.get(f.name, None if default is dataclasses.MISSING else default)
        values[f.name] = _check(value, hints[f.name], rule, key, example)
    return cls(**values)


@dataclass
class LoraParams:
    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lr: float | None = None  # overrides train.lr for this method

    rules: ClassVar[dict[str, Rule]] = {"r": at_least(1), "alpha": above(0), "dropout": fraction(),
                                        "lr": above(0, example=2e-4)}


@dataclass
class QLoraParams(LoraParams):
    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"
    quant_storage: str = "auto"

    rules: ClassVar[dict[str, Rule]] = {**LoraParams.rules, "bits": one_of(4, 8), "quant_type": one_of("nf4", "fp4"),
                                        "compute_dtype": one_of("auto", *DTYPES),
                                        "quant_storage": one_of("auto", "uint8", *DTYPES)}


@dataclass
class TopLayerParams:
    layers: int = 1
    lm_head: bool = False
    lr: float | None = None

    rules: ClassVar[dict[str, Rule]] = {"layers": at_least(1), "lr": above(0, example=3e-4)}


@dataclass
class DoraParams(LoraParams):
    """DoRA (weight-decomposed LoRA): LoRA's knobs, and by default LoRA's targets and rank, so that a
    difference from ``lora`` is the decomposition (a trained magnitude per output row), not the capacity."""

    rules: ClassVar[dict[str, Rule]] = LoraParams.rules


@dataclass
class LoraAllParams:
    """LoRA on every linear projection of the blocks (peft ``all-linear``: q,k,v,o,gate,up,down, never
    the head). ``target_modules`` is fixed: a chosen list is method ``lora``, so one name, one setting."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    target_modules: str = "all-linear"
    lr: float | None = None

    rules: ClassVar[dict[str, Rule]] = {
        **LoraParams.rules,
        "target_modules": Rule(test=(lambda v: v == "all-linear", "all-linear (lora_all adapts every projection "
                                                                  "of the blocks; for chosen ones use method lora)"))}


@dataclass
class FullParams:
    """Full fine-tuning: every weight trains. Only the learning rate is its own: updating all 135M
    weights directly moves the model far more per step than a low-rank update, so it wants a rate
    ~20x below the adapters' (5e-5 rather than 1e-3) or it forgets what it knew."""

    lr: float | None = 5e-5

    rules: ClassVar[dict[str, Rule]] = {"lr": above(0, example=5e-5)}


METHOD_PARAMS: dict[str, type] = {"lora": LoraParams, "qlora": QLoraParams, "top_layer": TopLayerParams,
                                  "dora": DoraParams, "lora_all": LoraAllParams, "full": FullParams}


@dataclass
class TrainParams:
    epochs: float = 1
    lr: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 256
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    completion_only_loss: bool = True
    log_every: int = 5
    checkpoint_every: int = 10
    dtype: str = "auto"
    max_grad_norm: float | None = 1.0
    gradient_checkpointing: bool = False
    trainable_dtype: str = "float32"
    group_by_length: bool = True
    share_prefix: bool = True
    micro_batch_tokens: int | None = None
    launcher: str = "none"
    accelerate_config: str | None = None
    num_processes: int | None = None

    rules: ClassVar[dict[str, Rule]] = {
        "launcher": one_of("none", "accelerate", "torchrun"), "num_processes": at_least(1),
        "epochs": above(0), "lr": above(0), "batch_size": at_least(1), "grad_accum": at_least(1),
        "micro_batch_tokens": at_least(1, why="null turns it off"),
        "max_seq_len": at_least(16, why="room for a prompt and its answer"), "warmup_ratio": fraction(),
        "weight_decay": at_least(0), "log_every": at_least(1), "checkpoint_every": at_least(0, why="0 turns it off"),
        "dtype": one_of("auto", *DTYPES), "max_grad_norm": above(0), "trainable_dtype": one_of(*DTYPES)}


@dataclass
class EvalParams:
    max_new_tokens: int = 24
    batch_size: int = 64
    prompt: str = "chat"
    system_prompt: str | None = "Answer with the exact words from the context, nothing else."
    bertscore_model: str | None = "default"
    bertscore_layers: int = 6
    bootstrap_resamples: int = 1000
    latency_examples: int = 32
    context_truncation: str = "start"
    share_prefix: bool = True

    rules: ClassVar[dict[str, Rule]] = {
        "max_new_tokens": at_least(1), "batch_size": at_least(1), "prompt": one_of("chat", "alpaca"),
        "bertscore_layers": at_least(1),
        "bootstrap_resamples": at_least(100, why="with fewer, each 2.5 % tail of a 95 % interval rests on one or "
                                                 "two draws and a paired test's p cannot go below 1/(resamples+1)"),
        "latency_examples": at_least(0, why="0 skips the latency runs"),
        "context_truncation": one_of("start", "end")}


@dataclass
class DataParams:
    format: str = "cmnee"
    raw: str = "data/raw/cmnee_fixture.json"
    split: dict[str, float] = field(default_factory=lambda: {"validation": 0.1, "test": 0.15})
    max_train: int | None = None
    max_eval: int | None = None
    encoding: str = "utf-8"
    answer_projection: str = "align"
    projection_threshold: float = 75.0
    allow_split_overlap: bool = False

    rules: ClassVar[dict[str, Rule]] = {
        "format": one_of("cmnee", "alpaca"),
        "split": fraction(keys=("validation", "test"),
                          test=(lambda s: sum(s.values()) < 1, "fractions of documents that sum below 1")),
        "max_train": at_least(1, example=256), "max_eval": at_least(1, example=64),
        "encoding": Rule(test=(_is_codec, "a text encoding Python knows (utf-8 or gb18030)")),
        "answer_projection": one_of("align", "keep", "drop"),
        "projection_threshold": at_least(0, test=(lambda v: v <= 100, "a similarity score in [0, 100]"))}


@dataclass
class TranslateParams:
    backends: list[str] = field(default_factory=lambda: ["memory"])
    memory: str | None = "data/raw/translation_memory.json"
    marian_model: str = "Helsinki-NLP/opus-mt-zh-en"
    batch_size: int = 16

    rules: ClassVar[dict[str, Rule]] = {"backends": one_of(*TRANSLATION_BACKENDS, noun="translation backend"),
                                        "batch_size": at_least(1)}


@dataclass
class ModelSpec:
    """How to load a model: exactly one of ``hf`` (Hub id or local dir), ``path`` or a GGUF in a package."""

    hf: str | None = None
    path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    chat_template: bool = True


_SEED_RANGE = dict(low=0, high=2**32, why="what numpy and torch both accept as a seed")


@dataclass
class RunParams:
    models: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [42])
    device: str = "auto"

    rules: ClassVar[dict[str, Rule]] = {
        "models": Rule(example=["smollm2-135m"]),
        "methods": one_of(*METHOD_PARAMS, noun="method", example=["lora", "qlora"]),
        "seeds": Rule(**_SEED_RANGE),
        "device": Rule(test=(_is_device, "auto, cpu, cuda, cuda:N or mps"))}


@dataclass
class MonitorParams:
    interval_s: float = 0.5
    peak_flops: float | None = None

    rules: ClassVar[dict[str, Rule]] = {"interval_s": above(0), "peak_flops": above(0, example=1e12)}


@dataclass
class Params:
    seed: int
    data: DataParams
    translate: TranslateParams
    models: dict[str, ModelSpec]
    run: RunParams
    methods: dict[str, Any]
    train: TrainParams
    eval: EvalParams
    monitor: MonitorParams

    rules: ClassVar[dict[str, Rule]] = {"seed": Rule(**_SEED_RANGE, example=42)}

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise ConfigError(f"{PARAMS_FILE}: unknown model '{name}'", fix=_suggest(name, list(self.models)))
        return self.models[name]

    def method(self, name: str):
        if name not in METHOD_PARAMS:
            raise ConfigError(f"{PARAMS_FILE}: unknown method '{name}'", fix=_suggest(name, list(METHOD_PARAMS)))
        return self.methods[name]

    def lr_for(self, method: str) -> float:
        override = getattr(self.method(method), "lr", None)
        return self.train.lr if override is None else override


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found", fix="run the stage from the repository root")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{PARAMS_FILE}: expected key: value pairs at the top, got {type(raw).__name__}",
                          fix="start from the committed params.yaml")
    _reject_unknown(raw, [f.name for f in dataclasses.fields(Params)], "")
    models = {}
    for name, spec in _mapping(raw.get("models"), "models").items():
        m = _build(ModelSpec, spec, f"models.{name}")
        sources = [s for s in (m.hf, m.path, m.gguf_package) if s]
        if len(sources) != 1 or (m.gguf_package and not m.gguf_file):
            raise ConfigError(f"{PARAMS_FILE}: models.{name} needs exactly one source",
                              fix="give `hf: <hub id or dir>`, `path: <dir>`, or `gguf_package` with `gguf_file`")
        models[name] = m
    methods = {}
    for name, cfg in _mapping(raw.get("methods"), "methods").items():
        if name not in METHOD_PARAMS:
            raise ConfigError(f"{PARAMS_FILE}: unknown method 'methods.{name}'",
                              fix=_suggest(name, list(METHOD_PARAMS)))
        methods[name] = _build(METHOD_PARAMS[name], cfg, f"methods.{name}")
    for name, cls in METHOD_PARAMS.items():
        methods.setdefault(name, cls())
    params = _build(Params, raw, "", models=models, methods=methods)
    for m in params.run.models:
        params.model(m)
    return params
