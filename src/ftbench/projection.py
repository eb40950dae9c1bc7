"""Answer projection: make each translated answer a span of the translated context it is asked about.

The translate stage translates every sentence and every argument span separately, and machine translation
words them differently: the span comes back as "N.A.T.O. forces" while the sentence says "NATO forces", or
"3 km north of Port Sudan" beside "three kilometres north of Port Sudan". An extractive QA pair whose answer
is not in its context cannot be answered, so every method's F1 would be capped by translation noise rather
than by fine-tuning. Each argument is therefore aligned to the most similar span of the English sentence its
Chinese span came from (never another sentence: a name repeated elsewhere is not the argument), and that span
becomes the answer; below ``data.projection_threshold`` the pair is dropped (or kept as translated).

Similarity is rapidfuzz's normalised Indel similarity (0–100) on normalised words, the better of the
in-order and the sorted-words score (reordered names and dates), after lower-casing, dropping articles,
joining dotted acronyms (N.A.T.O. → nato) and writing number words and unit names the short way
(three kilometres → 3 km). Candidate spans start and end on word boundaries, so a projected answer is
always whole words of the context.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from rapidfuzz import fuzz, process

#: data.answer_projection: align (project, drop below the threshold), keep (project, keep the translation
#: below it), drop (no projection: only answers found verbatim in their sentence are kept).
MODES = ("align", "keep", "drop")

# A dotted acronym (U.S., N.A.T.O.) keeps its final dot; any other word excludes trailing punctuation, so a
# span never ends with a sentence's full stop. Currency signs and % stay attached to their number.
_WORD = re.compile(r"(?:[A-Za-z]\.){2,}|[$€£¥]?[^\W_]+(?:['’./,:-][^\W_]+)*%?")
_ACRONYM = re.compile(r"(?:[a-z]\.){2,}[a-z]?")
_ARTICLES = frozenset({"a", "an", "the"})
_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen")
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety"
_NUMBERS = {w: i for i, w in enumerate(_SMALL.split())} | {w: 10 * i for i, w in enumerate(_TENS.split(), 2)}
_UNIT_NAMES = {"km": ("kilometre", "kilometres", "kilometer", "kilometers"),
               "m": ("metre", "metres", "meter", "meters"), "kg": ("kilogram", "kilograms"),
               "t": ("tonne", "tonnes", "ton", "tons"), "mi": ("mile", "miles")}
_UNIT = {name: short for short, names in _UNIT_NAMES.items() for name in names}


def _norm(word: str) -> str:
    """One word as it is compared: '' for an article."""
    w = word.lower().replace("’", "'")
    if _ACRONYM.fullmatch(w):
        return w.replace(".", "")
    if w in _ARTICLES:
        return ""
    parts = w.split("-")
    if all(p in _NUMBERS for p in parts):  # twenty-five -> 25
        return str(sum(_NUMBERS[p] for p in parts))
    return _UNIT.get(w, w)


def _words(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int, str]]:
    """(start, end, normalised form) of each word of ``text[start:end]``, offsets into ``text``."""
    end = len(text) if end is None else end
    return [(m.start(), m.end(), _norm(m.group())) for m in _WORD.finditer(text, start, end)]


def normalise(text: str) -> str:
    """The compared form of a phrase: normalised words joined by spaces."""
    return " ".join(n for _, _, n in _words(text) if n)


@dataclass(frozen=True)
class Match:
    start: int
    end: int
    score: float


def find_word(needle: str, text: str, start: int, end: int) -> int:
    """First index of ``needle`` in ``text[start:end]`` that starts and ends on a word boundary, else -1."""
    i = text.find(needle, start, end)
    while i >= 0:
        j = i + len(needle)
        if (i == 0 or not text[i - 1].isalnum()) and (j == len(text) or not text[j].isalnum()):
            return i
        i = text.find(needle, i + 1, end)
    return -1


def best_span(answer: str, text: str, start: int = 0, end: int | None = None) -> Match | None:
    """The span of ``text[start:end]`` most similar to ``answer``, on word boundaries; None if nothing compares.

    Candidates are runs of at most twice the answer's word count plus two (a translation rarely doubles a
    phrase) within one sentence, never ending on an article. Ties go to the span closer to the answer's raw
    wording ("the NATO forces" over "NATO forces" when the answer has the article), then to the shorter span.
    """
    query = normalise(answer)
    words = _words(text, start, end)
    if not query or not words:
        return None
    limit = 2 * len(query.split()) + 2
    # a span never runs over the end of a sentence (or clause ending in ;), even when the whole text is searched
    stop = [k > 0 and any(c in ".!?;" for c in text[words[k - 1][1]:words[k][0]]) for k in range(len(words))]
    spans, cands = [], []
    for i in range(len(words)):
        forms: list[str] = []
        for j in range(i, len(words)):
            if j > i and stop[j]:
                break
            if not words[j][2]:
                continue
            forms.append(words[j][2])
            if len(forms) > limit:
                break
            spans.append((words[i][0], words[j][1]))
            cands.append(" ".join(forms))
    if not cands:  # the window holds only articles
        return None
    scores = [max(a, b) for a, b in zip(process.cdist([query], cands, scorer=fuzz.ratio)[0],
                                        process.cdist([query], cands, scorer=fuzz.token_sort_ratio)[0], strict=True)]
    top = max(scores)
    tied = [spans[k] for k, s in enumerate(scores) if s == top]
    s, e = max(tied, key=lambda sp: (fuzz.ratio(answer.lower(), text[sp[0]:sp[1]].lower()), sp[0] - sp[1]))
    return Match(s, e, round(float(top), 1))


def _project(arg: dict, text: str, sentences: list | None, mode: str, threshold: float) -> dict:
    """The argument with its answer (``en``) and how it was found (``projection``)."""
    mt = arg["en"].strip()
    whole = (0, len(text))
    first_last = arg.get("sentence")
    window = (sentences[first_last[0]][0], sentences[first_last[1]][1]) if sentences and first_last else whole
    found = {"translation": mt}
    if find_word(mt, text, *window) >= 0:
        return {**arg, "en": mt, "projection": {**found, "status": "exact", "score": 100.0}}
    if mode == "drop":
        return {**arg, "projection": {**found, "status": "dropped", "reason": "not_exact", "score": None}}
    match = best_span(mt, text, *window)
    if match and match.score >= threshold:
        return {**arg, "en": text[match.start:match.end],
                "projection": {**found, "status": "projected", "score": match.score}}
    reason = "below_threshold"
    if window != whole:
        elsewhere = best_span(mt, text)
        if elsewhere and elsewhere.score >= threshold:
            reason = "only_in_other_sentence"  # the words are there, but not where the Chinese span was
    return {**arg, "projection": {**found, "status": "kept" if mode == "keep" else "dropped", "reason": reason,
                                  "score": match.score if match else 0.0}}


def project_document(doc: dict, mode: str, threshold: float) -> dict:
    """A copy of a translated document whose arguments carry ``projection``: status (exact, projected, kept,
    dropped), score, reason and the original ``translation``; ``en`` becomes the projected span.

    An argument found verbatim (on word boundaries) in its sentence is ``exact`` and left as it is. Documents
    without sentence offsets (``sentences``) are searched whole.
    """
    if mode not in MODES:
        raise ValueError(f"unknown projection mode {mode!r}")
    text, sentences = doc["text_en"], doc.get("sentences")
    return {**doc, "events": [{**ev, "arguments": [_project(a, text, sentences, mode, threshold)
                                                   for a in ev["arguments"]]} for ev in doc["events"]]}


STATUSES = {"exact": "exact", "projected": "projected", "kept": "kept_below_threshold", "dropped": "dropped"}


def _tally(entries: list[dict]) -> dict:
    c = Counter(e["status"] for e in entries)
    return {key: c[status] for status, key in STATUSES.items()}


def answer_report(entries: list[dict]) -> dict:
    """Counts of QA answers (see :func:`ftbench.alpaca.qa_pairs` ``audit``) by status, reason and role."""
    reasons = Counter(e["reason"] for e in entries if e["status"] == "dropped")
    roles = sorted({e["role"] for e in entries})
    return {**_tally(entries), "dropped_by_reason": dict(sorted(reasons.items())),
            "by_role": {r: _tally([e for e in entries if e["role"] == r]) for r in roles}}


def sample(entries: list[dict], n: int, seed: int) -> dict[str, list[dict]]:
    """Up to ``n`` seeded examples of each non-exact status, for a person to check the threshold by eye."""
    out = {}
    for status in ("projected", "kept", "dropped"):
        rows = [e for e in entries if e["status"] == status]
        picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
        out[STATUSES[status]] = [rows[i] for i in picked]
    return out
