"""zh→en translation of CMNEE documents: segmenting, and backends tried in order."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tqdm.auto import tqdm

from ftbench.cmnee import Document
from ftbench.io import ConfigError, DataError, read_json_file, write_json

_SENTENCE = re.compile(r"[^。！？；\n]+[。！？；]?")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of Chinese text, surrounding whitespace excluded.

    The translation memory is keyed by these segments, so the rule is part of the data format:
    a segment ends after 。！？； or a newline. The offsets let an argument be traced to its sentence.
    """
    spans = []
    for m in _SENTENCE.finditer(text):
        seg = m.group()
        if seg.strip():
            start = m.start() + len(seg) - len(seg.lstrip())
            spans.append((start, start + len(seg.strip())))
    return spans


def segment_zh(text: str) -> list[str]:
    """Split Chinese text into sentences, each keeping its closing punctuation (see :func:`sentence_spans`)."""
    return [text[s:e] for s, e in sentence_spans(text)]


class Backend:
    """A translator that may know only some segments: ``translate`` returns None for the rest."""

    name = "backend"

    def translate(self, segments: list[str]) -> list[str | None]:
        raise NotImplementedError


class MemoryBackend(Backend):
    """Exact lookup in a zh→en translation memory (a JSON object), as shipped with the fixture."""

    name = "memory"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"translation memory {self.path} not found",
                              fix="set translate.memory in params.yaml, or drop 'memory' from translate.backends")
        table = read_json_file(self.path, fix="the memory must be a UTF-8 JSON object {zh: en}")
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise DataError(f"{self.path}: expected a JSON object mapping Chinese strings to English strings",
                            fix="write the memory as {\"中文\": \"English\", ...}")
        self.table = {k.strip(): v for k, v in table.items()}

    def translate(self, segments: list[str]) -> list[str | None]:
        return [self.table.get(s.strip()) for s in segments]


class MarianBackend(Backend):
    """Hugging Face MarianMT (``Helsinki-NLP/opus-mt-zh-en`` by default), batched, on the GPU if present.

    Loaded lazily: the default run never touches it because the memory knows every segment.
    """

    name = "marian"

    def __init__(self, model: str, batch_size: int = 16):
        self.model_id = model
        self.batch_size = batch_size
        self._model = None
        self._tok = None

    def _load(self) -> None:
        import torch
        from transformers import MarianMTModel, MarianTokenizer

        try:
            self._tok = MarianTokenizer.from_pretrained(self.model_id)
            self._model = MarianMTModel.from_pretrained(self.model_id).eval()
        except OSError as e:
            raise ConfigError(
                f"translate.marian_model '{self.model_id}' could not be loaded ({str(e).splitlines()[0]})",
                fix="download it once with `huggingface-cli download Helsinki-NLP/opus-mt-zh-en` on a machine "
                    "with network, or point translate.marian_model at a local directory") from None
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model.to(self._device)

    def translate(self, segments: list[str]) -> list[str | None]:
        import torch

        if not segments:
            return []
        if self._model is None:
            self._load()
        # Sort by length so each batch pads little; restore the order at the end.
        order = sorted(range(len(segments)), key=lambda i: len(segments[i]))
        out: list[str | None] = [None] * len(segments)
        for start in tqdm(range(0, len(order), self.batch_size), desc="marian", unit="batch", disable=None):
            idx = order[start:start + self.batch_size]
            batch = self._tok([segments[i] for i in idx], return_tensors="pt", padding=True, truncation=True)
            with torch.no_grad():
                # An English rendering is rarely over twice the Chinese token count; the cap stops a
                # degenerate repetition loop from running to the model's maximum length.
                limit = 2 * batch["input_ids"].shape[1] + 10
                gen = self._model.generate(**batch.to(self._device), num_beams=1, max_new_tokens=limit)
            for i, text in zip(idx, self._tok.batch_decode(gen, skip_special_tokens=True), strict=True):
                out[i] = text.strip()
        return out


class CacheBackend(Backend):
    """Segments machine-translated by earlier runs (a DVC ``persist`` output), so that adding documents
    translates only the new segments. Only MarianMT output is cached (the memory costs nothing), and only
    for the model that produced it: changing ``translate.marian_model`` starts the cache over."""

    name = "cache"

    def __init__(self, path: str | Path, model_id: str):
        self.path, self.model_id = Path(path), model_id
        self.table: dict[str, str] = {}
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):  # absent or damaged: a cache is disposable, start over
            stored = None
        if isinstance(stored, dict) and stored.get("model") == model_id and isinstance(stored.get("table"), dict):
            self.table = stored["table"]

    def translate(self, segments: list[str]) -> list[str | None]:
        return [self.table.get(s) for s in segments]

    def update(self, table: dict[str, tuple[str, str]]) -> None:
        """Add what MarianMT translated this run and write the cache (also when nothing changed)."""
        self.table.update({zh: en for zh, (en, backend) in table.items() if backend == MarianBackend.name})
        write_json(self.path, {"model": self.model_id, "table": dict(sorted(self.table.items()))})


def make_backends(names: list[str], *, memory: str | None, marian_model: str, batch_size: int,
                  cache: CacheBackend | None = None) -> list[Backend]:
    """Backends in the order of ``translate.backends``; ``cache`` is consulted just before MarianMT."""
    backends: list[Backend] = []
    for name in names:
        if name == "memory":
            if memory:
                backends.append(MemoryBackend(memory))
        elif name == "marian":
            if cache is not None:
                backends.append(cache)
            backends.append(MarianBackend(marian_model, batch_size))
        else:
            raise ConfigError(f"params.yaml: unknown translation backend '{name}' in translate.backends",
                              fix="use memory and/or marian")
    if not backends:
        raise ConfigError("params.yaml: translate.backends is empty", fix="list at least one of memory, marian")
    return backends


def translate_segments(segments: list[str], backends: list[Backend]) -> dict[str, tuple[str, str]]:
    """Translate unique segments, trying backends in order. Returns {zh: (en, backend name)}.

    A segment no backend translates stops the run with an error naming it.
    """
    todo = sorted(set(segments))
    done: dict[str, tuple[str, str]] = {}
    for backend in backends:
        if not todo:
            break
        results = backend.translate(todo)
        missing = []
        for seg, en in zip(todo, results, strict=True):
            if en:
                done[seg] = (en, backend.name)
            else:
                missing.append(seg)
        todo = missing
    if todo:
        shown = "; ".join(repr(s) for s in todo[:3])
        raise DataError(f"{len(todo)} segment(s) could not be translated by {[b.name for b in backends]}: {shown}",
                        fix="add them to the translation memory, or add 'marian' to translate.backends")
    return done


def translate_document(doc: Document, table: dict[str, tuple[str, str]]) -> dict:
    """The English view of one document: sentences, triggers and arguments looked up in ``table``.

    Sentences are translated one by one and joined with a space, so ``sentences`` gives each English
    sentence's span of ``text_en`` and every argument names the sentences (``[first, last]``) its Chinese
    span lies in: answer projection (``ftbench.projection``) then looks for the argument only there.
    """
    zh_spans = sentence_spans(doc.text)
    en_spans, pos = [], 0
    for start, end in zh_spans:
        n = len(table[doc.text[start:end]][0])
        en_spans.append([pos, pos + n])
        pos += n + 1

    def sentences_of(span) -> list[int]:
        inside = [i for i, (s, e) in enumerate(zh_spans) if s < span.offset[1] and span.offset[0] < e]
        return [inside[0], inside[-1]] if inside else []

    return {
        "id": doc.id,
        "text_zh": doc.text,
        "text_en": " ".join(table[doc.text[s:e]][0] for s, e in zh_spans),
        "sentences": en_spans,
        "events": [
            {
                "event_type": ev.event_type,
                "trigger": {"zh": ev.trigger.text, "en": table[ev.trigger.text.strip()][0]},
                "arguments": [{"role": a.role, "zh": a.text, "en": table[a.text.strip()][0],
                               "sentence": sentences_of(a)} for a in ev.arguments],
            }
            for ev in doc.events
        ],
    }


def document_segments(doc: Document) -> list[str]:
    segs = segment_zh(doc.text)
    for ev in doc.events:
        segs.append(ev.trigger.text.strip())
        segs.extend(a.text.strip() for a in ev.arguments)
    return segs
