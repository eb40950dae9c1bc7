"""params.yaml is checked for type and range when it is read: each bad knob stops the run with one line
naming the dotted key, the bad value and the fix, instead of failing deep in torch or training silently."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from ftbench import params as P
from ftbench.io import ConfigError
from ftbench.params import load_params

COMMITTED = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))

# (dotted key, bad value, how the message shows the value)
BAD = [
    ("seed", -1, "-1"), ("seed", "x", "'x' (a string)"), ("seed", True, "true (a boolean)"),
    ("seed", 2**32, "4294967296"),
    ("data.format", "csv", "'csv'"), ("data.encoding", "utf-99", "'utf-99'"), ("data.encoding", 8, "8 (an integer)"),
    ("data.split.validation", 1.0, "1.0"), ("data.split.test", -0.1, "-0.1"), ("data.split.test", "a", "'a'"),
    ("data.split", {"validation": 0.5, "test": 0.5}, "validation: 0.5"), ("data.split", [0.1], "[0.1] (a list)"),
    ("data.max_train", 0, "0"), ("data.max_train", 1.5, "1.5 (a float)"), ("data.max_train", "all", "'all'"),
    ("data.max_eval", 0, "0"), ("data.max_eval", True, "true (a boolean)"),
    ("translate.batch_size", 0, "0"), ("translate.batch_size", "16", "'16' (a string)"),
    ("translate.backends", ["memory", "google"], "'google'"), ("translate.backends", [], "[]"),
    ("translate.backends", ["memory", "memory"], "['memory', 'memory']"), ("translate.backends", "memory", "'memory'"),
    ("run.models", [], "[]"), ("run.models", "smollm2-135m", "'smollm2-135m' (a string)"),
    ("run.models", [1], "1 (an integer)"),
    ("run.methods", ["lora", "lra"], "'lra'"), ("run.methods", [], "[]"), ("run.methods", ["lora", "lora"], "'lora'"),
    ("run.seeds", [], "[]"), ("run.seeds", [1, 1], "[1, 1]"), ("run.seeds", [-1], "-1"), ("run.seeds", ["a"], "'a'"),
    ("run.seeds", [True], "true (a boolean)"), ("run.seeds", 42, "42 (an integer)"),
    ("run.device", "gpu", "'gpu'"), ("run.device", "cuda:", "'cuda:'"), ("run.device", 0, "0 (an integer)"),
    ("methods.lora.r", 0, "0"), ("methods.lora.r", 8.5, "8.5 (a float)"), ("methods.lora.r", True, "true (a boolean)"),
    ("methods.lora.alpha", 0, "0"), ("methods.lora.alpha", "x", "'x'"),
    ("methods.lora.dropout", 1, "1"), ("methods.lora.dropout", -0.1, "-0.1"),
    ("methods.lora.target_modules", [], "[]"), ("methods.lora.target_modules", "q_proj", "'q_proj' (a string)"),
    ("methods.lora.target_modules", [1], "1 (an integer)"), ("methods.lora.lr", 0, "0"),
    ("methods.qlora.bits", 3, "3"), ("methods.qlora.bits", "4", "'4' (a string)"),
    ("methods.qlora.quant_type", "int4", "'int4'"), ("methods.qlora.compute_dtype", "bf16", "'bf16'"),
    ("methods.qlora.double_quant", "yes", "'yes' (a string)"), ("methods.qlora.r", 0, "0"),
    ("methods.qlora.dropout", 1.5, "1.5"),
    ("methods.top_layer.layers", 0, "0"), ("methods.top_layer.lm_head", 1, "1 (an integer)"),
    ("methods.top_layer.lr", -1e-4, "-0.0001"),
    ("train.epochs", 0, "0"), ("train.epochs", -1, "-1"), ("train.epochs", "one", "'one' (a string)"),
    ("train.lr", 0, "0"), ("train.lr", "fast", "'fast'"), ("train.lr", float("nan"), "nan (not a finite number)"),
    ("train.batch_size", "eight", "'eight' (a string)"), ("train.batch_size", 0, "0"),
    ("train.batch_size", True, "true (a boolean)"), ("train.batch_size", 8.0, "8.0 (a float)"),
    ("train.grad_accum", 0, "0"), ("train.max_seq_len", 15, "15"),
    ("train.warmup_ratio", 1, "1"), ("train.warmup_ratio", -0.1, "-0.1"), ("train.weight_decay", -0.01, "-0.01"),
    ("train.completion_only_loss", 1, "1 (an integer)"), ("train.completion_only_loss", "yes", "'yes'"),
    ("train.log_every", 0, "0"), ("train.checkpoint_every", -1, "-1"), ("train.dtype", "fp16", "'fp16'"),
    ("train.max_grad_norm", 0, "0"), ("train.max_grad_norm", -1.0, "-1.0"),
    ("train.gradient_checkpointing", 0, "0 (an integer)"), ("train.trainable_dtype", "auto", "'auto'"),
    ("train.group_by_length", "true", "'true' (a string)"),
    ("train.micro_batch_tokens", 0, "0"), ("train.micro_batch_tokens", 512.0, "512.0 (a float)"),
    ("eval.share_prefix", 1, "1 (an integer)"), ("train.share_prefix", "yes", "'yes'"),
    ("eval.max_new_tokens", 0, "0"), ("eval.batch_size", 0, "0"), ("eval.prompt", "llama", "'llama'"),
    ("eval.system_prompt", 5, "5 (an integer)"), ("eval.bertscore_layers", 0, "0"),
    ("eval.bootstrap_resamples", 99, "99"), ("eval.latency_examples", -1, "-1"),
    ("eval.context_truncation", "middle", "'middle'"),
    ("monitor.interval_s", 0, "0"), ("monitor.peak_flops", 0, "0"), ("monitor.peak_flops", -1e12, "-1000000000000.0"),
]


def _write(tmp_path: Path, changes: dict) -> Path:
    params = yaml.safe_load(yaml.safe_dump(COMMITTED))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = params
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.mark.parametrize(("key", "value", "shown"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_knob_is_rejected_with_key_value_and_fix(key, value, shown, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_params(_write(tmp_path, {key: value}))
    e = info.value
    message = str(e)
    assert message.startswith("params.yaml: ") and "\n" not in message
    assert key in e.message, e.message
    assert shown in e.message, e.message
    assert e.fix and e.fix.startswith(("use ", "did you mean")), e.fix


def test_committed_params_load():
    p = load_params(REPO / "params.yaml")
    assert p.train.batch_size == COMMITTED["train"]["batch_size"]
    assert p.methods["qlora"].bits == COMMITTED["methods"]["qlora"]["bits"]
    assert p.run.methods == COMMITTED["run"]["methods"]


GOOD = [  # (dotted key, value written, value loaded)
    ("train.epochs", 0.5, 0.5),
    ("train.max_grad_norm", None, None),
    ("train.lr", "1e-3", 0.001),  # a string, as YAML 1.1 reads `lr: 1e-3`
    ("methods.lora.lr", "5E-4", 5e-4),
    ("train.warmup_ratio", 0, 0),  # an int where a float is expected
    ("methods.lora.alpha", 0.5, 0.5),
    ("methods.lora.dropout", 0, 0),
    ("train.max_seq_len", 16, 16),
    ("train.checkpoint_every", 0, 0),
    ("eval.bootstrap_resamples", 100, 100),
    ("eval.latency_examples", 0, 0),
    ("eval.system_prompt", None, None),
    ("data.max_train", None, None),
    ("data.split", {"test": 0.2}, {"test": 0.2}),
    ("data.encoding", "gb18030", "gb18030"),
    ("methods.qlora.bits", 8, 8),
    ("run.device", "cuda:1", "cuda:1"),
    ("run.seeds", [0, 1, 2], [0, 1, 2]),
    ("monitor.peak_flops", 1e12, 1e12),
]


@pytest.mark.parametrize(("key", "value", "expected"), GOOD, ids=[f"{k}={v!r}" for k, v, _ in GOOD])
def test_edge_values_load(key, value, expected, tmp_path):
    loaded = load_params(_write(tmp_path, {key: value}))
    for name in key.split("."):
        loaded = loaded[name] if isinstance(loaded, dict) else getattr(loaded, name)
    assert loaded == expected and type(loaded) is type(expected)


def test_yaml_exponent_without_dot_is_read_as_float(tmp_path):
    """YAML 1.1 reads `1e-3` as the string '1e-3'; a hand-edited params.yaml still gets lr 0.001."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    assert "lr: 1.0e-3" in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("lr: 1.0e-3", "lr: 1e-3"), encoding="utf-8")
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "1e-3"
    assert load_params(path).train.lr == 0.001


def test_dvc_set_writes_numbers_that_load(tmp_path):
    """`dvc exp run -S` rewrites params.yaml through DVC's Hydra override parser: `train.lr=1e-3` arrives as a
    float, and `train.batch_size=eight` as the string that load_params then rejects."""
    from dvc.utils.hydra import apply_overrides

    path = _write(tmp_path, {})
    apply_overrides(str(path), ["train.lr=1e-3", "train.epochs=0.5", "train.max_grad_norm=null"])
    p = load_params(path)
    assert (p.train.lr, p.train.epochs, p.train.max_grad_norm) == (0.001, 0.5, None)
    apply_overrides(str(path), ["train.batch_size=eight"])
    with pytest.raises(ConfigError, match=r"train.batch_size is 'eight' \(a string\)"):
        load_params(path)


def test_structure_errors(tmp_path):
    """A missing seed, unknown keys and sections that are not mappings: named, never a traceback."""
    params = yaml.safe_load(yaml.safe_dump(COMMITTED))
    del params["seed"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="seed is missing") as info:
        load_params(tmp_path / "params.yaml")
    assert "seed: 42" in info.value.fix
    with pytest.raises(ConfigError, match="data.split has unknown key 'valid'") as info:
        load_params(_write(tmp_path, {"data.split": {"valid": 0.1}}))
    assert info.value.fix == "did you mean 'validation'?"
    with pytest.raises(ConfigError, match="unknown top-level key 'traine'"):
        load_params(_write(tmp_path, {"traine": {}}))
    with pytest.raises(ConfigError, match="methods.lora must be a mapping, got int"):
        load_params(_write(tmp_path, {"methods.lora": 5}))
    with pytest.raises(ConfigError, match="models must be a mapping, got list"):
        load_params(_write(tmp_path, {"models": ["smollm2-135m"]}))


def test_bootstrap_floor_says_why(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_params(_write(tmp_path, {"eval.bootstrap_resamples": 50}))
    assert "p cannot go below 1/(resamples+1)" in info.value.fix


def _numeric(hint) -> bool:
    typ, _ = P._unwrap(hint)
    args = typing.get_args(typ)
    return typ in (int, float) or (args and args[-1] in (int, float))


SECTIONS = [P.DataParams, P.TranslateParams, P.RunParams, P.LoraParams, P.QLoraParams, P.TopLayerParams,
            P.TrainParams, P.EvalParams, P.MonitorParams, P.Params]


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_numeric_knob_has_a_range_and_every_default_passes(cls, tmp_path):
    """A knob added later without a range rule fails here, before a bad value can reach torch."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _numeric(hints[f.name]):
            rule = cls.rules.get(f.name)
            assert rule and (rule.low is not None or rule.choices), f"{cls.__name__}.{f.name} has no range"
    if cls is not P.Params:
        defaults = cls()
        if cls is P.RunParams:  # the one section whose defaults are not a valid run: no model chosen
            defaults = dataclasses.replace(defaults, models=["smollm2-135m"], methods=["lora"])
        rebuilt = P._build(cls, dataclasses.asdict(defaults), "x")
        assert rebuilt == defaults
