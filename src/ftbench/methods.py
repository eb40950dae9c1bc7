"""Tuning methods: one small function per strategy behind one dispatcher (LLaMA-Factory style).

- ``lora``: peft LoRA adapters on ``target_modules``; the base stays frozen.
- ``qlora``: the base loaded through bitsandbytes (4-bit NF4 + double quantisation by default, or
  8-bit), then LoRA on top.
- ``top_layer``: every weight frozen except the last ``layers`` transformer blocks (and the output
  head if ``lm_head``); what ships is those blocks' weights.
- ``dora``: LoRA with peft's weight decomposition (``use_dora``): each adapted weight also gets a
  trained magnitude vector; same targets and rank as ``lora`` by default; ships an adapter.
- ``lora_all``: LoRA on every linear projection of the blocks (peft ``all-linear``; not the head).
- ``full``: every weight trains (the ceiling); what ships is every weight (a tied head saved once).

Every method trains under one regime, set by :func:`prepare` from ``train.*`` rather than by the
method: frozen weights in the model dtype (``train.dtype``), trainable weights and their AdamW state in
``train.trainable_dtype`` (fp32 master weights, as peft keeps adapters), and activation checkpointing
on or off for all (``train.gradient_checkpointing``). Otherwise a memory or time difference between
methods would mix the method with its precision or its checkpointing.

:func:`save_trained` and :func:`load_tuned` write and read what the method must ship, so evaluation
rebuilds exactly the trained model (LoRA merged into the weights, which generates faster).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ftbench.io import ConfigError
from ftbench.params import FullParams, LoraAllParams, LoraParams, ModelSpec, QLoraParams, TopLayerParams
from ftbench.registry import base_model, load_model

TOP_LAYER_FILE = "tuned_layers.safetensors"  # top_layer and full: the trained weights by name
ADAPTER_METHODS = ("lora", "qlora", "dora", "lora_all")  # what ships is a peft adapter


def _lora_config(cfg: LoraParams | LoraAllParams, *, dora: bool = False) -> Any:
    from peft import LoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      use_dora=dora, task_type="CAUSAL_LM")


def _compute_dtype(cfg: QLoraParams, device: str) -> torch.dtype:
    if cfg.compute_dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, cfg.compute_dtype)


def quantization_config(cfg: QLoraParams, device: str, *, fsdp_dtype: torch.dtype | None = None) -> Any:
    """bitsandbytes' config for ``methods.qlora``. Under FSDP (``fsdp_dtype``: the dtype the rest of the model
    is loaded in) the 4-bit weights are packed in that dtype unless ``quant_storage`` says otherwise: FSDP
    flattens a block's weights into one tensor of one float dtype (peft's FSDP-QLoRA recipe)."""
    from transformers import BitsAndBytesConfig

    if cfg.bits == 4:
        if cfg.quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"methods.qlora.quant_type '{cfg.quant_type}' is not a 4-bit type", fix="use nf4 or fp4")
        compute = _compute_dtype(cfg, device)
        storage = {"auto": fsdp_dtype or torch.uint8, "uint8": torch.uint8}.get(cfg.quant_storage) \
            or getattr(torch, cfg.quant_storage)
        if fsdp_dtype is not None and storage != fsdp_dtype:
            raise ConfigError(f"methods.qlora.quant_storage is {cfg.quant_storage} but FSDP needs the 4-bit weights "
                              f"packed in the model's dtype ({str(fsdp_dtype).removeprefix('torch.')})",
                              fix="set methods.qlora.quant_storage: auto")
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.quant_type,
                                  bnb_4bit_use_double_quant=cfg.double_quant, bnb_4bit_compute_dtype=compute,
                                  bnb_4bit_quant_storage=storage)
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


def _dora(name: str, spec: ModelSpec, cfg: LoraParams, dtype: torch.dtype, device: str) -> Any:
    from peft import get_peft_model

    model = load_model(name, spec, dtype=dtype, device=device)
    _check_targets(model, cfg, "dora")
    return get_peft_model(model, _lora_config(cfg, dora=True))


def _lora_all(name: str, spec: ModelSpec, cfg: LoraAllParams, dtype: torch.dtype, device: str) -> Any:
    from peft import get_peft_model

    # peft's all-linear: every nn.Linear but the output head, i.e. q,k,v,o,gate,up,down of every block.
    return get_peft_model(load_model(name, spec, dtype=dtype, device=device), _lora_config(cfg))


def _qlora(name: str, spec: ModelSpec, cfg: QLoraParams, dtype: torch.dtype, device: str, fsdp: bool = False) -> Any:
    from peft import get_peft_model

    model = load_model(name, spec, dtype=dtype, device=device,
                       quantization_config=quantization_config(cfg, device, fsdp_dtype=dtype if fsdp else None))
    _check_targets(model, cfg, "qlora")
    # No prepare_model_for_kbit_training: it upcasts every unquantised frozen weight (embeddings, norms,
    # head) to fp32 and turns checkpointing on, which would give QLoRA another regime than LoRA. What
    # else it does is done for every method: get_peft_model freezes the base, prepare() sets the regime.
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
    model = load_model(name, spec, dtype=dtype, device=device)
    trainable = set(_top_layer_names(model, cfg))
    for n, p in model.named_parameters():
        p.requires_grad = n in trainable
    if cfg.lm_head and getattr(model.config, "tie_word_embeddings", False):
        # The head is the embedding matrix: training one trains both (documented in README).
        model.get_input_embeddings().weight.requires_grad = True
    return model


def _full(name: str, spec: ModelSpec, cfg: FullParams, dtype: torch.dtype, device: str) -> Any:
    model = load_model(name, spec, dtype=dtype, device=device)
    for p in model.parameters():  # a tied head is the embedding Parameter: it trains once, as one
        p.requires_grad = True
    return model


_BUILDERS = {"lora": _lora, "qlora": _qlora, "top_layer": _top_layer, "dora": _dora, "lora_all": _lora_all,
             "full": _full}


def _cast_floats(obj: Any, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if type(obj) in (tuple, list):
        return type(obj)(_cast_floats(o, dtype) for o in obj)
    if type(obj) is dict:
        return {k: _cast_floats(v, dtype) for k, v in obj.items()}
    return obj  # caches and other objects pass through


def _compute_in(module: torch.nn.Module, dtype: torch.dtype, out_dtype: torch.dtype | None) -> None:
    """Run ``module`` in ``dtype`` inside a model whose hidden states flow in ``out_dtype``."""
    module.register_forward_pre_hook(lambda m, args, kwargs: (_cast_floats(args, dtype), _cast_floats(kwargs, dtype)),
                                     with_kwargs=True)
    module.register_forward_hook(lambda m, args, out: _cast_floats(out, out_dtype))


def _keep_trainable_in(model: Any, trainable_dtype: torch.dtype, frozen_dtype: torch.dtype) -> None:
    """Trainable weights (and so their gradients and AdamW state) in ``trainable_dtype``, for every method.

    peft LoRA layers already cast their input to the adapter's dtype and their output back. Whole
    units that train (top-layer blocks, a trained head or embedding) would meet hidden states of the
    frozen dtype, so each such unit gets a pre-hook casting its inputs to ``trainable_dtype`` and a
    hook casting its output back to the frozen dtype (the head's logits stay in ``trainable_dtype``):
    the unit computes at its master precision, the frozen rest as before. Hooks rather than autocast:
    autocast would run the trained block's matmuls in bf16, unlike the adapters, and does not exist for
    every device. With equal dtypes (the CPU default) nothing is cast and no hook is added.
    """
    for p in model.parameters():
        if p.requires_grad and p.dtype != trainable_dtype:
            p.data = p.data.to(trainable_dtype)
    if trainable_dtype == frozen_dtype:
        return
    base = base_model(model)
    blocks = list(getattr(getattr(base, "model", None), "layers", None) or [])
    head = base.get_output_embeddings()
    for unit in (base.get_input_embeddings(), *blocks, head):
        params = [p for p in unit.parameters() if p.is_floating_point()]
        if params and any(p.requires_grad for p in params) and all(p.dtype == trainable_dtype for p in params):
            _compute_in(unit, trainable_dtype, None if unit is head else frozen_dtype)


def _checkpoint_activations(model: Any) -> None:
    """Activation (gradient) checkpointing of every block, non-reentrant, the same for every method.

    transformers also makes the embeddings' output require grad (needed by reentrant checkpointing
    only); that is undone, or top-layer tuning would backpropagate through every frozen block.
    """
    base = base_model(model)
    enable = getattr(base, "activation_checkpointing_enable", None)  # the name since transformers 5.x
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.disable_input_require_grads()


def prepare(method: str, name: str, spec: ModelSpec, cfg: Any, *, dtype: torch.dtype, device: str,
            trainable_dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False,
            fsdp: bool = False) -> Any:
    """The model with exactly the parameters ``method`` trains set to ``requires_grad``, in the common
    regime: frozen weights in ``dtype``, trainable ones in ``trainable_dtype``, checkpointing as asked.
    ``fsdp``: the model will be sharded by FSDP (QLoRA packs its 4-bit weights in a float dtype then)."""
    if method not in _BUILDERS:
        raise ConfigError(f"unknown method '{method}'", fix=f"use one of {', '.join(_BUILDERS)}")
    if method == "qlora" and device == "mps":
        raise ConfigError("qlora needs bitsandbytes, which does not run on Apple MPS", fix="use lora, or a CUDA GPU")
    if not trainable_dtype.is_floating_point:
        raise ConfigError(f"train.trainable_dtype is {trainable_dtype}", fix="use float32 or bfloat16")
    if method == "full":
        # Nothing is frozen, so the whole model is loaded in trainable_dtype: fp32 master weights that
        # also compute (no bf16 copy, no casting hooks between blocks), and AdamW's two moments in that
        # precision too: 16 bytes per parameter with float32 (weights, gradient, exp_avg, exp_avg_sq),
        # what train.json's trainable_dtype records. bfloat16 halves that, at the cost of updates
        # smaller than a weight's last bit being lost.
        dtype = trainable_dtype
    model = _BUILDERS[method](name, spec, cfg, dtype, device, **({"fsdp": fsdp} if method == "qlora" else {}))
    _keep_trainable_in(model, trainable_dtype, dtype)
    if gradient_checkpointing:
        _checkpoint_activations(model)
    return model


def regime(model: Any) -> dict:
    """What train.json records of the training regime, read from the model rather than from params."""
    return {"trainable_dtype": sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                                       if p.requires_grad}),
            "gradient_checkpointing": any(getattr(m, "gradient_checkpointing", False) is True
                                          for m in base_model(model).modules())}


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def count_trainable(model: Any) -> int:
    """Parameters the optimizer updates (``requires_grad``), the numerator of "trainable %"."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adapter_state(model: Any, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What peft writes to adapter_model.safetensors, selected from ``weights`` by name.

    peft finds adapter weights by walking the model's modules, whose names FSDP changes; this selects them
    by the names peft gives them instead (``….lora_A.<adapter>.weight`` → ``….lora_A.weight``, DoRA's
    magnitude without ``.weight``). Tested equal to peft's own output on an unwrapped model.
    """
    name = model.active_adapter
    out = {}
    for key, tensor in weights.items():
        if ".lora_" not in key or f".{name}." not in key:
            continue
        if key.endswith(f"lora_magnitude_vector.{name}.weight"):
            key = key.removesuffix(".weight")
        out[key.replace(f".{name}", "")] = tensor
    return out


def save_trained(model: Any, method: str, out: Path, meta: dict, trained: dict | None = None) -> None:
    """Write only what the method must ship: the adapter, or the tuned blocks' weights.

    ``trained``: the trained weights by name, whole, when the model's own parameters are shards (FSDP,
    ZeRO-3: gathered by ``Dist.full_state_dict``); what ships is then taken from it.
    """
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    if method in ADAPTER_METHODS:
        if trained is None:
            model.save_pretrained(out)
        else:
            save_file({k: v.contiguous().cpu() for k, v in adapter_state(model, trained).items()},
                      out / "adapter_model.safetensors", metadata={"format": "pt"})
            config = dataclasses.replace(model.peft_config[model.active_adapter], inference_mode=True)  # as peft saves
            config.save_pretrained(out)
        # peft keeps target_modules as a set, so its saved order follows the hash seed; sort it so that
        # the same training gives the same bytes (and the same DVC hash).
        config_path = out / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    else:  # top_layer: its blocks; full: every weight (named_parameters lists a tied head once)
        state = trainable_state(model) if trained is None else trained
        save_file({n: t.contiguous().cpu() for n, t in state.items()}, out / TOP_LAYER_FILE)
    (out / "ftbench.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_tuned(method: str, name: str, spec: ModelSpec, cfg: Any, artifact: Path, *,
               dtype: torch.dtype, device: str, merge: bool = True) -> Any:
    """Base model plus the trained artifact, in the method's inference setting.

    LoRA is merged into the weights (``merge_and_unload``): the same function, with no adapter matmuls
    left to run at every generated token. QLoRA stays a quantised base plus adapter: merging into
    4-bit (or int8) weights would round the update away. ``merge=False`` keeps the adapter separate.
    """
    if method == "qlora":
        from peft import PeftModel  # imported where used: ~3 s, and the top layer and full runs never need it

        base = load_model(name, spec, dtype=dtype, device=device, quantization_config=quantization_config(cfg, device))
        return PeftModel.from_pretrained(base, artifact)
    base = load_model(name, spec, dtype=dtype, device=device)
    if method in ADAPTER_METHODS:  # lora, dora (peft merges the magnitude too), lora_all
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, artifact)
        return model.merge_and_unload() if merge else model
    if method in ("top_layer", "full"):
        from safetensors.torch import load_file

        state = load_file(artifact / TOP_LAYER_FILE, device=device)
        params = dict(base.named_parameters())
        missing = set(state) - set(params)
        if missing:
            raise ConfigError(f"{artifact / TOP_LAYER_FILE} holds weights this model lacks: {sorted(missing)[:3]}",
                              fix="retrain: the artifact was made for another model")
        absent = set(params) - set(state) if method == "full" else set()
        if absent:
            raise ConfigError(f"{artifact / TOP_LAYER_FILE} lacks weights of a fully tuned model: {sorted(absent)[:3]}",
                              fix="retrain: the artifact is incomplete or was made by another method")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t.to(params[n].dtype))
        return base
    raise ConfigError(f"unknown method '{method}'", fix=f"use one of {', '.join(_BUILDERS)}")
