"""What the model sees: the prompt around a QA pair, and how a too-long context is shortened.

Separate from ``alpaca.py`` (which builds the QA pairs for the ``format`` stage) because every model
stage renders prompts: editing a question template or the split code must not retrain every method.
"""

from __future__ import annotations

from typing import Any

ALPACA_PROMPT = ("Below is an instruction that describes a task, paired with an input that provides further "
                 "context. Write a response that appropriately completes the request.\n\n"
                 "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")


def user_message(example: dict) -> str:
    if example.get("input"):
        return f"Context: {example['input']}\n\nQuestion: {example['instruction']}"
    return example["instruction"]


def render_prompt(tokenizer: Any, example: dict, style: str, system_prompt: str | None) -> str:
    """The text the model sees before its answer.

    ``chat`` uses the model's own chat template (what an instruct model was tuned on); models
    without one, or ``style="alpaca"``, get the Alpaca prompt.
    """
    if style == "chat" and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user_message(example)}]
        if system_prompt:
            try:
                return tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}, *messages],
                                                     tokenize=False, add_generation_prompt=True)
            except Exception:  # templates that reject a system turn (some Mistral versions)
                messages = [{"role": "user", "content": f"{system_prompt}\n\n{user_message(example)}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = ALPACA_PROMPT.format(instruction=example["instruction"], input=example.get("input", ""))
    return f"{system_prompt}\n\n{text}" if system_prompt else text


def fit_context(tokenizer: Any, example: dict, budget: int, render) -> tuple[dict, bool] | None:
    """Shorten ``input`` so the rendered prompt fits in ``budget`` tokens, keeping the answer inside.

    Returns (example, truncated) or None when even an answer-centred window cannot fit.
    """
    prompt_len = len(tokenizer(render(example), add_special_tokens=False)["input_ids"])
    if prompt_len <= budget:
        return example, False
    context = example.get("input") or ""
    enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    keep = len(offsets) - (prompt_len - budget) - 2
    if keep <= 0:
        return None
    at = context.find(example["output"])
    if at < 0:
        start_tok = 0
    else:
        first = next((i for i, (s, e) in enumerate(offsets) if e > at), 0)
        last = next((i for i, (s, e) in enumerate(offsets) if e >= at + len(example["output"])), len(offsets) - 1)
        if last - first + 1 > keep:
            return None
        start_tok = max(0, min(first - (keep - (last - first + 1)) // 2, len(offsets) - keep))
    window = context[offsets[start_tok][0]:offsets[start_tok + keep - 1][1]]
    shorter = {**example, "input": window}
    if len(tokenizer(render(shorter), add_special_tokens=False)["input_ids"]) > budget:
        return None
    return shorter, True
