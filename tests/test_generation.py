"""Evaluation prompts without the label, honest inference cost figures, and what eval.json reports about them."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO

from ftbench.evaluation import evaluate, latency_summary
from ftbench.generation import fit_prompts, generate, prompts_for, truncation_counts
from ftbench.io import write_jsonl
from ftbench.params import load_params

FILLER = " ".join(f"Sentence {i} says nothing of note." for i in range(60))
STYLE = {"style": "chat", "system_prompt": "Answer briefly."}


def _long(answer: str, where: str) -> dict:
    """A question whose context is far over 120 tokens, with the answer's sentence at ``where``."""
    fact = f"On May 9, {answer} tested the missile."
    context = {"start": f"{fact} {FILLER}", "middle": f"{FILLER} {fact} {FILLER}",
               "absent": FILLER}[where]
    return {"instruction": "Who tested the missile?", "input": context, "output": answer}


class _NoLabel(dict):
    """An example whose gold answer must not be read."""

    def __getitem__(self, key):
        assert key != "output", "the prompt builder read the gold answer"
        return super().__getitem__(key)

    def get(self, key, default=None):
        assert key != "output", "the prompt builder read the gold answer"
        return super().get(key, default)


@pytest.mark.parametrize("mode", ["start", "end"])
def test_eval_prompts_never_read_the_gold_answer(smollm_tokenizer, mode):
    ex = _long("the US Navy", "middle")
    prompts = prompts_for(smollm_tokenizer, [_NoLabel(ex)], **STYLE, max_prompt_tokens=120, context_truncation=mode)
    other = prompts_for(smollm_tokenizer, [{**ex, "output": "Sentence 3"}], **STYLE, max_prompt_tokens=120,
                        context_truncation=mode)
    assert prompts == other  # a different gold answer, the same prompt
    assert len(smollm_tokenizer(prompts[0], add_special_tokens=False)["input_ids"]) <= 120
    # The answer sits in the middle of a long context: a fixed rule does not show it...
    assert "the US Navy" not in prompts[0]
    # ...while the old answer-centred window (what training still uses) is built to contain it.
    from ftbench.prompts import fit_context, render_prompt

    centred, _ = fit_context(smollm_tokenizer, ex, 120, lambda e: render_prompt(smollm_tokenizer, e, **STYLE))
    assert "the US Navy tested the missile" in centred["input"]


def test_truncation_counts_shortened_and_answers_cut_off(smollm_tokenizer):
    rows = [{"instruction": "Who?", "input": "The US Navy did.", "output": "The US Navy"},
            _long("the US Navy", "middle"), _long("the Indian Army", "start"), _long("the RAF", "absent")]
    prompts = fit_prompts(smollm_tokenizer, rows, **STYLE, max_prompt_tokens=120, context_truncation="start")
    assert [p.shortened for p in prompts] == [False, True, True, True]
    assert prompts[2].context.startswith("On May 9, the Indian Army")
    assert rows[2]["input"].startswith(prompts[2].context)
    # Only the middle one lost its answer: the first fits, the third keeps it, the fourth never had it.
    assert truncation_counts(rows, prompts) == {"context_shortened": 3, "answer_cut_off": 1}
    end = fit_prompts(smollm_tokenizer, rows, **STYLE, max_prompt_tokens=120, context_truncation="end")
    assert rows[1]["input"].endswith(end[1].context)
    assert truncation_counts(rows, end) == {"context_shortened": 3, "answer_cut_off": 2}


def test_latency_summary_states_its_count_and_gives_no_p95_from_few_runs():
    few = latency_summary([0.1, 0.4, 0.2, 0.3])
    assert few["latency_examples"] == 4 and few["latency_p95_s"] is None and few["latency_max_s"] == 0.4
    assert few["latency_p50_s"] == pytest.approx(0.25)
    many = latency_summary([i / 100 for i in range(1, 33)])
    assert many["latency_examples"] == 32 and many["latency_max_s"] == 0.32
    assert many["latency_p95_s"] == pytest.approx(0.01 + 0.95 * 0.31)
    assert latency_summary([])["latency_examples"] == 0


class _ScriptedModel:
    """Stands in for a causal LM: row i answers with (real prompt tokens % 3) + 1 copies of ``word`` and then
    EOS, and a batch stops at the step where its last row stopped, as one ``generate`` call does (it ignores
    stopping criteria, so no batch is split: the accounting of a single call). Records the columns
    of the cache each call was handed, and refuses to be let compile (as transformers would on CUDA with a
    static cache)."""

    def __init__(self, eos: int, word: int):
        from transformers import LlamaConfig

        self.generation_config = SimpleNamespace(eos_token_id=eos)
        self.config = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1)
        self.eos, self.word, self.batches, self.cache_columns = eos, word, [], []

    def eval(self):
        return self

    def forward(self, input_ids, cache=None, **_):  # only its signature is read (the cache argument's name)
        raise AssertionError("the scripted model has no forward pass")

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, cache, disable_compile=False, **_):
        assert disable_compile, "generate may torch.compile the model"
        self.cache_columns.append(cache.get_max_length())
        lengths = attention_mask.sum(1).tolist()
        answer = [n % 3 + 1 for n in lengths]
        steps = min(max(answer) + 1, max_new_tokens)
        new = torch.full((len(lengths), steps), pad_token_id)
        for i, k in enumerate(answer):
            new[i, :min(k, steps)] = self.word
            if k < steps:
                new[i, k] = self.eos
        self.batches.append((lengths, steps))
        return torch.cat([input_ids, new], dim=1)


def test_cost_counts_decoding_steps_run_and_batches_follow_token_length(smollm_tokenizer):
    tok = smollm_tokenizer
    word = tok(" yes", add_special_tokens=False)["input_ids"][0]
    # Character length and token length disagree: one long word is few tokens, "a a a a a" many.
    prompts = ["internationalisation", "a a a a a a a", "hello", "a a a", "b b b b b b b b b b", "c c"]
    n_tokens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    model = _ScriptedModel(tok.eos_token_id, word)
    answers, cost = generate(model, tok, prompts, max_new_tokens=3, batch_size=2, max_prompt_tokens=64,
                             device="cpu", latency_examples=2)
    assert answers == [" ".join(["yes"] * min(n % 3 + 1, 3)) for n in n_tokens]  # back in the prompts' order
    batched = model.batches[:3]
    widths = [length for lengths, _ in batched for length in lengths]
    assert widths == sorted(n_tokens)  # batches of neighbours in token length, not in characters
    # Each batch's cache is preallocated for its widest prompt and the new tokens, no more.
    assert model.cache_columns == [max(lengths) + 3 for lengths, _ in model.batches]
    assert cost["decoding_steps"] == sum(steps for _, steps in batched)
    assert cost["decoded_tokens"] == sum(len(lengths) * steps for lengths, steps in batched)
    assert cost["generated_tokens"] == sum(min(n % 3 + 2, 3) for n in n_tokens)  # up to and including EOS
    assert cost["generated_tokens"] < cost["decoded_tokens"]  # within one call, finished rows still cost a step
    seconds = cost["generation_seconds"]
    assert cost["examples_per_s"] == pytest.approx(len(prompts) / seconds)
    assert cost["decoded_tokens_per_s"] == pytest.approx(cost["decoded_tokens"] / seconds)
    assert "generated_tokens_per_s" not in cost  # tokens to EOS over time of every step: the misleading ratio
    assert len(cost["latency_seconds"]) == 2 and [len(b[0]) for b in model.batches[3:]] == [1, 1]
    assert cost["latency_probe_seconds"] >= sum(cost["latency_seconds"])


def test_eval_json_reports_truncation_latency_count_and_timing(tiny_llama, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"id": "q0", "doc_id": "d0", "instruction": "Who?", "input": "The US Navy did.", "output": "The US Navy"},
            {"id": "q1", "doc_id": "d1", **_long("the US Navy", "middle")},
            {"id": "q2", "doc_id": "d2", **_long("the Indian Army", "start")}]
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data/processed/test.jsonl", rows)
    params = load_params(REPO / "params.yaml")
    params.train.max_seq_len = 140
    params.eval.max_new_tokens, params.eval.batch_size, params.eval.latency_examples = 2, 2, 3
    params.eval.bertscore_model, params.eval.bootstrap_resamples = None, 100
    params.monitor.interval_s = 0.05

    def load():
        return AutoModelForCausalLM.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama)

    result = evaluate(load, params, device="cpu", identity={"model": "tiny", "method": "baseline"},
                      out_dir=tmp_path / "out", predictions_path=tmp_path / "predictions.jsonl")
    assert json.loads((tmp_path / "out/eval.json").read_text()) == json.loads(json.dumps(result))
    assert result["truncation"] == {"context_truncation": "start", "context_shortened": 2, "answer_cut_off": 1}
    inference = result["inference"]
    assert inference["latency_examples"] == 3 and inference["latency_p95_s"] is None
    assert inference["latency_max_s"] > 0 and inference["examples_per_s"] > 0
    timing = result["timing_s"]
    assert set(timing) == {"load", "generation", "latency_probe", "scoring", "total"}
    assert all(v >= 0 for v in timing.values())
    assert timing["total"] >= timing["load"] + timing["generation"] + timing["latency_probe"] + timing["scoring"]
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [p["context_shortened"] for p in predictions] == [False, True, True]


def _varied_model(arch: str, tiny_llama, tiny_mistral):
    """A tiny random model (llama, mistral, llama under a peft LoRA adapter, or llama with eager attention)
    whose greedy answers vary from prompt to prompt, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_mistral if arch.startswith("mistral") else tiny_llama
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager" if arch == "llama-eager" else None)
    torch.manual_seed(1)
    with torch.no_grad():  # the fixture's 0.02-scale weights answer every prompt with newlines: spread them out
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.normal_(0.0, 0.3)
    if arch == "llama-lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return model, tok


def _fleet_prompts(tok) -> list[str]:
    """Eight prompts: a document with four questions, one with two, one with one, and one without context."""
    context = {d: f"Report {d}: the {d} fleet sailed from the northern port on May {i + 3} with {i + 2} frigates."
               for i, d in enumerate(["alpha", "bravo", "charlie"])}
    questions = ["Who sailed?", "When did the fleet sail from the port?", "How many frigates?", "From where?"]
    examples = ([{"instruction": q, "input": context["alpha"]} for q in questions]
                + [{"instruction": q, "input": context["bravo"]} for q in questions[:2]]
                + [{"instruction": "Who?", "input": context["charlie"]}, {"instruction": "Say hi.", "input": ""}])
    return prompts_for(tok, examples, style="chat", system_prompt="Answer briefly.", max_prompt_tokens=200)


GEN = {"max_new_tokens": 6, "batch_size": 3, "max_prompt_tokens": 200, "device": "cpu", "latency_examples": 0}


def _decoding_caches(monkeypatch) -> Counter:
    """Counts, by cache layer class, the one-token cache writes (decoding steps) of every ``Cache.update``."""
    from transformers.cache_utils import Cache

    writes: Counter = Counter()
    update = Cache.update

    def counted(self, key_states, value_states, layer_idx, *args, **kwargs):
        out = update(self, key_states, value_states, layer_idx, *args, **kwargs)
        if key_states.shape[-2] == 1:
            writes[type(self.layers[layer_idx]).__name__] += 1
        return out

    monkeypatch.setattr(Cache, "update", counted)
    return writes


@pytest.mark.parametrize("arch", ["llama", "mistral", "llama-lora", "llama-eager", "mistral-window"])
def test_shared_prefix_answers_equal_the_plain_batched_answers(arch, tiny_llama, tiny_mistral, monkeypatch):
    """The same document's questions prefilled packed, their shared prefix once, answer exactly as when
    every prompt is prefilled whole: rows see the same tokens at the same positions (packed mask and
    positions, keys and values gathered into each row). Batch size 3 splits a 4-question document across
    batches and mixes it with single questions; a wrong cache row, position or mask changes the greedy
    tokens of a random model. Eager attention takes the packed mask as an additive one. A sliding window as
    long as a prompt and its answer, but shorter than a packed row, still shares: the packed forward keeps
    every column (a windowed cache would drop the row's first ones).
    Each path gives the same answers with the preallocated (static) cache as with the growing (dynamic)
    one, and so does batch size 1 (the latency probe's path)."""
    from ftbench import generation

    model, tok = _varied_model(arch, tiny_llama, tiny_mistral)
    prompts = _fleet_prompts(tok)
    if arch == "mistral-window":
        model.config.sliding_window = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts) + 6
    widths = []
    pack = generation.pack_segments
    monkeypatch.setattr(generation, "pack_segments", lambda *a: widths.append(pack(*a).input_ids.shape[1]) or pack(*a))
    plain, plain_cost = generate(model, tok, prompts, share_prefix=False, **GEN)
    shared, shared_cost = generate(model, tok, prompts, share_prefix=True, **GEN)
    assert shared == plain
    assert widths and (arch != "mistral-window" or max(widths) > model.config.sliding_window)
    assert len(set(plain)) > len(plain) // 2  # varied answers: a sensitive comparison, not eight empty strings
    assert plain_cost["prompt_tokens_computed"] == plain_cost["prompt_tokens"]
    assert shared_cost["prompt_tokens"] == plain_cost["prompt_tokens"]
    assert shared_cost["prompt_tokens_computed"] < 0.85 * shared_cost["prompt_tokens"]  # 292 of 368 tokens
    assert generate(model, tok, prompts, share_prefix=False, static_cache=False, **GEN)[0] == plain
    assert generate(model, tok, prompts, share_prefix=True, static_cache=False, **GEN)[0] == plain
    single = {**GEN, "batch_size": 1}
    assert (generate(model, tok, prompts[:4], share_prefix=False, **single)[0]
            == generate(model, tok, prompts[:4], share_prefix=False, static_cache=False, **single)[0])


@pytest.mark.parametrize("arch", ["llama", "llama-lora", "llama-eager"])
def test_packed_prefill_gives_each_prompt_its_own_keys_and_values(arch, tiny_llama, tiny_mistral, monkeypatch,
                                                                   segmented_calls):
    """A batch of a 4-question document, a 2-question one and two prompts alone, prefilled in one packed
    forward (each shared prefix once): each row holds, right-aligned, the keys and values of its prompt but
    the last token run alone, in every layer, and the packed rows hold fewer positions than the prompts
    padded to the longest. A member reading another's branch, a position restarted at the wrong place or
    a column gathered from the wrong row would change them."""
    from transformers import DynamicCache

    from ftbench import generation
    from ftbench.prefix import share_groups

    model, tok = _varied_model(arch, tiny_llama, tiny_mistral)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in _fleet_prompts(tok)]
    groups = share_groups(ids)
    assert sorted(len(g.members) for g in groups) == [1, 1, 2, 4]
    calls = segmented_calls
    shapes = []
    pack = generation.pack_segments
    monkeypatch.setattr(generation, "pack_segments", lambda *a: shapes.append(pack(*a).input_ids.shape) or pack(*a))
    with torch.inference_mode():
        layers, width = generation._prefill_packed(model, ids, groups, tok.pad_token_id, "cpu")
        layers = list(layers)
        assert width == max(map(len, ids)) - 1 and len(layers) == model.config.num_hidden_layers
        sdpa = arch != "llama-eager"  # eager attention never looks the SDPA function up
        assert calls == {"segmented": model.config.num_hidden_layers if sdpa else 0, "fallback": 0}
        assert shapes[0].numel() < len(ids) * width
        for r, m in enumerate(m for g in groups for m in g.members):
            alone = DynamicCache()
            model(input_ids=torch.tensor([ids[m][:-1]]), use_cache=True, **{generation._cache_kwarg(model): alone})
            n = len(ids[m]) - 1
            for (keys, values), layer in zip(layers, alone.layers, strict=True):
                torch.testing.assert_close(keys[r, :, width - n:], layer.keys[0], rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(values[r, :, width - n:], layer.values[0], rtol=1e-4, atol=1e-5)


def _with_staggered_stops(model, tok, prompts: list[str], max_new_tokens: int) -> tuple[list[str], list[int]]:
    """Make stop tokens of what a random model generates, so that the first six answers end at steps 2 to 6
    and the last two run to ``max_new_tokens``; returns ``model.generate``'s answers, one prompt at a time,
    and the step at which each answer stopped (``max_new_tokens`` + 1 for one that never did)."""
    rows = [tok(p, return_tensors="pt", add_special_tokens=False) for p in prompts]

    def answer(r, stops):
        with torch.no_grad():
            out = model.generate(**r, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tok.pad_token_id)
        return out[0, r["input_ids"].shape[1]:]

    free = [answer(r, None).tolist() for r in rows]
    model.generation_config.eos_token_id = sorted({row[i % 5 + 1] for i, row in enumerate(free[:6])})
    stops = [*model.generation_config.eos_token_id, tok.eos_token_id]
    outs = [answer(r, stops).tolist() for r in rows]
    ends = [next((i + 1 for i, t in enumerate(o) if t in stops), max_new_tokens + 1) for o in outs]
    return [tok.decode(o, skip_special_tokens=True).strip() for o in outs], ends


def _rows_times_steps(ends: list[int], max_new_tokens: int) -> int:
    """Rows x steps decoded when each ``generate`` call ends as soon as half of its rows have stopped (row i
    stops at step ``ends[i]``) and only the unfinished rows go on."""
    live, step, decoded = list(ends), 0, 0
    while live and step < max_new_tokens:
        stop = next(s for s in range(step + 1, max_new_tokens + 1)
                    if s == max_new_tokens or 2 * sum(e <= s for e in live) >= len(live) or len(live) == 1)
        decoded, step = decoded + len(live) * (stop - step), stop
        live = [e for e in live if e > step]
    return decoded


@pytest.mark.parametrize(("arch", "share_prefix", "static_cache"), [
    ("llama", True, True), ("llama", False, True), ("llama", True, False), ("llama", False, False),
    ("mistral", True, True), ("mistral-window", False, True), ("llama-lora", True, True),
    ("llama-min-new-tokens", True, True),
])
def test_finished_rows_leave_the_batch_and_answers_are_generates_own(arch, share_prefix, static_cache,
                                                                     tiny_llama, tiny_mistral):
    """One batch of eight whose answers stop at different steps: rows that have stopped leave the batch
    (fewer rows x steps decoded than the batch's rows x its steps), and every answer is the one
    ``model.generate`` gives that prompt alone. A wrong cache row after dropping rows, a lost mask column or
    a position off by one would change the greedy tokens of a random model."""
    model, tok = _varied_model(arch.removesuffix("-min-new-tokens"), tiny_llama, tiny_mistral)
    if arch == "mistral-window":
        model.config.sliding_window = 8  # the dynamic sliding-window cache, rows dropped from it
    if arch.endswith("-min-new-tokens"):
        model.generation_config.min_new_tokens = 1  # counted per generate call: the batch must not split
    prompts = _fleet_prompts(tok)
    reference, ends = _with_staggered_stops(model, tok, prompts, 8)
    gen = {**GEN, "max_new_tokens": 8, "batch_size": 8}
    answers, cost = generate(model, tok, prompts, share_prefix=share_prefix, static_cache=static_cache, **gen)
    assert answers == reference
    assert len(set(answers)) > len(answers) // 2 and min(ends) < 8 < max(ends)
    assert cost["decoding_steps"] == 8  # the batch ran on after its first rows stopped, without them
    one_call = len(prompts) * cost["decoding_steps"]
    assert cost["decoded_tokens"] == (one_call if arch.endswith("-min-new-tokens") else _rows_times_steps(ends, 8))
    assert arch.endswith("-min-new-tokens") or cost["decoded_tokens"] < one_call


@pytest.mark.parametrize(("arch", "share_prefix", "static_cache", "layer"), [
    ("llama", True, True, "StaticLayer"),
    ("llama", False, True, "StaticLayer"),
    ("llama-lora", True, True, "StaticLayer"),
    ("llama", True, False, "DynamicLayer"),
    ("mistral-window", True, True, "DynamicSlidingWindowLayer"),
])
def test_decoding_writes_the_cache_in_place_unless_a_layer_cannot(arch, share_prefix, static_cache, layer,
                                                                   tiny_llama, tiny_mistral, monkeypatch):
    """Every decoding step, of the shared and the plain batches and of the latency probe, writes into a
    preallocated StaticLayer (in place) by default, and into a growing DynamicLayer (a ``torch.cat`` of the
    whole cache per step) only when asked. A sliding window shorter than the run keeps the dynamic
    sliding layer (its static counterpart rolls the cache), with the same answers."""
    model, tok = _varied_model(arch, tiny_llama, tiny_mistral)
    if arch == "mistral-window":
        model.config.sliding_window = 8  # shorter than every prompt: also no sharing (the plain path)
    prompts = _fleet_prompts(tok)
    writes = _decoding_caches(monkeypatch)
    answers, _ = generate(model, tok, prompts, share_prefix=share_prefix, static_cache=static_cache,
                          **{**GEN, "latency_examples": 2})
    assert set(writes) == {layer} and writes[layer] > 0
    if arch == "mistral-window":
        assert answers == generate(model, tok, prompts, share_prefix=False, static_cache=False, **GEN)[0]


def test_a_static_cache_configured_on_the_model_still_shares_prefixes(tiny_llama, tiny_mistral):
    """A model whose generation config asks for a static cache gets ftbench's (the same kind, sized per
    batch, never compiled) instead of being refused prefix sharing or clashing with the cache passed in."""
    model, tok = _varied_model("llama", tiny_llama, tiny_mistral)
    prompts = _fleet_prompts(tok)
    plain, _ = generate(model, tok, prompts, share_prefix=False, **GEN)
    model.generation_config.cache_implementation = "static"
    shared, cost = generate(model, tok, prompts, share_prefix=True, **GEN)
    assert shared == plain
    assert cost["prompt_tokens_computed"] < cost["prompt_tokens"]
