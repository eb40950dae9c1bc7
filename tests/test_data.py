"""Schema checks, question building, the by-document split, offset repair and user Alpaca data."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ftbench.alpaca import TEMPLATES, build_question, qa_pairs, split_documents
from ftbench.cmnee import EVENT_ROLES, Document, Event, Span, check_offsets, load_corpus, parse_document
from ftbench.io import DataError
from ftbench.userdata import alpaca_documents, load_alpaca


def test_every_event_role_has_a_template_naming_the_other_roles():
    assert set(TEMPLATES) == set(EVENT_ROLES)
    for etype, roles in EVENT_ROLES.items():
        assert set(TEMPLATES[etype]) == set(roles), etype
        for role in roles:
            template = TEMPLATES[etype][role]
            assert "{" + role + "}" not in template, f"{etype}/{role} names its own answer"
            named = {r for r in roles if "{" + r + "}" in template}
            assert len(named) >= min(2, len(roles) - 1), f"{etype}/{role} names too little context"


def test_question_optional_parts_dropped_when_argument_missing():
    q = build_question("Exhibit", "Equipment", {"Subject": "the Swedish Air Force", "Location": "Seoul ADEX"})
    assert q == "What equipment did the Swedish Air Force exhibit at Seoul ADEX?"
    q = build_question("Exhibit", "Location", {"Subject": "the Swedish Air Force", "Equipment": "a C-390",
                                               "Date": "June 28"})
    assert q == "Where did the Swedish Air Force exhibit a C-390 on June 28?"
    # A required slot that the event lacks gets a neutral filler, never a raw "{Subject}".
    assert build_question("Deploy", "Date", {"Militaryforce": "two battalions"}) == \
        "When did the party deploy two battalions?"


def _doc(events, doc_id="d1", text="On May 9, the Indian Army deployed two battalions. Later A and B attacked C."):
    return {"id": doc_id, "text_en": text, "events": events}


def test_qa_pairs_one_per_event_role_and_repeated_role_joined():
    counts = Counter()
    doc = _doc([
        {"event_type": "Deploy", "trigger": {"en": "deployed"}, "arguments": [
            {"role": "Subject", "en": "the Indian Army"}, {"role": "Militaryforce", "en": "two battalions"},
            {"role": "Date", "en": "May 9"}]},
        {"event_type": "Conflict", "trigger": {"en": "attacked"}, "arguments": [
            {"role": "Subject", "en": "A"}, {"role": "Subject", "en": "B"}, {"role": "Object", "en": "C"}]},
    ])
    pairs = qa_pairs(doc, counts)
    assert [(p["event_type"], p["role"]) for p in pairs] == [
        ("Deploy", "Subject"), ("Deploy", "Militaryforce"), ("Deploy", "Date"), ("Conflict", "Subject"),
        ("Conflict", "Object")]
    conflict_subject = pairs[3]
    assert conflict_subject["output"] == "A and B" and conflict_subject["answer_in_context"]
    assert pairs[4]["instruction"] == "Whom did A and B attack?"
    assert counts["role_repeated_joined"] == 1
    assert all(p["input"] == doc["text_en"] and p["doc_id"] == "d1" for p in pairs)


def test_identical_questions_with_different_answers_are_dropped():
    same = {"event_type": "Injure", "trigger": {"en": "x"}, "arguments": [{"role": "Subject", "en": "the army"}]}
    ev1 = {**same, "arguments": [*same["arguments"], {"role": "Quantity", "en": "3 soldiers"}]}
    ev2 = {**same, "arguments": [*same["arguments"], {"role": "Quantity", "en": "5 soldiers"}]}
    counts = Counter()
    pairs = qa_pairs(_doc([ev1, ev2]), counts)
    assert all(p["role"] != "Quantity" for p in pairs)
    assert counts["ambiguous_question"] == 2


def test_split_is_by_document_seeded_and_complete():
    ids = [f"d{i}" for i in range(100)]
    a = split_documents(ids, {"validation": 0.1, "test": 0.2}, seed=1)
    assert a == split_documents(list(reversed(ids)), {"validation": 0.1, "test": 0.2}, seed=1)
    assert a != split_documents(ids, {"validation": 0.1, "test": 0.2}, seed=2)
    assert Counter(a.values()) == {"train": 70, "validation": 10, "test": 20}
    with pytest.raises(DataError, match="sum below 1"):
        split_documents(ids, {"validation": 0.6, "test": 0.5}, seed=1)


def test_no_document_in_two_splits_of_the_shipped_fixture(tmp_path):
    from conftest import REPO

    from ftbench.translate import MemoryBackend, document_segments, translate_document, translate_segments

    corpus = load_corpus(REPO / "data/raw/cmnee_fixture.json", "utf-8", Counter())
    table = translate_segments([s for d, _ in corpus for s in document_segments(d)],
                               [MemoryBackend(REPO / "data/raw/translation_memory.json")])
    pairs = [p for d, _ in corpus for p in qa_pairs(translate_document(d, table), Counter())]
    split = split_documents([d.id for d, _ in corpus], {"validation": 0.1, "test": 0.15}, 42)
    docs_per_split = {s: {p["doc_id"] for p in pairs if split[p["doc_id"]] == s}
                      for s in ("train", "validation", "test")}
    assert not docs_per_split["train"] & docs_per_split["test"]
    assert not docs_per_split["train"] & docs_per_split["validation"]
    # what a leak would really look like: the same context (document text) asked about in two splits
    contexts = {s: {p["input"] for p in pairs if split[p["doc_id"]] == s} for s in ("train", "validation", "test")}
    assert not contexts["train"] & contexts["test"] and not contexts["train"] & contexts["validation"]
    assert not contexts["validation"] & contexts["test"]
    assert len(pairs) >= 600 and all(p["answer_in_context"] for p in pairs)
    assert len({p["event_type"] for p in pairs}) == 8


def test_offsets_repaired_when_unambiguous_else_dropped_and_counted():
    text = "美国海军在太平洋试射了导弹。"
    doc = Document("x", text, [Event("Experiment", Span("trigger", "试射", (8, 10)), [
        Span("Subject", " 美国海军", (0, 5)),       # leading space, as in CMNEE's example record
        Span("Location", "太平洋", (4, 7)),         # shifted by one
        Span("Equipment", "火箭", (11, 13)),        # not in the text at all
    ])])
    counts = Counter()
    fixed = check_offsets(doc, counts)
    args = {a.role: a for a in fixed.events[0].arguments}
    assert args["Subject"].offset == (0, 4) and text[0:4] == "美国海军"
    assert args["Location"].offset == (5, 8) and text[5:8] == "太平洋"
    assert "Equipment" not in args
    assert counts == {"span_repaired": 2, "span_dropped_not_found": 1}


def test_release_folder_keeps_its_splits_and_reads_a_bom(tmp_path):
    doc = {"id": "a", "text": "美国海军试射了导弹。", "event_list": [], "coref_arguments": []}
    (tmp_path / "train.json").write_text(json.dumps([doc], ensure_ascii=False), encoding="utf-8-sig")
    (tmp_path / "valid.json").write_text(json.dumps([{**doc, "id": "b"}], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "test.json").write_text(json.dumps([{**doc, "id": "c"}], ensure_ascii=False), encoding="gb18030")
    with pytest.raises(DataError, match="test.json: byte"):
        load_corpus(tmp_path, "utf-8", Counter())
    (tmp_path / "test.json").write_text(json.dumps([{**doc, "id": "c"}], ensure_ascii=False), encoding="utf-8")
    counts = Counter()
    corpus = load_corpus(tmp_path, "utf-8", counts)
    assert [(d.id, s) for d, s in corpus] == [("a", "train"), ("b", "validation"), ("c", "test")]
    assert counts["document_without_events"] == 3


def test_gb18030_release_read_when_asked(tmp_path):
    doc = {"id": "a", "text": "美国海军试射了导弹。", "event_list": []}
    path = tmp_path / "cmnee.json"
    path.write_text(json.dumps([doc], ensure_ascii=False), encoding="gb18030")
    assert load_corpus(path, "gb18030", Counter())[0][0].text == doc["text"]


def test_alpaca_json_and_jsonl_grouped_by_context(tmp_path):
    recs = [{"instruction": "Q1", "input": "ctx A", "output": "a"},
            {"instruction": "Q2", "input": "ctx A", "output": "b"},
            {"instruction": "Q3", "output": "c"}]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert load_alpaca(tmp_path / "d.json") == load_alpaca(tmp_path / "d.jsonl") == recs
    docs = alpaca_documents(recs)
    assert [len(d["pairs"]) for d in docs] == [2, 1]
    assert docs[1]["pairs"][0]["input"] == ""
    # records without a context are documents of their own, not one document of every empty input (the
    # document is what splits and statistics resample); the same question twice stays together
    no_context = [{"instruction": f"Q{i % 3}", "output": "x"} for i in range(4)]
    assert sorted(len(d["pairs"]) for d in alpaca_documents(no_context)) == [1, 1, 2]


def test_parse_document_accepts_the_fixture_schema():
    raw = {"id": 7, "text": "美国海军试射了导弹。", "event_list": [{"event_type": "Experiment",
           "trigger": {"text": "试射", "offset": [4, 6]}, "arguments": [{"role": "Subject", "text": "美国海军",
                                                                         "offset": [0, 4]}]}]}
    doc = parse_document(raw, "f record 0")
    assert doc.id == "7" and doc.events[0].arguments[0].offset == (0, 4)


def test_long_document_truncated_around_the_answer_or_dropped_and_counted(smollm_tokenizer):
    from ftbench.prompts import fit_context, render_prompt
    from ftbench.training import encode_examples

    filler = " ".join(f"Sentence {i} says nothing of note." for i in range(120))
    ex = {"instruction": "Who tested the missile?", "output": "the US Navy",
          "input": f"{filler} On May 9, the US Navy tested the missile. {filler}"}
    render = lambda e: render_prompt(smollm_tokenizer, e, "chat", "Answer briefly.")  # noqa: E731
    fitted, truncated = fit_context(smollm_tokenizer, ex, 200, render)
    assert truncated and "the US Navy tested the missile" in fitted["input"]
    assert len(smollm_tokenizer(render(fitted), add_special_tokens=False)["input_ids"]) <= 200
    assert fit_context(smollm_tokenizer, ex, 10, render) is None  # not even the answer fits

    counts: dict = {}
    short = {"instruction": "Who?", "input": "The US Navy did.", "output": "The US Navy"}
    encoded = encode_examples(smollm_tokenizer, [ex, short], max_seq_len=200, style="chat",
                              system_prompt="Answer briefly.", completion_only=True, counts=counts)
    assert counts == {"train_truncated": 1}
    assert len(encoded) == 2 and all(len(e.input_ids) <= 200 for e in encoded)
    answer = [t for t, label in zip(encoded[0].input_ids, encoded[0].labels, strict=True) if label != -100]
    assert smollm_tokenizer.decode(answer) == "the US Navy" + smollm_tokenizer.eos_token  # loss on the answer only
    encode_examples(smollm_tokenizer, [ex], max_seq_len=20, style="chat", system_prompt="Answer briefly.",
                    completion_only=True, counts=counts)
    assert counts["train_dropped_too_long"] == 1


@pytest.mark.parametrize("keep", ["start", "end"])
def test_fit_context_by_a_fixed_rule_keeps_one_end_and_ignores_the_answer(smollm_tokenizer, keep):
    """Evaluation's rule: the window depends on the context only, so the answer is in it only by chance."""
    from ftbench.prompts import fit_context, render_prompt

    filler = " ".join(f"Sentence {i} says nothing of note." for i in range(120))
    ex = {"instruction": "Who tested the missile?", "output": "the US Navy",
          "input": f"{filler} On May 9, the US Navy tested the missile. {filler}"}
    render = lambda e: render_prompt(smollm_tokenizer, e, "chat", "Answer briefly.")  # noqa: E731
    fitted, truncated = fit_context(smollm_tokenizer, ex, 200, render, keep=keep)
    assert truncated and len(smollm_tokenizer(render(fitted), add_special_tokens=False)["input_ids"]) <= 200
    kept = fitted["input"]
    assert (ex["input"].startswith(kept) if keep == "start" else ex["input"].endswith(kept)) and len(kept) > 100
    assert "the US Navy" not in kept
    assert fit_context(smollm_tokenizer, {**ex, "output": "Sentence 1 says"}, 200, render, keep=keep) == (
        {**fitted, "output": "Sentence 1 says"}, True)
    with pytest.raises(ValueError, match="unknown context truncation"):
        fit_context(smollm_tokenizer, ex, 200, render, keep="middle")
