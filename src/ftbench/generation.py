"""Batched greedy generation with the model's prompt format, plus a batch-size-1 latency probe.

Throughput is measured on the batched run (what evaluation costs); latency per example on a few
single-example runs (what one user waits), because per-example figures from a padded batch mix
the two.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ftbench.prompts import fit_context, render_prompt


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prompts_for(tokenizer: Any, examples: list[dict], *, style: str, system_prompt: str | None,
                max_prompt_tokens: int) -> list[str]:
    prompts = []
    for ex in examples:
        render = lambda e: render_prompt(tokenizer, e, style, system_prompt)  # noqa: E731
        fitted = fit_context(tokenizer, ex, max_prompt_tokens, render)
        # An answer that cannot fit is still asked, on the left-truncated prompt: the model
        # then gets it wrong, which is the honest score for a too-short context window.
        prompts.append(render(fitted[0] if fitted else ex))
    return prompts


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, list | tuple) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def _generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, max_prompt_tokens: int,
              device: str) -> tuple[list[str], list[int]]:
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_tokens,
                    add_special_tokens=False).to(device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                         eos_token_id=_stop_ids(model, tokenizer), pad_token_id=tokenizer.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    stops = set(_stop_ids(model, tokenizer)) | {tokenizer.pad_token_id}
    counts = []
    for row in new.tolist():
        n = 0
        for t in row:
            n += 1
            if t in stops:
                break
        counts.append(n)
    texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return texts, counts


def generate_answers(model: Any, tokenizer: Any, examples: list[dict], *, style: str, system_prompt: str | None,
                     max_new_tokens: int, batch_size: int, max_prompt_tokens: int, device: str,
                     latency_examples: int = 8) -> tuple[list[str], dict]:
    """Greedy answers for ``examples`` and the inference cost figures."""
    model.eval()
    prompts = prompts_for(tokenizer, examples, style=style, system_prompt=system_prompt,
                          max_prompt_tokens=max_prompt_tokens)
    # Sorting by length cuts padding; answers are put back in the examples' order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    generated = 0
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        texts, counts = _generate(model, tokenizer, [prompts[j] for j in idx], max_new_tokens, max_prompt_tokens,
                                  device)
        generated += sum(counts)
        for j, t in zip(idx, texts, strict=True):
            answers[j] = t
    _sync(device)
    batched_s = time.perf_counter() - start
    latencies = []
    for p in prompts[:latency_examples]:
        _sync(device)
        t0 = time.perf_counter()
        _generate(model, tokenizer, [p], max_new_tokens, max_prompt_tokens, device)
        _sync(device)
        latencies.append(time.perf_counter() - t0)
    cost = {
        "generation_seconds": batched_s,
        "generated_tokens": generated,
        "generated_tokens_per_s": generated / batched_s if batched_s > 0 else None,
        "examples_per_s": len(prompts) / batched_s if batched_s > 0 else None,
        "latency_seconds": latencies,
    }
    return answers, cost
