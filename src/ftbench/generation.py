"""Batched greedy generation with the model's prompt format, plus a batch-size-1 latency probe.

Throughput is measured on the batched run (what evaluation costs); latency per example on single-example
runs (what one user waits), because per-example figures from a padded batch mix the two.

Questions about one document share everything up to the question (system prompt, template, context): with
``share_prefix`` a batch's prompts are prefilled in one packed forward (:func:`_prefill_packed`), each common
token prefix once and each question after it, packed several to a row so that nothing is padded to the
batch's longest, and the keys and values are then gathered into each question's row. The answers are those
of the plain batched path up to float rounding (tested), since a row attends to exactly the same tokens at
the same positions.

The key/value cache is preallocated for a batch's columns plus ``max_new_tokens`` (transformers'
``StaticCache``) and written in place, because the default ``DynamicCache`` concatenates every layer's whole
cache at every decoding step (``torch.cat`` was ~17 % of CPU time on SmolLM2 at batch 32). ``generate`` is
never allowed to ``torch.compile`` the model (it would on CUDA with a static cache): compile time would be
billed to the first batch, and evaluation measures eager inference.

Prompts are built without the gold answer: a context over the budget is shortened by a fixed rule
(``eval.context_truncation``), so evaluation never shows a window chosen to contain the label.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ftbench import skinny
from ftbench.prefix import (
    PrefixGroup,
    model_mask,
    pack_segments,
    segment_attention,
    share_groups,
    supports_packing,
    tree,
)
from ftbench.prompts import fit_context, render_prompt
from ftbench.registry import base_model


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
    decoded: int  # rows x steps actually run: a finished row counts until it leaves the batch


def _builds_cache(model: Any) -> bool:
    """Whether ftbench builds the cache itself: the model's ``generation_config.cache_implementation`` is unset
    or one of the two kinds ftbench builds (``static_cache`` then picks). Any other (offloaded, quantized, ...)
    is a memory choice made for the model: ``generate`` builds that cache, and prefixes are not shared."""
    return getattr(model.generation_config, "cache_implementation", None) in (None, "dynamic", "static")


def _new_cache(model: Any, columns: int, static: bool) -> Any | None:
    """An empty key/value cache for ``columns`` columns: preallocated and written in place (``StaticCache``)
    when ``static`` and every layer is plain full attention, else the ``DynamicCache`` that ``generate`` would
    build. Sliding-window, chunked, linear-attention and other layers keep the dynamic cache: their static
    layers roll the cache past the window or keep extra state, which is neither measured nor tested here. None
    where the model's generation config asks for a cache ftbench does not build (:func:`_builds_cache`)."""
    from transformers import DynamicCache, StaticCache
    from transformers.cache_utils import StaticLayer

    if not _builds_cache(model):
        return None
    config = base_model(model).config.get_text_config(decoder=True)
    if static:
        cache = StaticCache(config=config, max_cache_len=columns)
        if all(type(layer) is StaticLayer for layer in cache.layers):
            return cache
    return DynamicCache(config=config)


def _greedy(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, cache: Any | None, max_new_tokens: int,
            stops: list[int], pad: int, **kwargs: Any) -> torch.Tensor:
    """``model.generate`` greedy from ``cache`` (if any), never compiled. A cache ftbench built replaces the
    model's ``cache_implementation`` (passing both is an error in transformers)."""
    if cache is not None:
        kwargs |= {_cache_kwarg(model): cache, "cache_implementation": None}
    return model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                          num_beams=1, eos_token_id=stops, pad_token_id=pad, disable_compile=True, **kwargs)


def _finished(new: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
    """Which rows of generated columns ``new`` hold a stop token (``generate``'s own end-of-answer test)."""
    return torch.isin(new, stops).any(-1)


class _HalfFinished(StoppingCriteria):
    """A ``generate`` stopping criterion that ends the call (every row at once) as soon as at least half of
    its rows have produced a stop token, counting only the columns generated in this call (the prompt's chat
    template holds stop tokens too)."""

    def __init__(self, stops: torch.Tensor, width: int):
        self.stops, self.width = stops, width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
        done = _finished(input_ids[:, self.width:], self.stops.to(input_ids.device))
        return torch.full_like(done, 2 * int(done.sum()) >= len(done))


_PER_CALL_SETTINGS = ("min_new_tokens", "exponential_decay_length_penalty", "begin_suppress_tokens", "max_time")


def _can_split(model: Any) -> bool:
    """Whether a batch's decoding may run as several ``generate`` calls: not when the generation config sets
    something ``generate`` counts from the start of each call (the new tokens' count, the time limit), which
    would restart in the second call and change the answers."""
    return all(getattr(model.generation_config, name, None) in (None, 0) for name in _PER_CALL_SETTINGS)


def _decode(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, cache: Any | None, max_new_tokens: int,
            stops: list[int], pad: int) -> tuple[torch.Tensor, int]:
    """Greedy continuation of a batch in which finished rows leave the batch.

    ``generate`` keeps decoding a row after its stop token (padding) until the batch's last row stops, and
    at batch 32 a decoding step costs about 4 ms per row on top of ~55 ms for reading the weights (SmolLM2 on
    2 CPU cores), so short answers paid for the longest one. Here each ``generate`` call ends once half of
    its rows have finished (:class:`_HalfFinished`); the unfinished rows and their cache rows
    (``Cache.reorder_cache``, transformers' public batch reindexing) continue in the next call, which feeds
    only the last token (``generate`` continues from a cache holding all but it). Every row sees exactly the
    tokens and positions it would in one call, so the answers are ``generate``'s own up to float rounding
    (tested against ``model.generate`` one prompt at a time). A model whose cache ftbench did not build
    (``cache`` None), a generation config with per-call settings (:func:`_can_split`) and a single row decode
    in one call.
    Returns the generated columns ([rows, steps], ``pad`` after a row's stop) and rows x steps decoded.
    """
    rows, width = input_ids.shape
    out = torch.full((rows, max_new_tokens), pad, dtype=input_ids.dtype, device=input_ids.device)
    stop_ids = torch.tensor(stops, dtype=input_ids.dtype, device=input_ids.device)
    live = torch.arange(rows, device=input_ids.device)  # rows of the batch still decoding, in batch order
    steps = decoded = 0
    splittable = cache is not None and _can_split(model)
    while True:
        split = splittable and len(live) > 1
        half = StoppingCriteriaList([_HalfFinished(stop_ids, input_ids.shape[1])])
        extra = {"stopping_criteria": half} if split else {}
        ids = _greedy(model, input_ids, mask, cache, max_new_tokens - steps, stops, pad, **extra)
        k = ids.shape[1] - input_ids.shape[1]
        out[live, steps:steps + k] = ids[:, input_ids.shape[1]:]
        decoded, steps = decoded + len(live) * k, steps + k
        going = ~_finished(out[live, :steps], stop_ids)
        if not split or steps >= max_new_tokens or not going.any():
            return out[:, :steps], decoded
        keep = going.nonzero().squeeze(-1)
        cache.reorder_cache(keep)
        live, input_ids = live[keep], ids[keep]
        mask = torch.cat([mask[keep], mask.new_ones((len(keep), k))], dim=1)


def _left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows left-padded to the longest, and their attention mask (1 on real tokens)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return input_ids, mask


@torch.inference_mode()
def _generate(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int, stops: list[int],
              device: str, static_cache: bool) -> _Batch:
    """Greedy continuation of already tokenised prompts, left-padded into one batch."""
    pad = tokenizer.pad_token_id
    input_ids, mask = _left_padded(rows, pad)
    cache = _new_cache(model, input_ids.shape[1] + max_new_tokens, static_cache)
    new, decoded = _decode(model, input_ids.to(device), mask.to(device), cache, max_new_tokens, stops, pad)
    return _decoded(tokenizer, new, stops, decoded)


def _decoded(tokenizer: Any, new: torch.Tensor, stops: list[int], decoded: int) -> _Batch:
    """Answer texts of the generated columns, with the generated-token count (up to each row's first stop)."""
    ends = set(stops) | {tokenizer.pad_token_id}
    generated = 0
    for row in new.tolist():
        generated += next((i + 1 for i, t in enumerate(row) if t in ends), len(row))
    texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return _Batch(texts, generated, new.shape[1], decoded)


def _shared_batches(groups: list[PrefixGroup], batch_size: int) -> list[list[PrefixGroup]]:
    """Batches of at most ``batch_size`` rows; a group larger than the room left is split (each part
    computes the prefix again). Groups are taken in order of prefix length, so a batch's segments are of
    similar length and pack with few holes (:func:`_prefill_packed`)."""
    batches: list[list[PrefixGroup]] = [[]]
    room = batch_size
    for g in sorted(groups, key=lambda g: (g.prefix, len(g.members))):
        members, lengths = list(g.members), list(g.lengths)
        while members:
            if room == 0:
                batches.append([])
                room = batch_size
            take = min(room, len(members))
            batches[-1].append(PrefixGroup(members[:take], g.prefix, lengths[:take]))
            members, lengths, room = members[take:], lengths[take:], room - take
    return [b for b in batches if b]


def _can_share(model: Any, span: int) -> bool:
    """Whether prompts can be prefilled packed (:func:`_prefill_packed`): the model's attention takes the
    4-D masks packing needs and no sliding window is shorter than ``span`` columns
    (:func:`ftbench.prefix.supports_packing`), its decoder takes position ids, and ftbench builds the cache
    (:func:`_builds_cache`)."""
    forward = getattr(type(base_model(model).get_decoder()), "forward", None)
    return (forward is not None and "position_ids" in inspect.signature(forward).parameters
            and supports_packing(model, span) and _builds_cache(model))


def _cache_kwarg(model: Any) -> str:
    """What this transformers calls the cache argument of ``forward``/``generate`` (``cache`` since 5.x,
    ``past_key_values`` before)."""
    base = base_model(model)
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _prefill_packed(model: Any, ids: list[list[int]], groups: list[PrefixGroup], pad: int, device: str,
                    ) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], int]:
    """Keys and values of every prompt of ``groups`` but its last token, from one packed forward of the decoder.

    Each group is one segment (:func:`ftbench.prefix.tree`): its shared prefix once, then each member's tokens
    after it (a group of one: the prompt alone), all packed into as few rows as fit
    (:func:`ftbench.prefix.pack_segments`), so neither a short prefix nor a short question is padded to the
    batch's longest. The mask lets each member's tokens see the prefix and themselves only, at the positions
    they have in their own prompt, so the keys and values are those of each prompt prefilled alone. They are
    then gathered per prompt, right-aligned (left padding, which the attention mask hides, holds a copy of a
    real column). Returns an iterator over the layers' ``(keys, values)``, each [prompts, heads, width,
    head_dim], which frees each packed layer as it is gathered (a batch's cache is large: 46 KB per token on
    SmolLM2, ~0.26 GB at batch 32), and ``width``, the longest prompt less one (0: nothing to prefill, the
    prompts are one token each).
    """
    trunks = [g.prefix if len(g.members) > 1 else len(ids[g.members[0]]) - 1 for g in groups]
    segments = [tree(ids[g.members[0]][:t], [ids[m][t:-1] for m in g.members]) for g, t in zip(groups, trunks,
                                                                                              strict=True)]
    width = max(len(ids[m]) - 1 for g in groups for m in g.members)
    if width == 0:
        return iter(()), 0
    kept = [i for i, seg in enumerate(segments) if seg.ids]
    packing = pack_segments([segments[i] for i in kept], pad)
    starts = dict(zip(kept, packing.starts, strict=True))
    src_row = torch.zeros((sum(len(g.members) for g in groups), width), dtype=torch.long)
    src_col = torch.zeros_like(src_row)
    r = 0
    for k, (g, t) in enumerate(zip(groups, trunks, strict=True)):
        row, at = starts.get(k, (0, 0))
        branch_at = at + t
        for m in g.members:
            n = len(ids[m]) - 1
            own = n - t
            cols = list(range(at, at + t)) + list(range(branch_at, branch_at + own))
            branch_at += own
            if cols:
                src_row[r], src_col[r, width - n:] = row, torch.tensor(cols)
                src_col[r, :width - n] = cols[0]
            r += 1
    decoder = base_model(model).get_decoder()
    from transformers import DynamicCache

    cache = DynamicCache()  # full layers whatever the model's window: the packed rows are wider than a prompt
    with segment_attention(packing.spans):  # each segment attends within itself, not over the whole row
        decoder(input_ids=packing.input_ids.to(device), position_ids=packing.position_ids.to(device),
                attention_mask=model_mask(model, packing.attention_mask.to(device)), use_cache=True,
                **{_cache_kwarg(model): cache})
    src_row, src_col, layers = src_row.to(device), src_col.to(device), cache.layers
    del cache

    def gathered() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while layers:  # each packed layer is freed once gathered: the run's cache and the packed one never both whole
            layer = layers.pop(0)
            yield layer.keys[src_row, :, src_col].transpose(1, 2), layer.values[src_row, :, src_col].transpose(1, 2)

    return gathered(), width


@torch.inference_mode()
def _generate_shared(model: Any, tokenizer: Any, ids: list[list[int]], groups: list[PrefixGroup],
                     max_new_tokens: int, stops: list[int], device: str,
                     static_cache: bool) -> tuple[list[int], _Batch, int]:
    """Greedy continuation of one batch of prefix groups.

    1. Every prompt but its last token is prefilled in one packed forward, each shared prefix once
       (:func:`_prefill_packed`).
    2. Each layer's keys and values are written into a cache of the row batch sized for the whole run
       (``Cache.update``: the public way in, for a static and a dynamic cache alike).
    3. ``generate`` continues from that cache on the left-padded prompts: it computes only their last
       column, and numbers positions by the cumulative attention mask, so each row sees its prompt's tokens
       at their own positions, as if prefilled alone.
    Returns the prompt indices in row order, the batch's answers, and the prompt tokens computed.
    """
    pad = tokenizer.pad_token_id
    rows = [m for g in groups for m in g.members]
    layers, width = _prefill_packed(model, ids, groups, pad, device)
    cache = _new_cache(model, width + 1 + max_new_tokens, static_cache)
    for i, (keys, values) in enumerate(layers):
        cache.update(keys, values, i)
        del keys, values  # copied into the run's cache: free them before the next layer is gathered
    full_ids, full_mask = _left_padded([ids[m] for m in rows], pad)
    computed = sum(g.prefix + sum(len(ids[m]) - g.prefix for m in g.members) for g in groups)  # prefix once
    new, decoded = _decode(model, full_ids.to(device), full_mask.to(device), cache, max_new_tokens, stops, pad)
    return rows, _decoded(tokenizer, new, stops, decoded), computed


def generate(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, batch_size: int,
             max_prompt_tokens: int, device: str, latency_examples: int = 32,
             share_prefix: bool = True, static_cache: bool = True,
             weight_first: bool = True) -> tuple[list[str], dict]:
    """Greedy answers to ``prompts`` (in their order) and the inference cost figures.

    Each prompt is tokenised once. With ``share_prefix`` (and prompts that share a long prefix: the same
    document's questions) batches are built from :func:`share_groups`, and each batch's prompts are
    prefilled packed, each shared prefix once (:func:`_generate_shared`); otherwise batches are formed from
    prompts of similar token length (least padding, and padded positions cost as much as real ones). A batch
    stops decoding as soon as every row has produced a stop token, and finished rows leave it along the way
    (:func:`_decode`). A prompt over ``max_prompt_tokens`` loses its start, as the tokenizer's left truncation would.

    With ``static_cache`` (the default) every batch, shared or plain, and every latency run decodes into a
    cache preallocated for its columns plus ``max_new_tokens`` (:func:`_new_cache`); ``static_cache=False``
    keeps transformers' growing ``DynamicCache``, the old way, for the benchmark to compare. The greedy
    answers are the same either way (tested). Models whose layers are not all plain full attention, or whose
    generation config asks for another cache (offloaded, quantized), keep the cache they had. With
    ``weight_first`` (the default) linear layers on few rows run weight first on the CPU
    (:func:`ftbench.skinny.weight_first`: decoding steps, and the latency probe's prompts); ``False`` is for
    the benchmark to compare.

    Cost: ``examples_per_s`` is the headline. ``generated_tokens`` counts tokens up to each answer's
    stop token; ``decoded_tokens`` counts what the model computed while decoding (rows × steps, a finished
    row counted until it leaves its batch, :func:`_decode`), so ``decoded_tokens_per_s`` does not make a
    method that answers briefly look slow. ``prompt_tokens`` counts the prompts' tokens,
    ``prompt_tokens_computed`` those the model actually ran (fewer when prefixes are shared; padding not
    counted). ``latency_seconds`` holds the single-example runs on the first ``latency_examples`` prompts
    (never shared: what one user waits), ``latency_probe_seconds`` their total wall time.
    """
    model.eval()
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"][-max_prompt_tokens:] for p in prompts]
    stops = _stop_ids(model, tokenizer)
    groups = share_groups(ids) if share_prefix else []
    if any(len(g.members) > 1 for g in groups) and not _can_share(model, max(map(len, ids)) + max_new_tokens):
        groups = []
    if any(len(g.members) > 1 for g in groups):
        batches = _shared_batches(groups, batch_size)
    else:
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        batches = [[PrefixGroup([j], len(ids[j]) - 1, [len(ids[j])]) for j in order[i:i + batch_size]]
                   for i in range(0, len(order), batch_size)]
    with skinny.weight_first(model) if weight_first else nullcontext():
        answers, cost = _run(model, tokenizer, ids, batches, max_new_tokens, stops, device, static_cache,
                             latency_examples)
    return answers, cost


def _run(model: Any, tokenizer: Any, ids: list[list[int]], batches: list[list[PrefixGroup]], max_new_tokens: int,
         stops: list[int], device: str, static_cache: bool, latency_examples: int) -> tuple[list[str], dict]:
    """The timed part of :func:`generate`: every batch, then the latency probe."""
    answers: list[str] = [""] * len(ids)
    generated = steps = decoded = computed = 0
    _sync(device)
    start = time.perf_counter()
    for item in batches:
        if any(len(g.members) > 1 for g in item):
            idx, batch, n = _generate_shared(model, tokenizer, ids, item, max_new_tokens, stops, device,
                                             static_cache)
        else:
            idx = [g.members[0] for g in item]
            batch = _generate(model, tokenizer, [ids[j] for j in idx], max_new_tokens, stops, device, static_cache)
            n = sum(len(ids[j]) for j in idx)
        computed += n
        generated, steps, decoded = generated + batch.generated, steps + batch.steps, decoded + batch.decoded
        for j, text in zip(idx, batch.texts, strict=True):
            answers[j] = text
    _sync(device)
    seconds = time.perf_counter() - start
    latencies = []
    probe_start = time.perf_counter()
    for row in ids[:latency_examples]:
        _sync(device)
        t0 = time.perf_counter()
        _generate(model, tokenizer, [row], max_new_tokens, stops, device, static_cache)
        _sync(device)
        latencies.append(time.perf_counter() - t0)
    probe_seconds = time.perf_counter() - probe_start
    cost = {
        "generation_seconds": seconds,
        "examples_per_s": len(ids) / seconds if seconds > 0 else None,
        "generated_tokens": generated,
        "prompt_tokens": sum(len(r) for r in ids),
        "prompt_tokens_computed": computed,
        "decoding_steps": steps,
        "decoded_tokens": decoded,
        "decoded_tokens_per_s": decoded / seconds if seconds > 0 else None,
        "latency_seconds": latencies,
        "latency_probe_seconds": probe_seconds,
    }
    return answers, cost


def generate_answers(model: Any, tokenizer: Any, examples: list[dict], *, style: str, system_prompt: str | None,
                     max_new_tokens: int, batch_size: int, max_prompt_tokens: int, device: str,
                     latency_examples: int = 32, context_truncation: str = "start",
                     share_prefix: bool = True, static_cache: bool = True,
                     weight_first: bool = True) -> tuple[list[str], dict]:
    """Greedy answers for ``examples`` and the inference cost figures (:func:`prompts_for`, then
    :func:`generate`)."""
    prompts = prompts_for(tokenizer, examples, style=style, system_prompt=system_prompt,
                          max_prompt_tokens=max_prompt_tokens, context_truncation=context_truncation)
    return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    max_prompt_tokens=max_prompt_tokens, device=device, latency_examples=latency_examples,
                    share_prefix=share_prefix, static_cache=static_cache, weight_first=weight_first)
