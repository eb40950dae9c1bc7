"""The committed CMNEE fixture and translation memory: schema, coverage, and reproducibility."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ftbench.cmnee import EVENT_ROLES, parse_document
from ftbench.translate import segment_zh

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
FIXTURE = RAW / "cmnee_fixture.json"
MEMORY = RAW / "translation_memory.json"
SCRIPT = ROOT / "scripts" / "make_fixture.py"


@pytest.fixture(scope="module")
def raw_docs() -> list[dict]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def docs(raw_docs):
    return [parse_document(raw, f"{FIXTURE.name} record {i}") for i, raw in enumerate(raw_docs)]


@pytest.fixture(scope="module")
def memory() -> dict[str, str]:
    mem = json.loads(MEMORY.read_text(encoding="utf-8"))
    assert isinstance(mem, dict)
    assert all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in mem.items())
    return mem


def test_sizes_and_unique_ids(docs):
    assert len(docs) >= 300
    assert sum(len(ev.arguments) for d in docs for ev in d.events) >= 600
    ids = [d.id for d in docs]
    assert len(set(ids)) == len(ids)


def test_every_type_and_role_covered(docs):
    types = Counter(ev.event_type for d in docs for ev in d.events)
    pairs = Counter((ev.event_type, a.role) for d in docs for ev in d.events for a in ev.arguments)
    assert set(types) == set(EVENT_ROLES)
    for etype, roles in EVENT_ROLES.items():
        for role in roles:
            assert pairs[(etype, role)] >= 10, f"too few {etype}/{role} arguments"
    # Roughly balanced event types.
    assert max(types.values()) <= 2 * min(types.values())


def test_offsets_match(docs):
    for d in docs:
        for ev in d.events:
            s, e = ev.trigger.offset
            assert d.text[s:e] == ev.trigger.text, d.id
            for a in ev.arguments:
                s, e = a.offset
                assert d.text[s:e] == a.text, (d.id, a.role)


def test_sentences_are_well_formed(docs):
    for d in docs:
        sents = segment_zh(d.text)
        assert 2 <= len(sents) <= 4, d.id
        assert "".join(sents) == d.text, d.id
        assert all(s.endswith("。") for s in sents), d.id
        assert 1 <= len(d.events) <= 2, d.id


def test_memory_covers_segments_triggers_and_arguments(docs, memory):
    for d in docs:
        for s in segment_zh(d.text):
            assert s in memory, (d.id, s)
        for ev in d.events:
            assert ev.trigger.text in memory, (d.id, ev.trigger.text)
            for a in ev.arguments:
                assert a.text in memory, (d.id, a.text)


def test_english_answers_occur_verbatim(docs, memory):
    for d in docs:
        en_doc = " ".join(memory[s] for s in segment_zh(d.text))
        assert 25 <= len(en_doc.split()) <= 100, d.id
        for ev in d.events:
            for a in ev.arguments:
                assert memory[a.text] in en_doc, (d.id, a.role, memory[a.text])


def test_coref_groups_name_mentions(raw_docs):
    with_coref = [d for d in raw_docs if d.get("coref_arguments")]
    assert with_coref, "some documents should carry coreference groups"
    for d in with_coref:
        for group in d["coref_arguments"]:
            assert len(group) >= 2
            for mention in group:
                assert mention["role"] in {r for roles in EVENT_ROLES.values() for r in roles}
                assert mention["text"] in d["text"], d["id"]


def test_regeneration_is_byte_identical(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(tmp_path)], check=True,
                   capture_output=True, cwd=ROOT)
    assert (tmp_path / FIXTURE.name).read_bytes() == FIXTURE.read_bytes()
    assert (tmp_path / MEMORY.name).read_bytes() == MEMORY.read_bytes()
