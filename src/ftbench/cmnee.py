"""CMNEE schema: event types, their argument roles, and validation of raw documents.

CMNEE (Chinese Military News Event Extraction) ships JSON lists of documents::

    {"id": str, "text": str (zh),
     "event_list": [{"event_type": str,
                     "trigger": {"text": str, "offset": [start, end]},
                     "arguments": [{"role": str, "text": str, "offset": [start, end]}]}],
     "coref_arguments": [[{"role": str, "text": str}, ...], ...]}

Offsets index characters of ``text`` so that ``text[start:end] == span``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ftbench.io import DataError, read_json_file

#: Event types of CMNEE and the argument roles each one takes.
EVENT_ROLES: dict[str, tuple[str, ...]] = {
    "Experiment": ("Subject", "Equipment", "Date", "Location"),
    "Manoeuvre": ("Subject", "Content", "Date", "Area"),
    "Deploy": ("Subject", "Militaryforce", "Date", "Location"),
    "Support": ("Subject", "Object", "Materials", "Date"),
    "Accident": ("Subject", "Result", "Date", "Location"),
    "Exhibit": ("Subject", "Equipment", "Date", "Location"),
    "Conflict": ("Subject", "Object", "Date", "Location"),
    "Injure": ("Subject", "Quantity", "Date", "Location"),
}
ROLES: tuple[str, ...] = (
    "Subject", "Equipment", "Date", "Location", "Area", "Content",
    "Militaryforce", "Object", "Materials", "Result", "Quantity",
)


@dataclass
class Span:
    role: str
    text: str
    offset: tuple[int, int]


@dataclass
class Event:
    event_type: str
    trigger: Span
    arguments: list[Span] = field(default_factory=list)


@dataclass
class Document:
    id: str
    text: str
    events: list[Event]
    coref_arguments: list[list[dict]] = field(default_factory=list)


def _span(obj: object, where: str, role: str | None = None) -> Span:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object, got {type(obj).__name__}",
                        fix='write it as {"text": ..., "offset": [start, end]}')
    for key in ("text", "offset") if role is None else ("role", "text", "offset"):
        if key not in obj:
            raise DataError(f"{where}: missing field '{key}'", fix=f"add '{key}' to the record")
    off = obj["offset"]
    if not (isinstance(off, list | tuple) and len(off) == 2 and all(isinstance(v, int) for v in off)):
        raise DataError(f"{where}: offset {off!r} is not [start, end]", fix="give offset as two integers [start, end]")
    if not isinstance(obj["text"], str):
        raise DataError(f"{where}: text must be a string, got {type(obj['text']).__name__}",
                        fix="write the span text as a string")
    if not obj["text"].strip():
        raise DataError(f"{where}: empty span text", fix="give the argument's words, or remove the argument")
    if not 0 <= off[0] < off[1]:
        raise DataError(f"{where}: offset {off} is not a span (need 0 <= start < end)",
                        fix="offsets are character positions with text[start:end] == the span")
    return Span(role=obj.get("role", "trigger"), text=obj["text"], offset=(off[0], off[1]))


def parse_document(raw: object, where: str) -> Document:
    """Check one raw record against the schema and return it typed.

    Raises :class:`DataError` naming ``where`` (file and record) and the fix.
    An offset outside the text, or reversed, means a corrupt or cut record and is an error here. An offset
    inside the text that does not hold the span's string (``text[start:end] != span``: a stray space, a
    shift) is CMNEE's known defect and is left to :func:`check_offsets`, which repairs or drops and counts it.
    """
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a document object, got {type(raw).__name__}",
                        fix="each element of the top-level list must be {\"id\", \"text\", \"event_list\"}")
    for key in ("id", "text", "event_list"):
        if key not in raw:
            raise DataError(f"{where}: missing field '{key}'", fix=f"add '{key}' to the document")
    if not isinstance(raw["text"], str) or not raw["text"].strip():
        raise DataError(f"{where}: empty document text", fix="give the document's Chinese text, or remove the record")
    if not isinstance(raw["event_list"], list):
        raise DataError(f"{where}: event_list must be a list, got {type(raw['event_list']).__name__}",
                        fix="write event_list as a JSON list (possibly empty)")
    events = []
    for i, ev in enumerate(raw["event_list"]):
        ew = f"{where} event {i}"
        if not isinstance(ev, dict):
            raise DataError(f"{ew}: expected an event object, got {type(ev).__name__}",
                            fix="write each event as {\"event_type\", \"trigger\", \"arguments\"}")
        for key in ("event_type", "trigger", "arguments"):
            if key not in ev:
                raise DataError(f"{ew}: missing field '{key}'", fix=f"add '{key}' to the event")
        etype = ev["event_type"]
        if etype not in EVENT_ROLES:
            raise DataError(f"{ew}: unknown event type {etype!r}",
                            fix=f"use one of {', '.join(EVENT_ROLES)}")
        if not isinstance(ev["arguments"], list):
            raise DataError(f"{ew}: arguments must be a list", fix="write arguments as a JSON list")
        args = []
        for j, a in enumerate(ev["arguments"]):
            span = _span(a, f"{ew} argument {j}", role="required")
            if span.role not in EVENT_ROLES[etype]:
                raise DataError(f"{ew} argument {j}: role {span.role!r} is not a role of {etype}",
                                fix=f"use one of {', '.join(EVENT_ROLES[etype])}")
            args.append(span)
        events.append(Event(etype, _span(ev["trigger"], f"{ew} trigger"), args))
    for ev_i, ev in enumerate(events):
        for span in (ev.trigger, *ev.arguments):
            if span.offset[1] > len(raw["text"]):
                raise DataError(f"{where} event {ev_i}: {span.role} offset {list(span.offset)} is out of range for a "
                                f"text of {len(raw['text'])} characters",
                                fix="offsets must index this document's text; was the record cut or merged?")
    coref = raw.get("coref_arguments") or []
    return Document(id=str(raw["id"]), text=raw["text"], events=events, coref_arguments=coref)


def check_offsets(doc: Document, counts: Counter) -> Document:
    """Make every span satisfy ``text[start:end] == span``, repairing or dropping what does not.

    Real CMNEE has spans with a stray leading space or shifted offsets. A span whose (stripped)
    string occurs exactly once in the document is moved there; an ambiguous or absent one is
    dropped and counted under ``counts`` so the data report shows it.
    """

    def fix(span: Span) -> Span | None:
        start, end = span.offset
        if doc.text[start:end] == span.text:  # parse_document has checked 0 <= start < end <= len(text)
            return span
        text = span.text.strip()
        if text and doc.text.count(text) == 1:
            start = doc.text.index(text)
            counts["span_repaired"] += 1
            return Span(span.role, text, (start, start + len(text)))
        counts["span_dropped_ambiguous" if text and text in doc.text else "span_dropped_not_found"] += 1
        return None

    events = []
    for ev in doc.events:
        trigger = fix(ev.trigger) or ev.trigger
        args = [a for a in (fix(a) for a in ev.arguments) if a is not None]
        events.append(Event(ev.event_type, trigger, args))
    return Document(doc.id, doc.text, events, doc.coref_arguments)


def load_documents(path: str | Path, encoding: str, counts: Counter) -> list[Document]:
    """Read and validate a CMNEE JSON list; duplicate ids and schema errors stop with the record named."""
    raw = read_json_file(path, encoding)
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a JSON list of documents, got {type(raw).__name__}",
                        fix='CMNEE files are a top-level list [{"id": ..., "text": ..., "event_list": [...]}, ...]')
    docs, seen = [], {}
    for i, rec in enumerate(raw):
        rid = rec.get("id") if isinstance(rec, dict) else None
        doc = parse_document(rec, f"{path} record {i}" + (f" (id {rid})" if rid is not None else ""))
        if doc.id in seen:
            raise DataError(f"{path} record {i}: duplicate id {doc.id!r} (first at record {seen[doc.id]})",
                            fix="give every document a unique id")
        seen[doc.id] = i
        doc = check_offsets(doc, counts)
        if not doc.events:
            counts["document_without_events"] += 1
        docs.append(doc)
    return docs


#: File names of CMNEE's own release splits, in the order they are looked for.
RELEASE_SPLITS = {"train": ("train.json",), "validation": ("valid.json", "dev.json"), "test": ("test.json",)}


def load_corpus(path: str | Path, encoding: str, counts: Counter) -> list[tuple[Document, str | None]]:
    """Documents with their release split: a directory with train/valid/test.json keeps CMNEE's
    own splits (so results compare with published ones); a single file gets split later, by document."""
    path = Path(path)
    if not path.is_dir():
        return [(d, None) for d in load_documents(path, encoding, counts)]
    found = {split: next((path / n for n in names if (path / n).exists()), None)
             for split, names in RELEASE_SPLITS.items()}
    if found["train"] is None:
        raise DataError(f"{path}: directory has no train.json",
                        fix="point data.raw at CMNEE's release folder (train/valid/test.json) or at one JSON file")
    out, seen = [], {}
    for split, file in found.items():
        if file is None:
            continue
        for doc in load_documents(file, encoding, counts):
            if doc.id in seen:
                raise DataError(f"{file}: document id {doc.id!r} also appears in {seen[doc.id]}",
                                fix="ids must be unique across the release files")
            seen[doc.id] = file
            out.append((doc, split))
    return out
