"""Alpaca-style QA pairs from translated CMNEE documents: questions and splits (prompts: ``prompts.py``).

One QA pair per (event, role). The question is an English template per (event type, role) that
names the event's *other* arguments, so it picks one event out of a document that may hold
several. ``[ ... ]`` parts of a template are kept only when every argument they name is present.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict

from ftbench.io import DataError

TEMPLATES: dict[str, dict[str, str]] = {
    "Experiment": {
        "Subject": "Who tested {Equipment}[ in {Location}][ on {Date}]?",
        "Equipment": "What equipment did {Subject} test[ in {Location}][ on {Date}]?",
        "Date": "When did {Subject} test {Equipment}[ in {Location}]?",
        "Location": "Where did {Subject} test {Equipment}[ on {Date}]?",
    },
    "Manoeuvre": {
        "Subject": "Who held the exercise[ involving {Content}][ in {Area}][ on {Date}]?",
        "Content": "What did the exercise held by {Subject}[ in {Area}][ on {Date}] involve?",
        "Date": "When did {Subject} hold the exercise[ involving {Content}][ in {Area}]?",
        "Area": "In what area did {Subject} hold the exercise[ involving {Content}][ on {Date}]?",
    },
    "Deploy": {
        "Subject": "Who deployed {Militaryforce}[ to {Location}][ on {Date}]?",
        "Militaryforce": "What forces did {Subject} deploy[ to {Location}][ on {Date}]?",
        "Date": "When did {Subject} deploy {Militaryforce}[ to {Location}]?",
        "Location": "Where did {Subject} deploy {Militaryforce}[ on {Date}]?",
    },
    "Support": {
        "Subject": "Who provided support to {Object}[ with {Materials}][ on {Date}]?",
        "Object": "Whom did {Subject} support[ with {Materials}][ on {Date}]?",
        "Materials": "What did {Subject} provide to {Object}[ on {Date}]?",
        "Date": "When did {Subject} provide support to {Object}[ with {Materials}]?",
    },
    "Accident": {
        "Subject": "Who was involved in the accident[ in {Location}][ on {Date}][ in which {Result}]?",
        "Result": "What was the result of the accident involving {Subject}[ in {Location}][ on {Date}]?",
        "Date": "When did the accident involving {Subject} happen[ in {Location}]?",
        "Location": "Where did the accident involving {Subject} happen[ on {Date}]?",
    },
    "Exhibit": {
        "Subject": "Who exhibited {Equipment}[ at {Location}][ on {Date}]?",
        "Equipment": "What equipment did {Subject} exhibit[ at {Location}][ on {Date}]?",
        "Date": "When did {Subject} exhibit {Equipment}[ at {Location}]?",
        "Location": "Where did {Subject} exhibit {Equipment}[ on {Date}]?",
    },
    "Conflict": {
        "Subject": "Who attacked {Object}[ in {Location}][ on {Date}]?",
        "Object": "Whom did {Subject} attack[ in {Location}][ on {Date}]?",
        "Date": "When did {Subject} attack {Object}[ in {Location}]?",
        "Location": "Where did {Subject} attack {Object}[ on {Date}]?",
    },
    "Injure": {
        "Subject": "Who suffered casualties[ in {Location}][ on {Date}]?",
        "Quantity": "How many casualties did {Subject} suffer[ in {Location}][ on {Date}]?",
        "Date": "When did {Subject} suffer casualties[ in {Location}]?",
        "Location": "Where did {Subject} suffer casualties[ on {Date}]?",
    },
}

#: Stand-ins for a required argument the event lacks (real CMNEE events are often incomplete).
FILLERS = {"Subject": "the party", "Equipment": "the equipment", "Object": "the target", "Militaryforce": "forces",
           "Content": "the drills", "Materials": "supplies", "Result": "damage", "Quantity": "casualties",
           "Date": "that day", "Location": "the area", "Area": "the area"}

_OPTIONAL = re.compile(r"\[([^\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")


def build_question(event_type: str, role: str, values: dict[str, str]) -> str:
    """Fill the (event type, role) template with the event's other arguments."""
    template = TEMPLATES[event_type][role]

    def optional(m: re.Match) -> str:
        return m.group(1) if all(values.get(s) for s in _SLOT.findall(m.group(1))) else ""

    text = _OPTIONAL.sub(optional, template)
    return _SLOT.sub(lambda m: values.get(m.group(1)) or FILLERS[m.group(1)], text)


_STATUS_RANK = {"exact": 0, "projected": 1, "kept": 2, "dropped": 3}


def _answer_entry(pair_id: str, doc_id: str, role: str, found: list[dict], answer: str) -> dict:
    """How one QA answer was found, from its arguments' projections: the worst status wins."""
    worst = max(found, key=lambda p: _STATUS_RANK[p["status"]])
    entry = {"id": pair_id, "doc_id": doc_id, "role": role, "status": worst["status"],
             "translation": " and ".join(p["translation"] for p in found),
             "answer": None if worst["status"] == "dropped" else answer,
             "score": min((p["score"] for p in found if p["score"] is not None), default=None)}
    if "reason" in worst:
        entry["reason"] = worst["reason"]
    return entry


def qa_pairs(doc: dict, counts: Counter, audit: list[dict] | None = None) -> list[dict]:
    """QA pairs of one translated document (see :func:`ftbench.translate.translate_document`).

    A role given twice in one event (two Subjects) becomes one pair whose answer lists both,
    joined with " and ", because either alone would be marked wrong against the other.
    Questions that come out identical for two events with different answers are dropped.
    Arguments projected by :func:`ftbench.projection.project_document` answer with their projected span;
    a role with a dropped argument gives no pair (counted as ``answer_<reason>``), since half an answer
    would be marked wrong. ``audit`` receives one entry per answer (kept or dropped) saying how it was found.
    """
    pairs, entries = [], []
    for i, ev in enumerate(doc["events"]):
        by_role: dict[str, list[str]] = defaultdict(list)
        found: dict[str, list[dict]] = defaultdict(list)
        for a in ev["arguments"]:
            if a["en"] not in by_role[a["role"]]:
                by_role[a["role"]].append(a["en"])
            if "projection" in a:
                found[a["role"]].append(a["projection"])
        values = {role: " and ".join(texts) for role, texts in by_role.items()}
        for role, answer in values.items():
            if len(by_role[role]) > 1:
                counts["role_repeated_joined"] += 1
            if not answer.strip():
                counts["empty_answer"] += 1
                continue
            pair_id = f"{doc['id']}-e{i}-{role}"
            if found[role]:
                entries.append(_answer_entry(pair_id, doc["id"], role, found[role], answer))
                if entries[-1]["status"] == "dropped":
                    counts[f"answer_{entries[-1]['reason']}"] += 1
                    continue
            others = {r: v for r, v in values.items() if r != role}
            pairs.append({
                "id": pair_id,
                "doc_id": doc["id"],
                "event_type": ev["event_type"],
                "role": role,
                "instruction": build_question(ev["event_type"], role, others),
                "input": doc["text_en"],
                "output": answer,
                "answer_in_context": all(t in doc["text_en"] for t in by_role[role]),
            })
    answers = defaultdict(set)
    for p in pairs:
        answers[p["instruction"]].add(p["output"])
    kept = [p for p in pairs if len(answers[p["instruction"]]) == 1]
    counts["ambiguous_question"] += len(pairs) - len(kept)
    seen, unique = set(), []
    for p in kept:  # the same question twice with the same answer: keep one
        if p["instruction"] not in seen:
            seen.add(p["instruction"])
            unique.append(p)
    if audit is not None:
        kept = {p["id"] for p in unique}
        audit.extend(e for e in entries if e["status"] == "dropped" or e["id"] in kept)
    return unique


def split_documents(doc_ids: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each document to train/validation/test so no document's pairs cross splits."""
    for key in fractions:
        if key not in ("validation", "test"):
            raise DataError(f"params.yaml: data.split has unknown key '{key}'", fix="use validation and test")
    val, test = fractions.get("validation", 0.1), fractions.get("test", 0.1)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"params.yaml: data.split fractions {fractions} must be in [0, 1) and sum below 1",
                        fix="e.g. {validation: 0.1, test: 0.15}")
    ids = sorted(set(doc_ids))
    random.Random(seed).shuffle(ids)
    n_test, n_val = round(len(ids) * test), round(len(ids) * val)
    if len(ids) >= 3:
        n_test, n_val = max(n_test, 1 if test else 0), max(n_val, 1 if val else 0)
    split = {d: "test" for d in ids[:n_test]}
    split.update({d: "validation" for d in ids[n_test:n_test + n_val]})
    split.update({d: "train" for d in ids[n_test + n_val:]})
    return split


def cap(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A seeded sample of at most ``limit`` rows, in a stable order."""
    if limit is None or len(rows) <= limit:
        return rows
    picked = random.Random(seed).sample(range(len(rows)), limit)
    return [rows[i] for i in sorted(picked)]
