"""The methods users compare next (dora, lora_all, full) on the tiny random Llama/Mistral: what trains and
in which dtype, that training lowers the loss, that what ships rebuilds the trained model, and their params."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from conftest import make_project, run
from test_params import test_every_numeric_knob_has_a_range_and_every_default_passes as check_section
from test_training import EXAMPLES, SYSTEM, _logits, assert_backward_in_fp32, assert_trains_exactly, cfg
from test_training import run as train_run

from ftbench.io import ConfigError
from ftbench.methods import TOP_LAYER_FILE, count_trainable, load_tuned, prepare, save_trained
from ftbench.params import DoraParams, FullParams, LoraAllParams, ModelSpec, load_params
from ftbench.registry import base_param_count
from ftbench.training import collate, encode_examples

NEW = {"dora": DoraParams(dropout=0.0), "lora_all": LoraAllParams(dropout=0.0), "full": FullParams()}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build(path, method, *, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    return prepare(method, "tiny", ModelSpec(path=str(path)), NEW[method], dtype=dtype, device="cpu", **kw)


@pytest.fixture(scope="module")
def data(smollm_tokenizer):
    return encode_examples(smollm_tokenizer, EXAMPLES, max_seq_len=192, style="chat", system_prompt=SYSTEM,
                           completion_only=True, counts={})


def _expected_trainable(model, method: str) -> set[str]:
    names = [n for n, _ in model.named_parameters()]
    if method == "full":
        return set(names)
    if method == "dora":  # q, v adapters of each block, each with its magnitude vector
        return {n for n in names if re.search(r"\.(q|v)_proj\.(lora_A|lora_B|lora_magnitude_vector)\.", n)}
    return {n for n in names if re.search(r"\.(lora_A|lora_B)\.", n)}


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_mistral"])
@pytest.mark.parametrize("method", list(NEW))
@pytest.mark.parametrize("frozen", [torch.float32, torch.bfloat16])
def test_every_parameter_trains_or_not_in_the_stated_dtype(request, arch, method, frozen):
    model = build(request.getfixturevalue(arch), method, dtype=frozen, trainable_dtype=torch.float32)
    expected = _expected_trainable(model, method)
    blocks = 2
    if method == "dora":
        assert len(expected) == blocks * 2 * 3  # q, v x A, B, magnitude
    if method == "lora_all":
        adapted = {re.sub(r"\.lora_[AB]\..*", "", n) for n in expected}
        assert adapted == {f"base_model.model.model.layers.{i}.{part}.{p}" for i in range(blocks) for p in PROJECTIONS
                           for part in ("self_attn", "mlp") if (part == "mlp") == (p in PROJECTIONS[4:])}
        assert not any("lm_head" in n or "embed" in n for n in expected)
    assert_trains_exactly(model, expected, frozen)
    base = base_param_count(model.config)
    if method == "full":  # a tied head is the embedding: counted once, as in the base count
        assert count_trainable(model) == base
    else:
        assert 0 < count_trainable(model) < 0.2 * base
    assert_backward_in_fp32(model)


def test_lora_all_adapts_more_than_lora_and_dora_adds_only_magnitudes(tiny_llama):
    from test_training import build as build_lora

    lora = count_trainable(build_lora(tiny_llama, "lora"))
    dora, lora_all = count_trainable(build(tiny_llama, "dora")), count_trainable(build(tiny_llama, "lora_all"))
    hidden, kv = 64, 32  # tiny model: q is 64 -> 64, v is 64 -> 32 (2 of 4 heads)
    assert dora - lora == 2 * (hidden + kv)  # one magnitude per output row of q and v, in each of 2 blocks
    assert lora_all > 3 * lora


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_mistral"])
@pytest.mark.parametrize("method", list(NEW))
def test_training_lowers_the_loss_and_the_saved_model_reproduces_it(request, smollm_tokenizer, data, arch, method,
                                                                    tmp_path):
    path = request.getfixturevalue(arch)
    spec = ModelSpec(path=str(path))
    fixed = collate(data[:4], smollm_tokenizer.pad_token_id)
    model = build(path, method)
    model.eval()
    with torch.no_grad():
        before = float(model(**fixed).loss)
    train_run(model, data[:4], smollm_tokenizer, cfg(epochs=8, lr=1e-2 if method != "full" else 1e-3))
    with torch.no_grad():
        after = float(model(**fixed).loss)
    assert after < before - 0.15, (before, after)  # the same bar as lora in test_training

    save_trained(model, method, tmp_path, {"method": method})
    trained = _logits(model, fixed)
    reloaded = load_tuned(method, "tiny", spec, NEW[method], tmp_path, dtype=torch.float32, device="cpu")
    torch.testing.assert_close(_logits(reloaded, fixed), trained, rtol=1e-4, atol=1e-4)
    shipped = sum(f.stat().st_size for f in tmp_path.iterdir())
    weights = sum(p.numel() * 4 for p in reloaded.parameters())  # fp32, a tied head once
    if method == "full":
        assert {f.name for f in tmp_path.iterdir()} == {TOP_LAYER_FILE, "ftbench.json"}
        assert 0.99 * weights < shipped < 1.01 * weights  # the whole model, the tied head not twice
    else:
        assert (tmp_path / "adapter_model.safetensors").is_file() and not (tmp_path / TOP_LAYER_FILE).exists()
        assert shipped < 0.2 * weights
        assert not hasattr(reloaded, "peft_config")  # merged into plain weights
        unmerged = load_tuned(method, "tiny", spec, NEW[method], tmp_path, dtype=torch.float32, device="cpu",
                              merge=False)
        assert hasattr(unmerged, "peft_config")
        if method == "dora":
            assert json.loads((tmp_path / "adapter_config.json").read_text())["use_dora"] is True
        torch.testing.assert_close(_logits(reloaded, fixed), _logits(unmerged, fixed), rtol=1e-4, atol=1e-4)


def test_full_artifact_from_another_model_or_incomplete_is_refused(tiny_llama, tiny_mistral, tmp_path):
    from safetensors.torch import load_file, save_file

    save_trained(build(tiny_llama, "full"), "full", tmp_path, {})
    spec = ModelSpec(path=str(tiny_mistral))  # untied head: the Llama artifact lacks lm_head.weight
    with pytest.raises(ConfigError, match="lacks weights of a fully tuned model"):
        load_tuned("full", "tiny", spec, FullParams(), tmp_path, dtype=torch.float32, device="cpu")
    state = load_file(tmp_path / TOP_LAYER_FILE)
    state.pop("model.norm.weight")
    save_file(state, tmp_path / TOP_LAYER_FILE)
    with pytest.raises(ConfigError, match=r"model\.norm\.weight"):
        load_tuned("full", "tiny", ModelSpec(path=str(tiny_llama)), FullParams(), tmp_path, dtype=torch.float32,
                   device="cpu")


def test_full_trains_in_the_trainable_dtype_with_no_frozen_copy(tiny_llama):
    """Nothing is frozen: the model is in trainable_dtype whole, not bf16 blocks cast back and forth."""
    model = build(tiny_llama, "full", dtype=torch.bfloat16, trainable_dtype=torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    hidden = []
    model.model.layers[0].register_forward_hook(lambda m, a, out: hidden.append(out[0] if isinstance(out, tuple)
                                                                                  else out))
    model(input_ids=torch.tensor([[5, 6, 7]]))
    assert hidden[0].dtype == torch.float32


# --- params -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [DoraParams, LoraAllParams, FullParams], ids=lambda c: c.__name__)
def test_new_sections_have_ranges_and_valid_defaults(cls, tmp_path):
    check_section(cls, tmp_path)


def _params_with(tmp_path, **methods):
    from conftest import REPO

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, section in methods.items():
        raw["methods"][name] = section
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_committed_params_keep_the_reference_methods_and_configure_the_new_ones():
    from conftest import REPO

    params = load_params(REPO / "params.yaml")
    assert params.run.methods == ["lora", "qlora", "top_layer"]
    assert params.method("dora").target_modules == params.method("lora").target_modules
    assert params.method("dora").r == params.method("lora").r
    assert params.method("lora_all").target_modules == "all-linear"
    assert params.lr_for("full") == 5e-5 and params.lr_for("full") < params.lr_for("lora")


@pytest.mark.parametrize("section,match", [
    ({"r": 8, "target_modules": ["q_proj", "v_proj"]}, r"methods\.lora_all\.target_modules is \['q_proj', 'v_proj'\]"),
    ({"target_modules": "q_proj"}, r"methods\.lora_all\.target_modules is 'q_proj'"),
])
def test_lora_all_with_chosen_targets_is_refused(tmp_path, section, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_params(_params_with(tmp_path, lora_all=section))
    assert "use all-linear" in info.value.fix and "use method lora" in info.value.fix


@pytest.mark.parametrize("method,section,match", [
    ("full", {"r": 8}, "methods.full has unknown key 'r'"),
    ("full", {"lr": 0}, r"methods\.full\.lr is 0"),
    ("dora", {"r": 0}, r"methods\.dora\.r is 0"),
    ("dora", {"use_dora": False}, "methods.dora has unknown key 'use_dora'"),
])
def test_bad_new_method_sections_are_refused(tmp_path, method, section, match):
    with pytest.raises(ConfigError, match=match):
        load_params(_params_with(tmp_path, **{method: section}))


def test_dora_target_missing_from_the_model_is_named(tiny_llama):
    with pytest.raises(ConfigError, match=r"methods\.dora\.target_modules \['qkv_proj'\]"):
        prepare("dora", "tiny", ModelSpec(path=str(tiny_llama)), DoraParams(target_modules=["qkv_proj"]),
                dtype=torch.float32, device="cpu")


# --- the stages, for full ----------------------------------------------------------------------------


def test_full_through_the_train_and_evaluate_stages(tmp_path, tiny_llama):
    root = make_project(tmp_path / "project", tiny_llama, **{"run.methods": ["full"]})
    run(["dvc", "repro", "train@tiny-full-42", "evaluate@tiny-full-42"], root)
    train = json.loads((root / "metrics/runs/tiny/full-s42/train.json").read_text())
    assert train["trainable_percent"] == pytest.approx(100.0)
    assert train["trainable_dtype"] == ["float32"] and train["lr"] == 5e-5
    assert (root / f"models/tiny/full-s42/{TOP_LAYER_FILE}").is_file()
    ev = json.loads((root / "metrics/runs/tiny/full-s42/eval.json").read_text())
    assert ev["n"] == 8 and 0 <= ev["f1"] <= 1


def test_weight_methods_never_import_peft_or_bitsandbytes(tiny_llama, tmp_path):
    """The top-layer and full runs train and ship plain weights: building, training, saving and reloading them must
    not pay for importing peft and bitsandbytes (~3 s in every such stage), which the adapter methods need."""
    import subprocess
    import sys

    code = f"""
import sys, torch
from pathlib import Path
from ftbench.methods import load_tuned, prepare, save_trained
from ftbench.params import FullParams, ModelSpec, TopLayerParams, TrainParams
from ftbench.training import encode_examples, train
from transformers import AutoTokenizer
EXAMPLES = {EXAMPLES!r}
for method, cfg in (("top_layer", TopLayerParams()), ("full", FullParams())):
    out = Path({str(tmp_path)!r}) / method
    out.mkdir()
    model = prepare(method, "tiny", ModelSpec(path={str(tiny_llama)!r}), cfg, dtype=torch.float32, device="cpu")
    tok = AutoTokenizer.from_pretrained({str(tiny_llama)!r})
    encoded = encode_examples(tok, EXAMPLES[:4], max_seq_len=64, style="alpaca", system_prompt=None,
                              completion_only=True, counts={{}})
    train(model, encoded, TrainParams(epochs=1, batch_size=2, checkpoint_every=0), lr=1e-3, seed=0,
          pad_id=tok.pad_token_id, device="cpu")
    save_trained(model, method, out, {{"method": method}})
    load_tuned(method, "tiny", ModelSpec(path={str(tiny_llama)!r}), cfg, out, dtype=torch.float32, device="cpu")
print(sorted(m for m in ("peft", "bitsandbytes") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
