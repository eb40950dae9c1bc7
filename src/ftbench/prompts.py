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


#: How a context over the budget is shortened. ``answer`` centres the kept window on the gold answer: for
#: training only, where the answer is the label being taught and a window without it teaches nothing.
#: ``start`` / ``end`` keep the context's beginning / end and never look at the answer: what evaluation
#: must use, or a too-long test document would be shown a window guaranteed to hold its answer.
TRUNCATION_MODES = ("answer", "start", "end")


def fit_context(tokenizer: Any, example: dict, budget: int, render, keep: str = "answer") -> tuple[dict, bool] | None:
    """Shorten ``input`` so the rendered prompt fits in ``budget`` tokens, by the rule ``keep`` (see
    :data:`TRUNCATION_MODES`); only ``keep="answer"`` reads ``example["output"]``.

    Returns (example, truncated) or None when no window of the context fits (for ``answer``: none that
    holds the whole answer).
    """
    if keep not in TRUNCATION_MODES:
        raise ValueError(f"unknown context truncation {keep!r}; expected one of {TRUNCATION_MODES}")
    prompt_len = len(tokenizer(render(example), add_special_tokens=False)["input_ids"])
    if prompt_len <= budget:
        return example, False
    context = example.get("input") or ""
    enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    keep_n = len(offsets) - (prompt_len - budget) - 2  # 2: re-tokenising the cut text may merge differently
    if keep_n <= 0:
        return None
    if keep == "start":
        start_tok = 0
    elif keep == "end":
        start_tok = len(offsets) - keep_n
    else:
        start_tok = _answer_window_start(context, offsets, keep_n, example["output"])
        if start_tok is None:
            return None
    window = context[offsets[start_tok][0]:offsets[start_tok + keep_n - 1][1]]
    shorter = {**example, "input": window}
    if len(tokenizer(render(shorter), add_special_tokens=False)["input_ids"]) > budget:
        return None
    return shorter, True


def _answer_window_start(context: str, offsets: list, keep_n: int, answer: str) -> int | None:
    """First token of a ``keep_n``-token window centred on ``answer`` (0 if it is not in the context),
    or None when the answer alone is longer than the window."""
    at = context.find(answer)
    if at < 0:
        return 0
    first = next((i for i, (s, e) in enumerate(offsets) if e > at), 0)
    last = next((i for i, (s, e) in enumerate(offsets) if e >= at + len(answer)), len(offsets) - 1)
    if last - first + 1 > keep_n:
        return None
    return max(0, min(first - (keep_n - (last - first + 1)) // 2, len(offsets) - keep_n))
