"""Answer projection: translated arguments become spans of the translated sentence they came from.

tests/fixtures/projection_cmnee.json and projection_memory.json are a hand-written translation memory in which
argument translations differ from the sentence translations the way machine translation does: dotted
abbreviations, number words and unit names, reordered names and dates, articles and case, British and
American spelling, a synonym, a span the sentence translation left out, and a name that is found verbatim
only in another sentence of the document.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from ftbench.cmnee import load_corpus
from ftbench.io import ConfigError
from ftbench.params import DataParams, load_params
from ftbench.projection import MODES, best_span, project_document
from ftbench.translate import MemoryBackend, document_segments, translate_document, translate_segments

FIXTURES = REPO / "tests/fixtures"

# (document, role) -> the answer after projection; None: the pair is dropped. Translations are in the memory.
EXPECTED = {
    ("pj-1", "Subject"): "NATO forces",                                    # N.A.T.O. forces
    ("pj-1", "Date"): "March 5",                                           # exact
    ("pj-1", "Area"): "three kilometres north of Port Sudan",              # 3 km north of Port Sudan
    ("pj-1", "Content"): "a joint manoeuvre",                              # a joint maneuver
    ("pj-2", "Subject"): "The US Navy",                                    # the U.S. Navy
    ("pj-2", "Date"): "20 September 2019",                                 # September 20, 2019
    ("pj-2", "Location"): "Guam",
    ("pj-2", "Equipment"): "a new laser weapon",
    ("pj-3", "Subject"): None,  # "the aircraft carrier Abraham Lincoln" is verbatim in sentence 1, not in its own
    ("pj-3", "Militaryforce"): "two F-35C fighters",                       # 2 F-35C fighter jets
    ("pj-3", "Location"): "the area",
    ("pj-4", "Subject"): "Chinese Defence Minister Wei Fenghe",            # Chinese Defense Minister Fenghe Wei
    ("pj-4", "Object"): "the Pakistani Army",                              # the Pakistan Army
    ("pj-4", "Materials"): None,  # "medical materials" for "medical supplies": a synonym no spelling aligns
    ("pj-5", "Subject"): "The Israeli Air Force",                          # the Israeli Air Force
    ("pj-5", "Object"): None,     # "Hamas military facilities": the sentence translation left it out
    ("pj-5", "Location"): "Gaza Strip",
    ("pj-5", "Quantity"): "five soldiers",                                 # 5 soldiers
}
DROPPED = {"below_threshold": 2, "only_in_other_sentence": 1}


def _translated() -> list[dict]:
    corpus = load_corpus(FIXTURES / "projection_cmnee.json", "utf-8", Counter())
    table = translate_segments([s for d, _ in corpus for s in document_segments(d)],
                               [MemoryBackend(FIXTURES / "projection_memory.json")])
    return [translate_document(d, table) for d, _ in corpus]


def test_sentence_offsets_trace_each_argument_to_its_sentence():
    docs = {d["id"]: d for d in _translated()}
    lincoln = docs["pj-3"]
    first, second = (lincoln["text_en"][s:e] for s, e in lincoln["sentences"])
    assert first == "The US Navy aircraft carrier Abraham Lincoln arrived in the Arabian Sea."
    assert second == "The Lincoln then deployed two F-35C fighters to the area."
    # its Subject 林肯 occurs in both Chinese sentences; the annotation points at the second, where the event is
    assert [a["sentence"] for a in lincoln["events"][0]["arguments"]] == [[1, 1]] * 3
    assert [a["sentence"] for a in docs["pj-5"]["events"][1]["arguments"]] == [[1, 1]]


@pytest.mark.parametrize(("answer", "text", "span"), [
    ("N.A.T.O. forces", "On May 9, NATO forces held a drill.", "NATO forces"),
    ("the U.S. Navy", "Officials of the U.S. Navy said so.", "the U.S. Navy"),     # the dotted form kept whole
    ("3 km north of Port Sudan", "It lay three kilometres north of the port of Sudan.",
     "three kilometres north of the port of Sudan"),
    ("twenty-five soldiers", "The attack injured 25 soldiers.", "25 soldiers"),
    ("the British maneuver", "The British manoeuvre ended.", "The British manoeuvre"),
    ("9 May", "On May 9, NATO forces held a drill.", "May 9"),
    ("$400 million", "Weapons worth $400 million were sold.", "$400 million"),
])
def test_best_span_is_whole_words_of_the_text(answer, text, span):
    m = best_span(answer, text)
    assert text[m.start:m.end] == span
    assert (m.start == 0 or not text[m.start - 1].isalnum()) and (m.end == len(text) or not text[m.end].isalnum())


def test_best_span_is_none_when_nothing_compares():
    assert best_span("NATO", "The.") is None and best_span("...", "NATO forces") is None


def test_best_span_never_runs_over_a_sentence_end():
    text = "Troops reached the port of Sudan. The British manoeuvre ended."
    m = best_span("Sudan. The British", text)
    assert "." not in text[m.start:m.end].rstrip(".")


@pytest.mark.parametrize("mode", MODES)
def test_projection_per_argument_and_mode(mode):
    got = {}
    for doc in _translated():
        for ev in project_document(doc, mode, 75)["events"]:
            for a in ev["arguments"]:
                got[(doc["id"], a["role"])] = (a["en"], a["projection"])
    for key, want in EXPECTED.items():
        answer, how = got[key]
        translation = how["translation"]
        if want == translation:
            assert how["status"] == "exact" and answer == want, key
        elif mode == "drop":
            assert how["status"] == "dropped" and how["reason"] == "not_exact", key
        elif want is None:
            assert how["status"] == ("kept" if mode == "keep" else "dropped") and answer == translation, key
            assert how["score"] < 75
        else:
            assert how["status"] == "projected" and answer == want and how["score"] >= 75, key
    reasons = Counter(how.get("reason") for _, how in got.values() if how["status"] in ("dropped", "kept"))
    assert reasons == ({"not_exact": 13} if mode == "drop" else DROPPED)


def test_projection_modes_are_the_params_choices():
    assert DataParams.rules["answer_projection"].choices == MODES


@pytest.mark.parametrize(("key", "value", "message"), [
    ("projection_threshold", 150, "data.projection_threshold is 150. Fix: use a similarity score in [0, 100]"),
    ("projection_threshold", "high", "data.projection_threshold is 'high' (a string)"),
    ("answer_projection", "fuzzy", "data.answer_projection is 'fuzzy'. Fix: use one of align, keep, drop"),
    ("allow_split_overlap", "yes", "data.allow_split_overlap is 'yes' (a string). Fix: use true or false"),
])
def test_bad_projection_params_are_named(tmp_path, key, value, message):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_params(tmp_path / "params.yaml")


# ------------------------------------------------------------------ the real translate + format stages


def _stages(tmp_path: Path, **data) -> dict:
    """Run translate then format on the fixture in a scratch project; returns metrics/data.json."""
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    for name in ("projection_cmnee.json", "projection_memory.json"):
        (raw / name).write_bytes((FIXTURES / name).read_bytes())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update({"raw": "data/raw/projection_cmnee.json", "split": {"validation": 0.0, "test": 0.0},
                           "max_train": None, "max_eval": None, **data})
    params["translate"].update({"backends": ["memory"], "memory": "data/raw/projection_memory.json"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("translate", "format"):
        proc = subprocess.run([sys.executable, str(REPO / f"stages/{stage}.py")], cwd=tmp_path, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((tmp_path / "metrics/data.json").read_text())


def _rows(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "data/processed/train.jsonl").read_text().splitlines()]


def test_stages_project_answers_and_count_every_drop(tmp_path):
    data = _stages(tmp_path)
    rows = _rows(tmp_path)
    answers = {(r["doc_id"], r["role"]): r["output"] for r in rows}
    assert answers == {k: v for k, v in EXPECTED.items() if v is not None}
    assert all(r["answer_in_context"] and r["output"] in r["input"] for r in rows)
    train = data["splits"]["train"]
    assert train["answers_not_in_context"] == 0 and train["qa_pairs"] == len(EXPECTED) - 3
    report = train["answers"]
    assert (report["exact"], report["projected"], report["kept_below_threshold"], report["dropped"]) == (5, 10, 0, 3)
    assert report["dropped_by_reason"] == DROPPED
    assert report["by_role"]["Subject"] == {"exact": 0, "projected": 4, "kept_below_threshold": 0, "dropped": 1}
    assert {k: data["dropped"][f"answer_{k}"] for k in DROPPED} == DROPPED  # beside the other drops, by reason
    sample = json.loads((tmp_path / "data/interim/projection_sample.json").read_text())
    assert sample["answer_projection"] == "align" and sample["projection_threshold"] == 75
    assert {(e["translation"], e["answer"]) for e in sample["projected"]} >= {("N.A.T.O. forces", "NATO forces"),
                                                                               ("5 soldiers", "five soldiers")}
    assert {e["translation"]: e["reason"] for e in sample["dropped"]} == {
        "the aircraft carrier Abraham Lincoln": "only_in_other_sentence",
        "medical materials": "below_threshold", "Hamas military facilities": "below_threshold"}
    assert all(e["score"] is not None and e["answer"] is None for e in sample["dropped"])


def test_keep_mode_keeps_unaligned_translations_and_says_so(tmp_path):
    data = _stages(tmp_path, answer_projection="keep")
    train = data["splits"]["train"]
    assert train["qa_pairs"] == len(EXPECTED) and train["answers_not_in_context"] == 3
    assert train["answers"]["kept_below_threshold"] == 3 and train["answers"]["dropped"] == 0
    kept = {r["output"] for r in _rows(tmp_path) if not r["answer_in_context"]}
    assert kept == {"the aircraft carrier Abraham Lincoln", "medical materials", "Hamas military facilities"}


def test_drop_mode_keeps_only_verbatim_answers(tmp_path):
    data = _stages(tmp_path, answer_projection="drop", projection_threshold=0)
    train = data["splits"]["train"]
    assert train["qa_pairs"] == 5 and train["answers_not_in_context"] == 0
    assert train["answers"]["dropped_by_reason"] == {"not_exact": 13}
