"""Tuning methods: one small function per strategy behind one dispatcher (LLaMA-Factory style).

- ``lora``: peft LoRA adapters on ``target_modules``; the base stays frozen in full precision.
- ``qlora``: the base loaded through bitsandbytes (4-bit NF4 + double quantisation by default, or
  8-bit), prepared with ``prepare_model_for_kbit_training``, then LoRA on top.
- ``top_layer``: every weight frozen except the last ``layers`` transformer blocks (and the output
  head if ``lm_head``); what ships is those blocks' weights.

Each returns the trainable model; :func:`save_trained` and :func:`load_tuned` write and read what
the method must ship, so evaluation rebuilds exactly the trained model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ftbench.io import ConfigError
from ftbench.params import LoraParams, ModelSpec, QLoraParams, TopLayerParams
from ftbench.registry import load_model

TOP_LAYER_FILE = "tuned_layers.safetensors"


def _lora_config(cfg: LoraParams) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")


def quantization_config(cfg: QLoraParams, device: str) -> Any:
    from transformers import BitsAndBytesConfig

    if cfg.bits == 4:
        if cfg.quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"methods.qlora.quant_type '{cfg.quant_type}' is not a 4-bit type", fix="use nf4 or fp4")
        compute = (torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32) \
            if cfg.compute_dtype == "auto" else getattr(torch, cfg.compute_dtype)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.quant_type,
                                  bnb_4bit_use_double_quant=cfg.double_quant, bnb_4bit_compute_dtype=compute)
    if cfg.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"methods.qlora.bits is {cfg.bits}", fix="use 4 (NF4 QLoRA) or 8 (LLM.int8)")


def _check_targets(model: Any, cfg: LoraParams, method: str) -> None:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in cfg.target_modules if t not in names]
    if missing:
        raise ConfigError(f"methods.{method}.target_modules {missing} are not modules of this model",
                          fix="use names such as q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")


def _lora(name: str, spec: ModelSpec, cfg: LoraParams, dtype: torch.dtype, device: str) -> Any:
    from peft import get_peft_model

    model = load_model(name, spec, dtype=dtype, device=device)
    _check_targets(model, cfg, "lora")
    return get_peft_model(model, _lora_config(cfg))


def _qlora(name: str, spec: ModelSpec, cfg: QLoraParams, dtype: torch.dtype, device: str) -> Any:
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = load_model(name, spec, dtype=dtype, device=device, quantization_config=quantization_config(cfg, device))
    _check_targets(model, cfg, "qlora")
    # Gradient checkpointing trades compute for memory; on a 135M model it only slows the CPU run.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=device.startswith("cuda"))
    return get_peft_model(model, _lora_config(cfg))


def _blocks(model: Any) -> Any:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ConfigError(f"top_layer tuning does not know where the blocks of {type(model).__name__} are",
                          fix="use a Llama- or Mistral-style model (model.model.layers)")
    return layers


def _top_layer_names(model: Any, cfg: TopLayerParams) -> list[str]:
    blocks = _blocks(model)
    if not 1 <= cfg.layers <= len(blocks):
        raise ConfigError(f"methods.top_layer.layers is {cfg.layers} but the model has {len(blocks)} blocks",
                          fix=f"use a value from 1 to {len(blocks)}")
    first = len(blocks) - cfg.layers
    prefixes = tuple(f"model.layers.{i}." for i in range(first, len(blocks)))
    names = [n for n, _ in model.named_parameters() if n.startswith(prefixes)]
    if cfg.lm_head:
        names.append("lm_head.weight")
    return names


def _top_layer(name: str, spec: ModelSpec, cfg: TopLayerParams, dtype: torch.dtype, device: str) -> Any:
    # The blocks train in the model's dtype (bf16 on a GPU, as the study ran): an fp32 copy of
    # only the top blocks would break the dtype of their matmuls with the frozen bf16 rest.
    model = load_model(name, spec, dtype=dtype, device=device)
    trainable = set(_top_layer_names(model, cfg))
    for n, p in model.named_parameters():
        p.requires_grad = n in trainable
    if cfg.lm_head and getattr(model.config, "tie_word_embeddings", False):
        # The head is the embedding matrix: training one trains both (documented in README).
        model.get_input_embeddings().weight.requires_grad = True
    return model


_BUILDERS = {"lora": _lora, "qlora": _qlora, "top_layer": _top_layer}


def prepare(method: str, name: str, spec: ModelSpec, cfg: Any, *, dtype: torch.dtype, device: str) -> Any:
    """The model with exactly the parameters ``method`` trains set to ``requires_grad``."""
    if method not in _BUILDERS:
        raise ConfigError(f"unknown method '{method}'", fix=f"use one of {', '.join(_BUILDERS)}")
    if method == "qlora" and device == "mps":
        raise ConfigError("qlora needs bitsandbytes, which does not run on Apple MPS", fix="use lora, or a CUDA GPU")
    return _BUILDERS[method](name, spec, cfg, dtype, device)


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def count_trainable(model: Any) -> int:
    """Parameters the optimizer updates (``requires_grad``), the numerator of "trainable %"."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_trained(model: Any, method: str, out: Path, meta: dict) -> None:
    """Write only what the method must ship: the adapter, or the tuned blocks' weights."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    if method in ("lora", "qlora"):
        model.save_pretrained(out)
        # peft keeps target_modules as a set, so its saved order follows the hash seed; sort it so that
        # the same training gives the same bytes (and the same DVC hash).
        config_path = out / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    else:
        state = {n: t.contiguous().cpu() for n, t in trainable_state(model).items()}
        save_file(state, out / TOP_LAYER_FILE)
    (out / "ftbench.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_tuned(method: str, name: str, spec: ModelSpec, cfg: Any, artifact: Path, *,
               dtype: torch.dtype, device: str) -> Any:
    """Base model plus the trained artifact, in the method's inference setting (QLoRA stays quantised)."""
    if method == "qlora":
        from peft import PeftModel

        base = load_model(name, spec, dtype=dtype, device=device, quantization_config=quantization_config(cfg, device))
        return PeftModel.from_pretrained(base, artifact)
    base = load_model(name, spec, dtype=dtype, device=device)
    if method == "lora":
        from peft import PeftModel

        return PeftModel.from_pretrained(base, artifact)
    if method == "top_layer":
        from safetensors.torch import load_file

        state = load_file(artifact / TOP_LAYER_FILE, device=device)
        missing = set(state) - {n for n, _ in base.named_parameters()}
        if missing:
            raise ConfigError(f"{artifact / TOP_LAYER_FILE} holds weights this model lacks: {sorted(missing)[:3]}",
                              fix="retrain: the artifact was made for another model")
        params = dict(base.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t.to(params[n].dtype))
        return base
    raise ConfigError(f"unknown method '{method}'", fix=f"use one of {', '.join(_BUILDERS)}")
