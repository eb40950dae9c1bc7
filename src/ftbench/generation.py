"""Batched greedy generation with the model's prompt format, plus a batch-size-1 latency probe.

Throughput is measured on the batched run (what evaluation costs); latency per example on single-example
runs (what one user waits), because per-example figures from a padded batch mix the two.

Prompts are built without the gold answer: a context over the budget is shortened by a fixed rule
(``eval.context_truncation``), so evaluation never shows a window chosen to contain the label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ftbench.prompts import fit_context, render_prompt


@dataclass(frozen=True)
class EvalPrompt:
    """A test question as the model sees it.

    ``context`` is the context shown (after shortening), ``shortened`` whether it lost anything: kept so
    that evaluation can count, after the fact, the questions whose answer was cut off.
    """

    text: str
    context: str
    shortened: bool


def fit_prompts(tokenizer: Any, examples: list[dict], *, style: str, system_prompt: str | None,
                max_prompt_tokens: int, context_truncation: str = "start") -> list[EvalPrompt]:
    """Render every example's prompt within ``max_prompt_tokens``, never reading ``example["output"]``.

    A context over the budget keeps its start or end (``context_truncation``). A question whose template
    and question alone exceed the budget is asked without context (the tokenizer then cuts the prompt from
    the left): the model gets it wrong, which is the honest score for a too-short context window.
    """
    out = []
    for ex in examples:
        def render(e: dict) -> str:
            return render_prompt(tokenizer, e, style, system_prompt)

        fitted = fit_context(tokenizer, ex, max_prompt_tokens, render, keep=context_truncation)
        shown, shortened = fitted if fitted else ({"instruction": ex["instruction"], "input": ""}, True)
        out.append(EvalPrompt(render(shown), shown.get("input") or "", shortened))
    return out


def prompts_for(tokenizer: Any, examples: list[dict], *, style: str, system_prompt: str | None,
                max_prompt_tokens: int, context_truncation: str = "start") -> list[str]:
    """The prompt texts of :func:`fit_prompts`."""
    return [p.text for p in fit_prompts(tokenizer, examples, style=style, system_prompt=system_prompt,
                                        max_prompt_tokens=max_prompt_tokens,
                                        context_truncation=context_truncation)]


def truncation_counts(examples: list[dict], prompts: list[EvalPrompt]) -> dict[str, int]:
    """How many questions had their context shortened, and how many of those lost the gold answer (it was in
    the full context, it is not in the one shown). Reads the labels, so it runs after the prompts are built
    and only reports."""
    shortened = sum(p.shortened for p in prompts)
    cut = sum(p.shortened and ex["output"] in (ex.get("input") or "") and ex["output"] not in p.context
              for ex, p in zip(examples, prompts, strict=True))
    return {"context_shortened": shortened, "answer_cut_off": cut}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, list | tuple) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@dataclass
class _Batch:
    texts: list[str]
    generated: int  # tokens up to and including each row's first stop token, summed over rows
    steps: int  # decoding steps run (the batch stops when every row has stopped, or at max_new_tokens)


@torch.inference_mode()
def _generate(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int, stops: list[int],
              device: str) -> _Batch:
    """Greedy continuation of already tokenised prompts, left-padded into one batch."""
    pad = tokenizer.pad_token_id
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                         max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stops,
                         pad_token_id=pad)
    new = out[:, width:]
    ends = set(stops) | {pad}
    generated = 0
    for row in new.tolist():
        generated += next((i + 1 for i, t in enumerate(row) if t in ends), len(row))
    texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return _Batch(texts, generated, new.shape[1])


def generate(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, batch_size: int,
             max_prompt_tokens: int, device: str, latency_examples: int = 32) -> tuple[list[str], dict]:
    """Greedy answers to ``prompts`` (in their order) and the inference cost figures.

    Each prompt is tokenised once; batches are formed from prompts of similar token length (least
    padding, and padded positions cost as much as real ones). A batch stops decoding as soon as every row
    has produced a stop token (``generate`` checks this each step). A prompt over ``max_prompt_tokens``
    loses its start, as the tokenizer's left truncation would.

    Cost: ``examples_per_s`` is the headline. ``generated_tokens`` counts tokens up to each answer's
    stop token; ``decoded_tokens`` counts what the model computed while decoding (rows × steps, padded
    rows of finished answers included), so ``decoded_tokens_per_s`` does not make a method that answers
    briefly look slow. ``latency_seconds`` holds the single-example runs on the first ``latency_examples``
    prompts, ``latency_probe_seconds`` their total wall time.
    """
    model.eval()
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"][-max_prompt_tokens:] for p in prompts]
    stops = _stop_ids(model, tokenizer)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    answers: list[str] = [""] * len(ids)
    generated = steps = decoded = 0
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = _generate(model, tokenizer, [ids[j] for j in idx], max_new_tokens, stops, device)
        generated, steps, decoded = generated + batch.generated, steps + batch.steps, decoded + batch.steps * len(idx)
        for j, text in zip(idx, batch.texts, strict=True):
            answers[j] = text
    _sync(device)
    seconds = time.perf_counter() - start
    latencies = []
    probe_start = time.perf_counter()
    for row in ids[:latency_examples]:
        _sync(device)
        t0 = time.perf_counter()
        _generate(model, tokenizer, [row], max_new_tokens, stops, device)
        _sync(device)
        latencies.append(time.perf_counter() - t0)
    probe_seconds = time.perf_counter() - probe_start
    cost = {
        "generation_seconds": seconds,
        "examples_per_s": len(ids) / seconds if seconds > 0 else None,
        "generated_tokens": generated,
        "decoding_steps": steps,
        "decoded_tokens": decoded,
        "decoded_tokens_per_s": decoded / seconds if seconds > 0 else None,
        "latency_seconds": latencies,
        "latency_probe_seconds": probe_seconds,
    }
    return answers, cost


def generate_answers(model: Any, tokenizer: Any, examples: list[dict], *, style: str, system_prompt: str | None,
                     max_new_tokens: int, batch_size: int, max_prompt_tokens: int, device: str,
                     latency_examples: int = 32, context_truncation: str = "start") -> tuple[list[str], dict]:
    """Greedy answers for ``examples`` and the inference cost figures (:func:`prompts_for`, then
    :func:`generate`)."""
    prompts = prompts_for(tokenizer, examples, style=style, system_prompt=system_prompt,
                          max_prompt_tokens=max_prompt_tokens, context_truncation=context_truncation)
    return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    max_prompt_tokens=max_prompt_tokens, device=device, latency_examples=latency_examples)
