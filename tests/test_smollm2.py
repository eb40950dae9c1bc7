"""Slow: the shipped SmolLM2-135M for real — GGUF loading, a few training steps per method (the loss must
drop, the right parameters must train, what ships must reproduce the trained model), generation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ftbench.generation import generate_answers
from ftbench.methods import load_tuned, prepare, save_trained
from ftbench.params import load_params
from ftbench.registry import load_tokenizer
from ftbench.training import collate, encode_examples, train

pytestmark = pytest.mark.slow

EXAMPLES = [
    {"instruction": "What equipment did the US Navy test in the Pacific?",
     "input": "On March 3, the US Navy test-fired the SM-6 missile in the Pacific.", "output": "the SM-6 missile"},
    {"instruction": "Who deployed two infantry battalions?",
     "input": "On May 9, the Indian Army deployed two infantry battalions to Ladakh.", "output": "the Indian Army"},
]


@pytest.fixture(scope="module")
def params():
    from conftest import REPO

    p = load_params(REPO / "params.yaml")
    p.train.batch_size = 1
    p.train.warmup_ratio = 0.0
    return p


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("method", ["lora", "qlora", "top_layer"])
def test_training_learns_and_what_ships_reproduces_it(params, method, tmp_path):
    import bitsandbytes as bnb

    spec, cfg = params.model("smollm2-135m"), params.method(method)
    tok = load_tokenizer("smollm2-135m", spec)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    model = prepare(method, "smollm2-135m", spec, cfg, dtype=torch.float32, device="cpu")
    assert model.config.num_hidden_layers == 30
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if method == "top_layer":  # exactly the last block
        assert trainable == {n for n, _ in model.named_parameters() if n.startswith("model.layers.29.")}
    else:
        assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    if method == "qlora":
        q_proj = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
        assert isinstance(q_proj, bnb.nn.Linear4bit)
    data = encode_examples(tok, EXAMPLES, max_seq_len=256, style="chat", system_prompt=params.eval.system_prompt,
                           completion_only=True, counts={})
    fixed = collate(data, tok.pad_token_id)
    with torch.no_grad():
        before = float(model.eval()(**fixed).loss)
    result = train(model, data, dataclasses.replace(params.train, epochs=3), lr=1e-3, seed=0,
                   pad_id=tok.pad_token_id, device="cpu")
    with torch.no_grad():
        after = float(model(**fixed).loss)
    assert result.steps == 6 and after < 0.7 * before, (before, after)

    save_trained(model, method, tmp_path, {"method": method})
    tuned = load_tuned(method, "smollm2-135m", spec, cfg, tmp_path, dtype=torch.float32, device="cpu")
    torch.testing.assert_close(_logits(tuned, fixed), _logits(model, fixed), rtol=1e-4, atol=1e-4)
    answers, cost = generate_answers(tuned, tok, EXAMPLES, style="chat", system_prompt=params.eval.system_prompt,
                                     max_new_tokens=12, batch_size=2, max_prompt_tokens=256, device="cpu",
                                     latency_examples=1)
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)
    assert cost["generated_tokens"] > 0 and len(cost["latency_seconds"]) == 1


def test_untuned_model_answers_sensibly(params):
    """The dequantised GGUF is a working instruct model, not noise: it names the subject from the context."""
    from ftbench.registry import load_model

    spec = params.model("smollm2-135m")
    tok = load_tokenizer("smollm2-135m", spec)
    model = load_model("smollm2-135m", spec, dtype=torch.float32, device="cpu")
    answers, _ = generate_answers(model, tok, EXAMPLES[1:], style="chat", system_prompt=params.eval.system_prompt,
                                  max_new_tokens=16, batch_size=1, max_prompt_tokens=256, device="cpu",
                                  latency_examples=0)
    assert "indian army" in answers[0].lower(), answers
