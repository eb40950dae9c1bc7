"""Shared prompt prefixes (src/ftbench/prefix.py): which prompts share, how a micro-batch is packed, and that
packing changes neither the loss nor the gradients nor the trained weights (with dropout off, since a shared
trunk draws one dropout mask where the padded batch draws one per copy)."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from test_training import EXAMPLES as TRAINING_EXAMPLES
from test_training import NO_DROPOUT, build, cfg

from ftbench import prefix, training
from ftbench.params import FullParams
from ftbench.prefix import IGNORE, pack_shared, prompt_length, segment_attention, share_groups
from ftbench.registry import base_model
from ftbench.training import (
    accumulate_step,
    batch_plan,
    encode_examples,
    micro_batch,
    sharing_units,
    split_by_positions,
    supports_packing,
    train,
)

SYSTEM = "Answer with the exact words from the context, nothing else."
DOCS = {f"d{d}": f"Report {d}: " + "The coastal brigade moved north at dawn. " * (1 + d % 3)
        + f"Unit {d} led the patrol near the port of Haven {d}." for d in range(5)}
QUESTIONS = ["Who led the patrol?", "Where was the patrol?", "What moved north?", "When did it move?"]
ANSWERS = ["Unit {d}", "near the port of Haven {d}", "The coastal brigade", "at dawn"]
# doc d has 1 + d % 4 questions: groups of 1, 2, 3 and 4, and one more of 1
EXAMPLES = [{"instruction": QUESTIONS[q], "input": DOCS[f"d{d}"], "output": ANSWERS[q].format(d=d)}
            for d in range(5) for q in range(1 + d % 4)]


@pytest.fixture(scope="module")
def shared_data(smollm_tokenizer):
    return encode_examples(smollm_tokenizer, EXAMPLES, max_seq_len=192, style="chat", system_prompt=SYSTEM,
                           completion_only=True, counts={})


def test_share_groups_from_the_same_documents_prompts(shared_data):
    groups = share_groups([e.input_ids[:prompt_length(e.labels)] for e in shared_data])
    docs = [[i for i, ex in enumerate(EXAMPLES) if ex["input"] == DOCS[f"d{d}"]] for d in range(5)]
    assert sorted(sorted(g.members) for g in groups) == sorted(docs)  # the system prompt alone does not group
    for g in groups:
        if len(g.members) > 1:  # the prefix stops before the question: it covers the context, not the question
            prompt = shared_data[g.members[0]].input_ids
            assert g.prefix < min(prompt_length(shared_data[m].labels) for m in g.members)
            assert all(shared_data[m].input_ids[:g.prefix] == prompt[:g.prefix] for m in g.members)


def test_pack_shared_layout_mask_and_positions():
    # two examples sharing [5, 6, 7], two alone; labels (answers) only after the prompt
    a = ([5, 6, 7, 8, 9, 10], [IGNORE] * 4 + [9, 10])
    b = ([5, 6, 7, 11, 12], [IGNORE] * 4 + [12])
    c = ([1, 2, 3], [IGNORE] * 2 + [3])
    d = ([20, 21, 22, 23], [IGNORE] * 3 + [23])
    packed = pack_shared([a, b, c, d], pad_id=0)
    # the group's tree (8 positions), d (4) and c (3), longest first, in one row of 15: fewer positions than
    # a row of 8 for the tree and one of 8 for d + c (16)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 20, 21, 22, 23, 1, 2, 3]]
    assert packed["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 0, 1, 2, 3, 0, 1, 2]
    assert packed["labels"][0, :8].tolist() == [IGNORE, IGNORE, IGNORE, IGNORE, 9, 10, IGNORE, 12]
    allowed = packed["attention_mask"][0, 0].int()
    tree = torch.zeros(8, 8, dtype=torch.int)
    tree[:6, :6] = torch.ones(6, 6).tril()  # trunk + a, causally
    tree[6:, :3], tree[6:, 6:] = 1, torch.ones(2, 2).tril()  # b sees the trunk and itself, not a
    expected = torch.zeros(15, 15, dtype=torch.int)
    expected[:8, :8], expected[8:12, 8:12], expected[12:, 12:] = tree, torch.ones(4, 4).tril(), torch.ones(3, 3).tril()
    assert allowed.tolist() == expected.tolist()  # and no segment sees another
    assert packed["computed_tokens"] == 8 + 4 + 3
    seven = [([t] * 7, [IGNORE] * 6 + [t]) for t in (1, 2)]  # 8 + 7 + 7: three rows of 8 beat two of 15
    padded = pack_shared([a, b, *seven], pad_id=0)
    assert padded["input_ids"].shape == (3, 8) and padded["computed_tokens"] == 8 + 7 + 7
    pad_row = padded["attention_mask"][1, 0].int()
    assert pad_row[7].tolist() == [0] * 7 + [1]  # the padding position attends itself only
    assert pad_row[:7, 7].sum() == 0  # and no real position attends it
    assert pack_shared([a, c], pad_id=0) is None  # nothing shared: the caller pads as usual


@pytest.mark.parametrize("arch,method,checkpointing", [
    ("llama", "lora", False), ("mistral", "lora", False), ("llama", "top_layer", False), ("llama", "qlora", False),
    ("llama", "full", False), ("llama", "lora", True), ("llama", "top_layer", True)])
def test_packed_micro_batch_has_the_padded_loss_and_gradients(request, shared_data, smollm_tokenizer,
                                                              segmented_calls, arch, method, checkpointing):
    """Also ``full``, where no parameter is frozen (the packed mask's dtype cannot come from a frozen one), and
    with gradient checkpointing, whose backward runs the packed forward again (segment by segment too: the
    whole-row path saves other tensors, which checkpointing refuses). Every attention call of the packed
    forwards runs segment by segment."""
    path = request.getfixturevalue(f"tiny_{arch}")
    model = build(path, method, gradient_checkpointing=checkpointing,
                  **({"cfg": FullParams()} if method == "full" else {}))
    calls = segmented_calls
    if method == "lora":  # B starts at zero: move it, so the adapter's gradient path is not trivially zero
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
    model.train()
    batch = list(range(len(shared_data)))
    grads = {}
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        done = accumulate_step(model, shared_data, [batch], pad_id=smollm_tokenizer.pad_token_id, device="cpu",
                               share_prefix=share)
        grads[share] = (done, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    (plain, g0), (packed, g1) = grads[False], grads[True]
    layers = base_model(model).config.num_hidden_layers  # the padded run never enters the segmented path
    assert calls["fallback"] == 0, calls
    assert calls["segmented"] > layers if checkpointing else calls["segmented"] == layers, calls  # + recomputed
    assert packed["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert packed["tokens"] == plain["tokens"] and packed["samples"] == plain["samples"] == len(batch)
    assert packed["computed"] < 0.8 * plain["computed"] and plain["computed"] == plain["tokens"]
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-6, msg=n)


def test_batch_plan_keeps_units_together_and_covers_every_example(shared_data):
    lengths = [len(e.input_ids) for e in shared_data]
    units = sharing_units(shared_data)
    for group in (True, False):
        plan = batch_plan(lengths, batch_size=4, epochs=2, seed=3, group_by_length=group, units=units)
        assert plan == batch_plan(lengths, batch_size=4, epochs=2, seed=3, group_by_length=group, units=units)
        per_epoch = -(-len(lengths) // 4)
        for e in range(2):
            flat = [i for b in plan[e * per_epoch:(e + 1) * per_epoch] for i in b]
            assert sorted(flat) == list(range(len(lengths)))
        for b in plan:  # a unit is never scattered: what a batch holds of it is a contiguous slice of it
            for u in units:
                held = [i for i in b if i in u]
                assert held == [] or any(held == u[k:k + len(held)] for k in range(len(u)))
    singles = [[i] for i in range(len(lengths))]
    assert batch_plan(lengths, batch_size=4, epochs=1, seed=3, group_by_length=True, units=singles) == \
        batch_plan(lengths, batch_size=4, epochs=1, seed=3, group_by_length=True)


def test_data_without_shared_prefixes_gets_the_plain_plan(smollm_tokenizer):
    """One document per question: sharing_units are single examples in data order, so share_prefix changes
    neither the batches nor their order."""
    data = encode_examples(smollm_tokenizer, TRAINING_EXAMPLES, max_seq_len=192, style="chat", system_prompt=SYSTEM,
                           completion_only=True, counts={})
    units = sharing_units(data)
    assert units == [[i] for i in range(len(data))]
    lengths = [len(e.input_ids) for e in data]
    assert batch_plan(lengths, batch_size=4, epochs=2, seed=5, group_by_length=True, units=units) == \
        batch_plan(lengths, batch_size=4, epochs=2, seed=5, group_by_length=True)


def test_no_packing_across_a_sliding_window_or_without_4d_masks(tiny_mistral):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_mistral)
    assert supports_packing(model, 100)
    model.config.sliding_window = 64  # a window shorter than an example: a custom mask would drop it
    assert not supports_packing(model, 100) and supports_packing(model, 64)
    model.config.sliding_window = None
    model.config._attn_implementation = "flash_attention_2"
    assert not supports_packing(model, 100)


def test_training_with_packed_batches_gives_the_padded_runs_weights(tiny_llama, shared_data, smollm_tokenizer,
                                                                    monkeypatch):
    """The same plan (units), trained packed and padded: same weights and loss, fewer positions computed."""
    results = {}
    for share in ("packed", "padded"):
        model = build(tiny_llama, "lora", seed=0)
        if share == "padded":
            monkeypatch.setattr(training, "pack_shared", lambda examples, pad_id: None)
        result = train(model, shared_data, cfg(batch_size=4, epochs=2), lr=1e-2, seed=1,
                       pad_id=smollm_tokenizer.pad_token_id, device="cpu")
        results[share] = (result, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    (packed, w1), (padded, w0) = results["packed"], results["padded"]
    assert packed.prefix_shared and packed.steps == padded.steps and packed.samples == padded.samples
    assert packed.train_tokens == padded.train_tokens and padded.computed_tokens == padded.train_tokens
    assert not padded.prefix_shared  # nothing was packed: not reported as shared
    assert packed.computed_tokens < 0.8 * packed.train_tokens
    assert packed.final_loss == pytest.approx(padded.final_loss, rel=1e-4)
    for n in w0:
        torch.testing.assert_close(w1[n], w0[n], rtol=1e-4, atol=1e-5, msg=n)
    assert NO_DROPOUT["lora"].dropout == 0.0


def test_share_groups_keeps_each_documents_questions_together_and_leaves_a_token_to_prefill():
    system = [1, 2, 3]
    doc_a, doc_b = list(range(10, 30)), list(range(40, 60))
    ids = [system + doc_a + [7, 7], system + doc_b + [8], system + doc_a + [9, 9, 9], system + [5, 6],
           system + doc_a + [7, 7, 1], system + doc_a]  # the last is a prefix of the others
    groups = share_groups(ids)
    by_member = {m: g for g in groups for m in g.members}
    assert sorted(by_member[0].members) == [0, 2, 4, 5]  # doc a's questions, whatever their order
    assert by_member[1].members == [1] and by_member[3].members == [3]  # the system prompt alone is not enough
    assert by_member[0].prefix == len(ids[5]) - 1  # never a whole prompt: one token is left to prefill
    assert all(g.prefix < len(ids[m]) and all(ids[m][:g.prefix] == ids[g.members[0]][:g.prefix] for m in g.members)
               for g in groups for m in g.members)
    assert sorted(m for g in groups for m in g.members) == list(range(len(ids)))


def _positions(data, piece, share):
    return micro_batch([data[i] for i in piece], 0, share)["computed_tokens"]


@pytest.mark.parametrize("share", [True, False])
def test_split_by_positions_caps_each_micro_batch_and_keeps_units_whole(shared_data, share):
    batch = [6, 7, 8, 9, 0, 3, 4, 5, 10, 1, 2]  # in a plan's order (units adjacent), not the data's
    assert sorted(batch) == list(range(len(shared_data)))
    units = sharing_units(shared_data)
    unit_of = {i: k for k, u in enumerate(units) for i in u}
    lengths = [len(e.input_ids) for e in shared_data]
    assert split_by_positions(shared_data, batch, None, share) == [batch]
    assert split_by_positions(shared_data, batch, 10**6, share) == [batch]
    whole = _positions(shared_data, batch, share)
    for budget in (whole - 1, whole // 2, whole // 3, max(lengths) + 40, max(lengths), 1):
        pieces = split_by_positions(shared_data, batch, budget, share)
        assert [i for p in pieces for i in p] == batch  # in order, every example once
        assert all(p for p in pieces) and len(pieces) >= 2
        for p in pieces:  # what the model runs stays within the budget, unless one example alone is over it
            assert _positions(shared_data, p, share) <= budget or len(p) == 1
        for p, q in zip(pieces, pieces[1:], strict=False):  # each is full: what starts the next would not fit
            lead = [i for i in q if (unit_of[i] if share else i) == (unit_of[q[0]] if share else q[0])]
            assert _positions(shared_data, p + lead, share) > budget, (budget, p, lead)
        if share:  # a unit that fits in a micro-batch of its own is never cut
            for u in units:
                if _positions(shared_data, u, share) <= budget:
                    assert sum(any(i in p for i in u) for p in pieces) == 1, (budget, u)
    # shared: a document's questions cost their prefix once, so the cap holds more of them than padded rows would
    if share:
        assert len(split_by_positions(shared_data, batch, whole // 2, True)) < \
            len(split_by_positions(shared_data, batch, whole // 2, False))


def test_training_in_micro_batches_under_a_position_budget_gives_the_same_weights(tiny_llama, shared_data,
                                                                                   smollm_tokenizer, monkeypatch):
    """micro_batch_tokens cuts the largest batches (less activation memory at once); the token-weighted
    accumulation makes every step the whole batch's step: same weights, loss and counts (dropout off)."""
    calls = []
    real_step = training.accumulate_step
    monkeypatch.setattr(training, "accumulate_step", lambda *a, **k: calls.append(a[2]) or real_step(*a, **k))
    results = {}
    for budget in (None, 120):
        model = build(tiny_llama, "lora", seed=0)
        result = train(model, shared_data, cfg(batch_size=8, epochs=2, micro_batch_tokens=budget), lr=1e-2, seed=1,
                       pad_id=smollm_tokenizer.pad_token_id, device="cpu")
        results[budget] = (result, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    whole, cut = calls[:len(calls) // 2], calls[len(calls) // 2:]
    assert all(len(m) == 1 for m in whole) and sum(len(m) for m in cut) > len(cut)  # it did cut
    assert [[i for b in m for i in b] for m in cut] == [m[0] for m in whole]  # the same examples, same order
    assert all(_positions(shared_data, b, True) <= 120 or len(b) == 1 for m in cut for b in m)
    (ref, w0), (small, w1) = results[None], results[120]
    assert (small.steps, small.samples, small.epochs, small.train_tokens) == \
        (ref.steps, ref.samples, ref.epochs, ref.train_tokens)
    assert ref.micro_batches == ref.steps and small.micro_batches == sum(len(m) for m in cut) > small.steps
    assert small.final_loss == pytest.approx(ref.final_loss, rel=1e-4)
    for n in w0:
        torch.testing.assert_close(w1[n], w0[n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_segment_attention_gives_the_whole_row_hidden_states_segment_by_segment(request, shared_data, smollm_tokenizer,
                                                                                 monkeypatch, segmented_calls, arch):
    """A packed batch run under segment_attention: the hidden state of every real position equals the one
    computed with SDPA over whole rows under the packed mask, the per-segment path really ran (one SDPA call per
    segment and layer, never the fallback), a causal segment is run without a mask, and transformers' own SDPA
    entry is back afterwards, also after an error."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(f"tiny_{arch}"), attn_implementation="sdpa")
    model.eval()
    packed = pack_shared([(e.input_ids, e.labels) for e in shared_data], smollm_tokenizer.pad_token_id)
    spans = packed["segments"]
    assert max(len(row) for row in spans) > 1  # a row holds two segments: whole-row attention would mix them
    assert {causal for row in spans for _, _, causal in row} == {True, False}  # single examples and shared groups
    real = torch.zeros(packed["input_ids"].shape, dtype=torch.bool)
    for r, row in enumerate(spans):
        for a, b, _ in row:
            real[r, a:b] = True
    assert not real.all()  # some padding, which no real position attends
    assert int(real.sum()) == packed["computed_tokens"]  # the spans cover every real position, each once
    for row in spans:
        assert row[0][0] == 0 and all(a0 < b0 <= a1 for (a0, b0, _), (a1, _, _) in pairwise(row))

    calls = {"segment": 0, "masked": 0}
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls["segment"] += 1
        calls["masked"] += attn_mask is not None
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    def hidden():
        with torch.no_grad():
            return model.model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
                               position_ids=packed["position_ids"], use_cache=False).last_hidden_state

    whole = hidden()
    original = ALL_ATTENTION_FUNCTIONS["sdpa"]
    monkeypatch.setattr(prefix.F, "scaled_dot_product_attention", spy)
    with segment_attention(spans):
        per_segment = hidden()
    layers, segments = model.config.num_hidden_layers, sum(len(row) for row in spans)
    assert segmented_calls == {"segmented": layers, "fallback": 0}
    assert calls == {"segment": layers * segments, "masked": layers * sum(not c for row in spans for _, _, c in row)}
    torch.testing.assert_close(per_segment[real], whole[real], rtol=1e-5, atol=1e-5)
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is original
    with pytest.raises(RuntimeError), segment_attention(spans):
        raise RuntimeError("boom")
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is original
    with segment_attention(None):  # nothing packed: nothing swapped
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is original
