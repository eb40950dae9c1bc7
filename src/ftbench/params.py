"""Read params.yaml into typed configs, rejecting unknown names and keys with a suggestion.

A typo such as ``methods.lora.rank`` must stop the run with a message, not silently fall back
to a default, because the comparison would then measure something the user did not ask for.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftbench.io import ConfigError

PARAMS_FILE = "params.yaml"


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    if not close:  # short names defeat difflib: 'rank' -> 'r'
        close = sorted((c for c in choices if name.startswith(c) or c.startswith(name)), key=len, reverse=True)
    return f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(choices)}"


def _build(cls: type, raw: Any, where: str):
    """Instantiate dataclass ``cls`` from ``raw``, naming ``where`` in every error."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{PARAMS_FILE}: {where} must be a mapping, got {type(raw).__name__}",
                          fix=f"write {where} as key: value pairs")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(f"{PARAMS_FILE}: {where} has unknown key '{key}'", fix=_suggest(key, names))
    try:
        return cls(**raw)
    except TypeError as e:
        raise ConfigError(f"{PARAMS_FILE}: {where}: {e}", fix="see the comments in params.yaml") from None


@dataclass
class LoraParams:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lr: float | None = None  # overrides train.lr for this method


@dataclass
class QLoraParams(LoraParams):
    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"


@dataclass
class TopLayerParams:
    layers: int = 1
    lm_head: bool = False
    lr: float | None = None


METHOD_PARAMS: dict[str, type] = {"lora": LoraParams, "qlora": QLoraParams, "top_layer": TopLayerParams}


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


@dataclass
class EvalParams:
    max_new_tokens: int = 24
    batch_size: int = 16
    prompt: str = "chat"
    system_prompt: str = "Answer with the exact words from the context, nothing else."
    bertscore_model: str | None = "default"
    bertscore_layers: int = 6
    bootstrap_resamples: int = 1000
    latency_examples: int = 32
    context_truncation: str = "start"


@dataclass
class DataParams:
    format: str = "cmnee"
    raw: str = "data/raw/cmnee_fixture.json"
    split: dict = field(default_factory=lambda: {"validation": 0.1, "test": 0.15})
    max_train: int | None = None
    max_eval: int | None = None
    encoding: str = "utf-8"


@dataclass
class TranslateParams:
    backends: list[str] = field(default_factory=lambda: ["memory"])
    memory: str | None = "data/raw/translation_memory.json"
    marian_model: str = "Helsinki-NLP/opus-mt-zh-en"
    batch_size: int = 16


@dataclass
class ModelSpec:
    """How to load a model: exactly one of ``hf`` (Hub id or local dir), ``path`` or a GGUF in a package."""

    hf: str | None = None
    path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    chat_template: bool = True


@dataclass
class RunParams:
    models: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [42])
    device: str = "auto"


@dataclass
class MonitorParams:
    interval_s: float = 0.5
    peak_flops: float | None = None


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


TOP_KEYS = ["seed", "data", "translate", "models", "run", "methods", "train", "eval", "monitor"]


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found", fix="run the stage from the repository root")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{PARAMS_FILE}: unknown top-level key '{key}'", fix=_suggest(key, TOP_KEYS))
    models = {}
    for name, spec in (raw.get("models") or {}).items():
        m = _build(ModelSpec, spec, f"models.{name}")
        sources = [s for s in (m.hf, m.path, m.gguf_package) if s]
        if len(sources) != 1 or (m.gguf_package and not m.gguf_file):
            raise ConfigError(f"{PARAMS_FILE}: models.{name} needs exactly one source",
                              fix="give `hf: <hub id or dir>`, `path: <dir>`, or `gguf_package` with `gguf_file`")
        models[name] = m
    methods = {}
    for name, cfg in (raw.get("methods") or {}).items():
        if name not in METHOD_PARAMS:
            raise ConfigError(f"{PARAMS_FILE}: unknown method 'methods.{name}'",
                              fix=_suggest(name, list(METHOD_PARAMS)))
        methods[name] = _build(METHOD_PARAMS[name], cfg, f"methods.{name}")
    for name, cls in METHOD_PARAMS.items():
        methods.setdefault(name, cls())
    params = Params(
        seed=int(raw.get("seed", 42)),
        data=_build(DataParams, raw.get("data"), "data"),
        translate=_build(TranslateParams, raw.get("translate"), "translate"),
        models=models,
        run=_build(RunParams, raw.get("run"), "run"),
        methods=methods,
        train=_build(TrainParams, raw.get("train"), "train"),
        eval=_build(EvalParams, raw.get("eval"), "eval"),
        monitor=_build(MonitorParams, raw.get("monitor"), "monitor"),
    )
    for m in params.run.models:
        params.model(m)
    for m in params.run.methods:
        params.method(m)
    if params.data.format not in ("cmnee", "alpaca"):
        raise ConfigError(f"{PARAMS_FILE}: data.format '{params.data.format}' is unknown", fix="use cmnee or alpaca")
    if params.eval.prompt not in ("chat", "alpaca"):
        raise ConfigError(f"{PARAMS_FILE}: eval.prompt '{params.eval.prompt}' is unknown", fix="use chat or alpaca")
    return params
